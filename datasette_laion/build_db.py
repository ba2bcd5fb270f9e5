"""Writing the SQLite file: tables, the images rows in rowid order, indexes,
the full-text index (built in a side database by a worker process, then
copied in), the names counts, the facts tables and the inspect data.

Plain functions of a connection and values; the build (build.py) calls them
in order and owns the connection, the work directory and the signals.
"""
import datetime
import hashlib
import json
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa

from . import sql, stats
from .functions import fts_phrase
from .partition import read_bucket, release_memory
from .source import CORE_COLUMNS
from .version import __version__


def connect(path):
    """The build's connection to its (temporary) database file."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(sql.BUILD_PRAGMAS)
    return conn


def create_tables(conn, extras):
    """The domain tables and images (with the extra columns), empty."""
    conn.execute(f"pragma page_size = {sql.PAGE_SIZE}")
    extra_sql = "".join(f",\n  [{name}] {kind.lower()}" for name, kind in extras.items())
    conn.execute(sql.CREATE_REGISTERED_DOMAIN)
    conn.execute(sql.CREATE_DOMAIN)
    conn.execute(sql.CREATE_IMAGES.format(extra_columns=extra_sql))
    # Rows arrive in this index's order, so keeping it up costs little.
    conn.execute(sql.CREATE_AESTHETIC_INDEX)


def insert_domains(conn, domain_rows, registered_rows):
    conn.executemany(sql.INSERT_REGISTERED_DOMAIN, registered_rows)
    conn.executemany(sql.INSERT_DOMAIN, domain_rows)


def insert_images(conn, buckets, remaps, extras, batch_size, progress, check):
    """Every bucket's rows into images, rowid = rank. The next bucket is read
    and sorted (Arrow, without the GIL) on a thread while one is inserted;
    ``check()`` is called between chunks (it may raise KeyboardInterrupt:
    build_workers.Signals)."""
    columns = CORE_COLUMNS + list(extras) + ["url_hash", "domain_id"]
    insert = "insert into images (rowid, {}) values (?, {})".format(
        ", ".join(f"[{c}]" for c in columns), ", ".join("?" for _ in columns)
    )
    with ThreadPoolExecutor(1) as reader:
        def read(bucket):
            return read_bucket(bucket[0], remaps=remaps)

        pending = reader.submit(read, buckets[0]) if buckets else None
        for index, (_parts, first) in enumerate(buckets):
            table = pending.result()
            pending = reader.submit(read, buckets[index + 1]) if index + 1 < len(buckets) else None
            for start in range(0, table.num_rows, batch_size):
                chunk = table.slice(start, batch_size)
                values = [chunk.column(c).to_pylist() for c in columns[:-1]]
                values.append([i or None for i in chunk.column("domain_id").to_pylist()])
                rowid = first + start
                conn.executemany(insert, zip(range(rowid, rowid + chunk.num_rows), *values))
                progress(chunk.num_rows)
                check()
            del table
            release_memory(collect=False)


def create_indexes(conn, progress):
    conn.executescript(sql.INDEX_PRAGMAS)
    for _, statement in sql.CREATE_INDEXES:
        conn.execute(statement)
        progress(1)


def copy_fts(conn, db_path, side_path):
    """Copy the full-text index built in ``side_path`` into images_fts;
    returns a new connection (the FTS5 module cached the empty index)."""
    conn.execute(sql.CREATE_FTS)
    conn.execute("attach database ? as side", [str(side_path)])
    conn.execute("begin")
    for table in sql.FTS_SHADOW_TABLES:
        conn.execute(f"delete from main.[{table}]")
        conn.execute(f"insert into main.[{table}] select * from side.[{table}]")
    conn.execute("commit")
    conn.execute("detach database side")
    side_path.unlink()
    conn.close()
    return connect(db_path)


def count_names(conn, names, progress):
    """The names tables, each name with its image count (an FTS5 phrase):
    table -> names in it."""
    counted = {}
    conn.execute("begin")
    for table, (fields, rows) in names.items():
        others = [f for f in fields if f and f not in ("name", "id", "image_counts")]
        conn.execute(sql.CREATE_NAMES.format(table=table, columns="".join(f"\n  [{f}] text," for f in others)))
        insert = "insert into [{}] (name{}, image_counts) values (?{}, ?)".format(
            table, "".join(f", [{f}]" for f in others), "".join(", ?" for _ in others)
        )
        for row in rows:
            count = conn.execute(sql.COUNT_PHRASE, [fts_phrase(row["name"])]).fetchone()[0]
            conn.execute(insert, [row["name"]] + [row.get(f) for f in others] + [count])
            progress(1)
        conn.execute(f"create index [{table}_image_counts] on [{table}](image_counts)")
        counted[table] = len(rows)
    conn.execute("commit")
    return counted


def build_figures(conn):
    """build_info figures, counted through the indexes: milliseconds even at 12M rows."""
    return {key: conn.execute(query).fetchone()[0] for key, query in sql.BUILD_FIGURES.items()}


def insert_facts(conn, facts):
    conn.executemany("insert into build_info (key, value) values (?, ?)", list(facts.items()))


def finish_tables(conn, state, checksums, rows):
    """Statistics tables, the planner's statistics; the exact count of every
    table (for the inspect data)."""
    stats.write_stats(conn, state, checksums)
    conn.execute("pragma analysis_limit = 1000")
    conn.execute("analyze")
    counts = {}
    for (table,) in conn.execute(sql.TABLE_NAMES).fetchall():
        if table == "images_fts":
            counts[table] = rows  # counting it would scan images
        else:
            counts[table] = conn.execute(f"select count(*) from [{table}]").fetchone()[0]
    return counts


def other_inspect_entries(path, name):
    """The entries of an existing inspect file for databases other than
    ``name`` whose files are still there (several databases built into one
    folder share its inspect.json); {} when there is none or it is unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    def there(entry):
        file = Path(str(entry.get("file") or ""))
        return bool(entry.get("file")) and (file.is_file() or (Path(path).parent / file.name).is_file())

    return {key: entry for key, entry in data.items() if key != name and isinstance(entry, dict) and there(entry)}


def write_inspect(fd, data):
    """The inspect data into the new file ``fd`` (tempfile.mkstemp's), synced."""
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # as a plain open() would, not mkstemp's 0600
    with os.fdopen(fd, "w") as fp:
        json.dump(data, fp, indent=2)
        fp.flush()
        os.fsync(fp.fileno())


def build_fts(spec, progress=None):
    """Build the full-text index of the captions in its own database file.

    Runs in a worker process, alongside the load, on the second core. It
    reads the same spilled buckets as the load and sorts them the same way, so
    rowid i here is rowid i in images. The index is contentless but otherwise
    identical to the external-content one the main database declares; the
    build copies its segments over.
    """
    batch_size = spec["batch_size"]
    conn = sqlite3.connect(spec["db"], isolation_level=None)
    try:
        conn.executescript(sql.BUILD_PRAGMAS)
        conn.executescript(sql.FTS_PRAGMAS)
        conn.execute(sql.CREATE_FTS_SIDE)
        # Merging segments as they are written would be redone by 'optimize';
        # a bigger in-memory hash (default 1 MB) writes fewer, larger segments.
        conn.execute("insert into images_fts(images_fts, rank) values ('automerge', 0)")
        conn.execute(f"insert into images_fts(images_fts, rank) values ('hashsize', {sql.FTS_HASH_SIZE})")
        conn.execute("begin")
        for parts, first in spec["buckets"]:
            texts = read_bucket(parts, ["text"]).column("text")
            pa.default_memory_pool().release_unused()
            for start in range(0, len(texts), batch_size):
                chunk = texts.slice(start, batch_size).to_pylist()
                conn.executemany(
                    "insert into images_fts (rowid, text) values (?, ?)",
                    zip(range(first + start, first + start + len(chunk)), chunk),
                )
                if progress:
                    progress(len(chunk))
        conn.execute("commit")
        # One segment: smaller, and every query reads a single b-tree.
        conn.execute("insert into images_fts(images_fts) values ('optimize')")
    finally:
        conn.close()
    return {}



def write_info_tables(conn, sources, loaded, exclusions, facts):
    conn.execute("begin")
    conn.execute(sql.CREATE_SOURCE_FILES)
    conn.executemany(
        "insert into source_files (name, rows, loaded, bytes) values (?, ?, ?, ?)",
        [(s.path.name, s.num_rows, n, s.num_bytes) for s, n in zip(sources, loaded)],
    )
    conn.execute(sql.CREATE_EXCLUSIONS)
    conn.executemany(
        "insert into exclusions (name, urls, hashes, rows_excluded) values (?, ?, ?, ?)",
        [(e["name"], e["urls"], e["hashes"], e["rows_excluded"]) for e in exclusions.summary()],
    )
    conn.execute(sql.CREATE_BUILD_INFO)
    info = {
        "datasette_laion_version": __version__,
        "built_at": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "sqlite_version": sqlite3.sqlite_version,
        "pyarrow_version": pa.__version__,
        **facts,
    }
    conn.executemany("insert into build_info (key, value) values (?, ?)", list(info.items()))
    conn.execute("commit")


def sha256(path, update=None, block=4 * 1024 * 1024):
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        while True:
            data = fp.read(block)
            if not data:
                break
            digest.update(data)
            if update:
                update(len(data))
    return digest.hexdigest()


def sqlite_temp_dir():
    """Where SQLite puts its temporary files on Unix (its own search order)."""
    for candidate in (os.environ.get("SQLITE_TMPDIR"), os.environ.get("TMPDIR"), "/var/tmp", "/usr/tmp", "/tmp"):
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return "."


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
