"""Keep every request to a big table cheap, and every bad request a 400.

Datasette answers any table request it can express in SQL: a sort on any
column, a filter on any column, facets, counts. On the 12M-row images table
most of these read every row (seconds each, or a timeout after burning the
time limit). The guard looks at a table request before Datasette does and
either passes it on, passes it on rewritten to something an index answers
(with a note for the page), or refuses it with a 400 that says what to do
instead. It also refuses, for every table, the malformed parameters on which
Datasette 0.65 answers HTTP 500 (``_sort_desc=nope``, ``x__in=[``,
``_through=junk``, ``_facet={``: ``params.py``).

The decisions are pure functions of a ``Table`` (what the database says about
the table: columns, indexes, row count) and the query string; the ASGI glue
that gathers the ``Table`` and answers is at the end of the module, with the
SQLite limits put on every connection. The rules for a guarded table:

* sort by a column that leads an index, or the rowid/primary key; descending
  only in the table's own order (Datasette's next-page SQL for a descending
  sort, ``col < :v or col is null or ...``, cannot seek an index);
* filter on such columns only, with operators an index answers
  (=, >, >=, <, <=, isnull, notnull, notblank), one column at a time, sorted
  by that column or, for an exact value, in the table's own order (its index
  gives the rows in rowid order);
* a filtered page in the table's own order that no index gives in that order
  (a range, several columns, an unindexed score) goes to the search form's
  browsing (search.run_browse, bounded scans) by a redirect, for the images
  table; elsewhere it is read in the filtered column's order, with a note;
* no count of a filtered page (``_nocount=1``, and the page says so), no
  facets, no ``_where``, ``_through``, column search or CSV streaming.

A table is guarded when it is listed in ``guarded_tables`` (with its
full-text index tables), or has at least ``big_table_rows`` rows, or its row
count is unknown.
"""
import re
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import parse_qsl, urlencode

from .compat import FILTER_LOOKUPS as LOOKUPS
from .compat import urlsafe_components
from .params import Refusal, bad, check_common, check_json_params, clip, first, is_filter, listing, split_filter

# Datasette's filter operators (col__op=value): LOOKUPS; those an index answers:
INDEX_LOOKUPS = ("exact", "gt", "gte", "lt", "lte", "isnull", "notnull", "notblank")
# An exact value's rows come from its index in rowid (primary key) order.
EQUALITY_LOOKUPS = frozenset({"exact", "isnull"})
FTS_SHADOW_SUFFIXES = ("_data", "_idx", "_docsize", "_content", "_config")
INT64 = re.compile(r"-?\d{1,18}")


@dataclass(frozen=True)
class Table:
    """What the guard needs to know about a table."""

    name: str
    columns: tuple
    primary_keys: tuple = ()
    indexed: frozenset = frozenset()  # columns that lead an index
    count: Optional[int] = None
    guarded: bool = False
    is_view: bool = False
    fts: bool = False  # Datasette's table search applies to it
    sortable: Optional[frozenset] = None  # metadata's sortable_columns
    default_sort: Optional[tuple] = None  # metadata's (column, descending)
    # A column whose descending order is the rowid order (images, stored best
    # first: aesthetic); sorting by it descending is the table's own order.
    natural: Optional[str] = None
    # Whether the search form's browsing (search_view) answers its filtered
    # pages in the table's own order (images).
    browse: bool = False

    @property
    def rowid(self):
        return not self.primary_keys and not self.is_view

    @property
    def key(self):
        """The column of the table's own order: rowid, or its primary key."""
        if self.rowid:
            return "rowid"
        return self.primary_keys[0] if self.primary_keys else None

    @property
    def filterable(self):
        return set(self.columns) | ({"rowid"} if self.rowid else set())

    @property
    def sort_columns(self):
        """The columns Datasette itself lets you sort by."""
        found = set(self.sortable) if self.sortable is not None else set(self.columns)
        return found | ({"rowid"} if self.rowid else set())

    @property
    def cheap_columns(self):
        """Columns an index answers, in the table's column order."""
        cheap = set(self.indexed) | ({self.key} if self.key else set())
        cheap &= self.sort_columns | ({self.key} if self.key else set())
        ordered = [c for c in ([self.key] if self.rowid else []) + list(self.columns) if c in cheap]
        return list(dict.fromkeys(ordered))


@dataclass
class Decision:
    """What to do with a request: refuse it (status 400 with a title and a
    message), redirect it (302, to the same path with ``query``), or pass it
    on, as ``query`` (a rewritten query string) when set, with ``notes`` for
    the page. ``sortable`` and ``filter_columns`` are what a guarded table's
    page may offer."""

    status: int = 200
    title: str = ""
    message: str = ""
    query: Optional[str] = None
    notes: list = field(default_factory=list)
    sortable: Optional[list] = None
    filter_columns: Optional[list] = None

    @property
    def refused(self):
        return self.status >= 400


def _unavailable(message):
    return Refusal("Not available on this table", message)


def _sort_of(table, pairs):
    """(column, descending, explicit) of the requested order, or None."""
    sort, sort_desc = first(pairs, "_sort") or None, first(pairs, "_sort_desc") or None
    if sort and sort_desc:
        raise bad("use either _sort or _sort_desc, not both")
    if sort or sort_desc:
        return (sort or sort_desc, bool(sort_desc), True)
    if table.default_sort:
        return (*table.default_sort, False)
    return None


def _filters(table, pairs):
    """[(key, column, lookup, value)] of the filter parameters; raises
    Refusal for a column or an operator that does not exist."""
    found = []
    for key, value in pairs:
        if not is_filter(key):
            continue
        column, lookup = split_filter(key)
        if lookup not in LOOKUPS:
            raise bad(f"{clip(key)}: no such filter; use column__op with op one of {', '.join(sorted(LOOKUPS))}")
        if column not in table.filterable:
            raise bad(f"{table.name} has no column {clip(column)!r}; columns: {listing(table.columns)}")
        found.append((key, column, lookup, value))
    return found


def _is_natural(table, sort):
    """Whether an order is the table's own order: (True, descending) or (False, None)."""
    if sort is None:
        return True, False
    column, descending, _ = sort
    if column == table.key:
        return True, descending
    if table.natural and column == table.natural:
        # rowid order is this column descending, ties by rowid: exactly the
        # order Datasette gives `_sort_desc=natural`.
        return (True, False) if descending else (False, None)
    return False, None


def _check_next(table, pairs, sort):
    token = first(pairs, "_next")
    if not token:
        return
    keys = 1 if table.rowid else max(len(table.primary_keys), 1)
    parts = urlsafe_components(token)
    # sorted pages' tokens are "value,key": Datasette reads them so
    expected = keys + (1 if sort is not None else 0)
    if len(parts) != expected or (table.rowid and not INT64.fullmatch(parts[-1])):
        raise bad(f"_next: {clip(token)!r} is not a page token of this page; follow its Next page link")


def decide(table, fmt, query):
    """The Decision for a request to ``table`` (format None, "json", "csv")
    with the given query: a query string, or its (name, value) pairs."""
    pairs = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else list(query)
    try:
        return _decide(table, fmt, pairs)
    except Refusal as ex:
        return Decision(status=400, title=ex.title, message=ex.message)


def _decide(table, fmt, pairs):
    check_common(pairs)
    check_json_params(pairs)
    original = list(pairs)
    # A blank search (Datasette's own filter form always sends one) is no
    # search; Datasette would run it, and FTS5 refuses an empty query.
    if table.fts and any(k == "_search" and not v.strip() for k, v in pairs):
        pairs = [(k, v) for k, v in pairs if not (k == "_search" and not v.strip())]
        if first(pairs, "_search") is None:
            pairs = [(k, v) for k, v in pairs if k != "_searchmode"]
    sort = _sort_of(table, pairs)
    if sort and sort[2] and sort[0] not in table.sort_columns:
        offered = table.cheap_columns if table.guarded else sorted(table.sort_columns)
        raise bad(f"cannot sort {table.name} by {clip(sort[0])!r}: sort by one of {listing(offered)}")
    if table.is_view and first(pairs, "_next") and not first(pairs, "_next").isdigit():
        raise bad("_next: a page token is a number for this view; follow its Next page link")
    filters = _filters(table, pairs)
    if not table.guarded:
        if not table.is_view:
            _check_next(table, pairs, sort)
        return Decision(query=urlencode(pairs) if pairs != original else None)
    _refuse_scans(table, fmt, pairs, sort)
    browse = _browse_redirect(table, fmt, pairs, sort, filters)
    if browse is not None:
        return Decision(status=302, query=browse)
    _refuse_filters(table, sort, filters)
    pairs, sort, notes = _cheap_order(table, pairs, sort, filters)
    if (filters or table.count is None) and first(pairs, "_nocount") != "1":
        pairs = [(k, v) for k, v in pairs if k != "_nocount"] + [("_nocount", "1")]
    if filters:
        notes.append(f"Not counted: counting the rows of a filter could read most of the {_rows(table)} of {table.name}.")
    _check_next(table, pairs, sort)
    return Decision(
        query=urlencode(pairs) if pairs != original else None,
        notes=notes,
        sortable=_offered_sorts(table, filters, sort),
        filter_columns=table.cheap_columns,
    )


def _descending_ok(table, column):
    """Descending order only where its next pages come from an index seek:
    the table's own order (rowid, primary key) and the natural column.
    Datasette's next-page SQL for a descending sort on any other column
    (``col < :v or col is null or ...``) reads most of the table."""
    return column in (table.key, table.natural)


def _offered_sorts(table, filters, sort):
    """The sorts a page may link to. A column's header links to its
    ascending order, and the sorted column's header to its descending
    order: only where that is cheap too."""
    if not filters:
        offered = table.cheap_columns
    else:
        column = filters[0][1]
        keeps_order = column in (table.key, table.natural) or {f[2] for f in filters} <= EQUALITY_LOOKUPS
        offered = [c for c in dict.fromkeys([column, table.key if keeps_order else None]) if c]
    current = sort[0] if sort and not sort[1] else None
    return [c for c in offered if c != current or _descending_ok(table, c)]


def _browse_redirect(table, fmt, pairs, sort, filters):
    """The query string of the search form's browsing (search_view, `_view=
    table`) for a filtered request in the table's own order that Datasette
    could only answer by reading many rows, or None. The browsing answers
    those filters with indexes and bounded scans, best first."""
    if not (table.browse and fmt in (None, "json") and filters):
        return None
    natural, descending = _is_natural(table, sort)
    if not natural or descending:
        return None
    from .search_request import FILTER_COLUMNS, OPERATORS

    if not all(c in FILTER_COLUMNS and op in OPERATORS for _, c, op, _ in filters):
        return None
    columns = {c for _, c, _, _ in filters}
    if len(columns) == 1 and {op for _, _, op, _ in filters} <= EQUALITY_LOOKUPS and columns <= set(table.cheap_columns):
        return None  # one exact value: its index gives the rows in the table's order
    out = []
    for k, v in pairs:
        if k in ("_sort", "_sort_desc", "_view", "_nocount"):
            continue
        if k == "_next" and "," in v:
            v = v.rsplit(",", 1)[1]
        out.append((k, v))
    return urlencode(out + [("_view", "table")])


def _rows(table):
    return f"{table.count:,} rows" if table.count is not None else "rows"


def _refuse_scans(table, fmt, pairs, sort):
    """Raise Refusal for what a guarded table cannot answer from an index."""
    cheap = table.cheap_columns
    size = _rows(table)
    keys = {k for k, _ in pairs}
    if table.fts and any(k == "_search" or k.startswith("_search_") for k in keys):
        raise _unavailable(
            "Search the images on their HTML and JSON pages (images?_search=words, images.json?_search=words), "
            "with one search box for the captions"
            + ("" if table.natural else f": {table.name} offers no search of its own")
        )
    for key in sorted(keys & {"_fts_table", "_fts_pk", "_where", "_through"}):
        hint = ": write the query in the SQL editor" if key == "_where" else ""
        raise _unavailable(f"{key} is not available on {table.name}{hint}")
    if any(k.startswith("_facet") and k != "_facet_size" for k in keys):
        raise _unavailable(
            f"Facets count all {size} of {table.name}: not offered here. Images per domain are in the domain "
            "table (sorted by image_counts), score distributions on the statistics page (/-/laion/stats)"
        )
    if fmt == "csv" and first(pairs, "_stream"):
        raise _unavailable(
            f"Streaming all {size} of {table.name} as CSV is not offered: a CSV page holds up to 1,000 rows "
            "(_size=max); follow the next page with _next"
        )
    if sort and sort[0] not in cheap:
        raise _unavailable(
            f"Sorting {table.name} by {sort[0]} would sort all {size}: sort by one of {', '.join(cheap)}"
            + (", or search" if table.fts or table.natural else "")
        )
    if sort and sort[1] and sort[2] and not _descending_ok(table, sort[0]):
        own = f"best first or worst first (_sort_desc={table.key})" if table.natural else f"_sort_desc={table.key}"
        raise _unavailable(
            f"Descending order of {sort[0]} is not offered on {table.name}: its next pages would read most of the "
            f"{size}. Sort by {sort[0]} ascending (_sort={sort[0]}), from a starting value with a filter "
            f"({sort[0]}__gte=...), or use {own}"
        )


def _refuse_filters(table, sort, filters):
    cheap = table.cheap_columns
    size = _rows(table)
    gallery = ". The gallery combines filters on any score: images?_view=gallery&aesthetic__gte=7&width__gt=1000" if table.browse else ""
    for key, column, lookup, _ in filters:
        if column not in cheap or lookup not in INDEX_LOOKUPS:
            raise _unavailable(
                f"The filter {clip(key)} would read all {size} of {table.name}: filter on {', '.join(cheap)} "
                f"with {', '.join('__' + op for op in INDEX_LOOKUPS)}"
                + (". To find words in captions, search them (_search=words)" if column == "text" else "")
                + (". To look up an image by its address, use the image_by_url query" if column == "url" else "")
                + gallery
            )
    columns = list(dict.fromkeys(column for _, column, _, _ in filters))
    if len(columns) > 1:
        raise _unavailable(
            f"Filters on several columns at once ({', '.join(columns)}) can read millions of rows of "
            f"{table.name} in this order: filter on one column" + gallery
        )


def _cheap_order(table, pairs, sort, filters):
    """(pairs, sort, notes): the order a page is read in, from one index.
    Raises Refusal for a sort that index cannot give."""
    notes = []
    natural, descending = _is_natural(table, sort)
    if not filters:
        if natural and sort and sort[0] == table.natural and first(pairs, "_next"):
            # best first asked as aesthetic desc: its next pages in rowid order
            pairs, sort = _unsort(table, pairs)
        return pairs, sort, notes
    column = filters[0][1]
    lookups = {lookup for _, _, lookup, _ in filters}
    if not natural:
        if sort[0] != column:
            raise _unavailable(
                f"With a filter on {column}, sort by {column} or leave the sort out: sorting the rows of a filter "
                f"by another column ({sort[0]}) can read millions of rows"
            )
        return pairs, sort, notes
    if lookups <= EQUALITY_LOOKUPS or column == table.key:
        # an exact value's rows come from its index in the table's own order
        if sort and sort[0] not in (table.key,):  # e.g. best first asked as aesthetic desc
            pairs, sort = _unsort(table, pairs)
        return pairs, sort, notes
    pairs, sort = _resort(pairs, column, False), (column, False, True)
    if column != table.natural or not descending:
        notes.append(f"Sorted by {column}: in the table's own order, a range of {column} could read most of its {_rows(table)}.")
    return pairs, sort, notes


def _resort(pairs, column, descending):
    """pairs sorted by column (a token of the old order no longer fits)."""
    out = [(k, v) for k, v in pairs if k not in ("_sort", "_sort_desc")]
    out.append(("_sort_desc" if descending else "_sort", column))
    return out


def _unsort(table, pairs):
    """(pairs, sort) in the table's own order; a token "value,key" keeps its key."""
    out = []
    for k, v in pairs:
        if k in ("_sort", "_sort_desc"):
            continue
        if k == "_next" and "," in v:
            key = v.rsplit(",", 1)[1]
            v = f"{key},{key}" if table.default_sort else key
        out.append((k, v))
    if table.default_sort:  # the metadata's default order is not the table's own
        out.append(("_sort", table.key))
        return out, (table.key, False, True)
    return out, None


def template_vars(datasette, request, view_name):
    """Template variables for a table page the guard passed: its notes, and
    for a guarded table the sorts and filter columns it may offer (no facets,
    no CSV streaming)."""
    guard = request.scope.get("laion_guard") if request is not None and view_name == "table" else None
    if not guard:
        return {}
    table, decision = guard["table"], guard["decision"]
    ascending_only = [c for c in table.cheap_columns if not _descending_ok(table, c)] if table.guarded else []
    found = {"laion_guard": {"notes": decision.notes, "guarded": table.guarded, "sortable": decision.sortable,
                             "ascending_only": ascending_only}}
    if table.guarded:
        found["filter_columns"] = decision.filter_columns
        found["settings"] = {**datasette.settings_dict(), "allow_csv_stream": False}
    return found
