"""What the guard needs to know about a table of a LAION database
(``guard.Table``), read from the database once and kept (it is immutable)."""

from . import sites
from .compat import table_counts_known
from .guard import FTS_SHADOW_SUFFIXES, Table


async def describe(datasette, db, name, config):
    """The Table for ``name`` in ``db``, or None when it is no table or view;
    kept for the life of an immutable database."""
    cache = db.__dict__.setdefault("_laion_guard_tables", {})
    if name in cache and not db.is_mutable:
        return cache[name]
    is_view = bool(await db.get_view_definition(name))
    if not is_view and not await db.table_exists(name):
        return None
    table_metadata = datasette.table_metadata(db.name, name) or {}
    guarded_names = await _guarded_names(db, config)

    def read(conn):
        indexed = set()
        for index in conn.execute(f"pragma index_list([{name}])").fetchall():
            first = conn.execute(f"pragma index_info([{index[1]}])").fetchone()
            if first and first[2]:
                indexed.add(first[2])
        return indexed

    indexed = await db.execute_fn(read)
    columns = tuple(await db.table_columns(name))
    pks = tuple(await db.primary_keys(name)) if not is_view else ()
    counts = table_counts_known(db)
    if counts is None:
        counts = await db.table_counts(limit=100)
    count = counts.get(name) if counts else None
    fts = bool(not is_view and (table_metadata.get("fts_table") or await db.fts_table(name)))
    sort = table_metadata.get("sort")
    sort_desc = table_metadata.get("sort_desc")
    site = sites.get(datasette, db.name)
    # the column rowids run by, highest first (build_info order); images only
    natural = site.best_first if site and name == "images" and site.best_first in columns else None
    browse = natural is not None  # search_view's browsing
    big = not is_view and (count is None or count >= config["big_table_rows"])
    table = Table(
        name=name,
        columns=columns,
        primary_keys=pks,
        indexed=frozenset(indexed | set(pks[:1])),
        count=count,
        guarded=name in guarded_names or big,
        is_view=is_view,
        fts=fts,
        sortable=frozenset(table_metadata["sortable_columns"]) if "sortable_columns" in table_metadata else None,
        default_sort=(sort, False) if sort else ((sort_desc, True) if sort_desc else None),
        natural=natural,
        browse=browse,
    )
    cache[name] = table
    return table


async def _guarded_names(db, config):
    names = set(config["guarded_tables"])
    for name in config["guarded_tables"]:
        if await db.table_exists(name):
            fts = await db.fts_table(name)
            if fts:
                names.add(fts)
                names.update(fts + suffix for suffix in FTS_SHADOW_SUFFIXES)
    return names

