"""One trip to a SQL thread: a search (or a page's queries) runs whole in
one ``Database.execute_fn()`` call, each query with Datasette's time limit."""
import sqlite3

from .compat import QueryInterrupted, Results, sqlite_timelimit


class Connection:
    """Datasette's ``Database.execute()``, as the search uses it, on one
    sqlite3 connection: each query with Datasette's time limit (or a
    shorter one), an interrupted one raised as QueryInterrupted. A search
    runs whole in one ``Database.execute_fn()`` call (``in_one_trip``): one
    trip to a SQL thread instead of one per query; under load every trip
    waits for the busy event loop to take up its answer."""

    def __init__(self, conn, database, time_limit_ms):
        self.conn = conn
        self.database = database  # Datasette's Database: where the kept counts live
        self.time_limit_ms = time_limit_ms

    def execute(self, sql, params=None, custom_time_limit=None):
        limit = self.time_limit_ms
        if custom_time_limit and custom_time_limit < limit:
            limit = custom_time_limit
        with sqlite_timelimit(self.conn, limit):
            try:
                cursor = self.conn.cursor()
                cursor.execute(sql, params if params is not None else {})
                rows = cursor.fetchall()
            except (sqlite3.OperationalError, sqlite3.DatabaseError) as ex:
                if ex.args == ("interrupted",):
                    raise QueryInterrupted(ex, sql, params) from None
                raise
        return Results(rows, False, cursor.description)


async def in_one_trip(datasette, database, work, time_limit_ms=None):
    """``work(connection)`` (a Connection) run in one trip to a SQL thread
    of ``database`` (Datasette's Database); returns what it returns. Each
    query has Datasette's time limit, or ``time_limit_ms`` when lower
    (``_timelimit``)."""
    setting = datasette.setting("sql_time_limit_ms")
    time_limit_ms = min(setting, time_limit_ms) if time_limit_ms else setting
    return await database.execute_fn(lambda conn: work(Connection(conn, database, time_limit_ms)))


def stored_best_first(conn):
    """Whether the build stored rows best first; asked once per (immutable) database."""
    database = conn.database
    found = getattr(database, "_laion_best_first", None)
    if found is None:
        try:
            rows = conn.execute("select value from build_info where key = 'order'").rows
        except sqlite3.Error:  # no build_info: not a database this project built
            rows = []
        found = bool(rows) and rows[0][0] == "aesthetic desc"
        if not database.is_mutable:
            database._laion_best_first = found
    return found


