"""SQLite limits on every connection to the LAION database."""
import re
import sqlite3
import threading

# SQLite's own limits on every connection of the site: what one query can
# build in memory (randomblob(1e9), a group_concat of every caption) and how
# long an SQL text may be. The longest value in the data is a few KB.
SQLITE_LIMITS = {
    "SQLITE_LIMIT_LENGTH": 1_000_000,  # bytes of any one string, blob or row
    "SQLITE_LIMIT_SQL_LENGTH": 100_000,  # characters of SQL
    "SQLITE_LIMIT_LIKE_PATTERN_LENGTH": 10_000,
}


def limit_connection(conn):
    """Apply SQLITE_LIMITS to a connection (Python 3.11+ has setlimit), and
    put printf()/format() behind a check: SQLite's "%.Nc" repeats a character
    N times in one step, seconds that no time limit interrupts."""
    if hasattr(conn, "setlimit"):
        for name, value in SQLITE_LIMITS.items():
            conn.setlimit(getattr(sqlite3, name), value)
    conn.create_function("printf", -1, printf)
    conn.create_function("format", -1, printf)


# A printf conversion: flags, width, precision, size, type.
PRINTF_RE = re.compile(r"%[-+ 0#!,]*(\*|\d+)?(?:\.(\*|\d*))?(?:ll|l)?([a-zA-Z%]|$)")
_printf_local = threading.local()


def printf(*args):
    """SQLite's printf(), or NULL (as SQLite gives for a result over its
    length limit) when a %c conversion would repeat more than that."""
    if not args:
        return None
    template, values = args[0], list(args[1:])
    if isinstance(template, str) and "c" in template:
        for match in PRINTF_RE.finditer(template):
            width, precision, kind = match.groups()
            if kind == "%":
                continue
            if width == "*":
                values = values[1:]
            if precision == "*":
                precision, values = (values[0] if values else 0), values[1:]
            values = values[1:]
            try:
                repeat = abs(int(precision or 0))
            except (TypeError, ValueError):
                repeat = 0
            if kind == "c" and repeat > SQLITE_LIMITS["SQLITE_LIMIT_LENGTH"]:
                return None
    conn = getattr(_printf_local, "conn", None)
    if conn is None:
        conn = _printf_local.conn = sqlite3.connect(":memory:", check_same_thread=False)
        if hasattr(conn, "setlimit"):
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, SQLITE_LIMITS["SQLITE_LIMIT_LENGTH"])
    try:
        return conn.execute(f"select printf({', '.join('?' * len(args))})", args).fetchone()[0]
    except sqlite3.Error:
        return None
