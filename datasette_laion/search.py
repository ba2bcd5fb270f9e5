"""Search that stays fast for every word at 12M rows.

Datasette's own table search runs ``rowid in (select rowid from images_fts
where ... match ...) order by ...``: its cost grows with the number of
matches (1.2 s for "dog", a timeout for the commonest words). Here the search
is driven from the FTS table in rowid order, which is "best first" because the
build stores rows by descending aesthetic score, with keyset paging on rowid:
every page reads only the rows it shows. Counts are exact up to a cap and
shown as "N+" beyond it; relevance (bm25) and other sorts are used when the
match count makes them cheap, and the page says so when it falls back.

This module holds the request parsing and SQL; ``search_view`` renders it.
A search runs whole in one trip to a SQL thread (``in_one_trip``).
"""
import collections
import re
import sqlite3
import time
from dataclasses import dataclass, field

from .compat import QueryInterrupted, Results, sqlite_timelimit

COUNT_CAP = 10_000  # exact counts up to this many matches
FACET_CAP = 10_000  # facets count the first this many matches, best first
RESORT_CAP = 10_000  # relevance and column sorts up to this many matches
# A filtered search's count checks at most this many matches against the
# filters (~4 us each at 12M rows): exact when the search has no more, else
# "N+" (at least N) with a note.
FILTER_SCAN_CAP = 2_000
DOMAIN_SCAN_MAX = 20_000  # domains this small are searched from the domain side
COUNT_TIME_LIMIT_MS = 300  # a count that takes longer is given up, and the page says so
COUNTS_KEPT = 4096  # counts of recent searches kept per database and process (KeptCounts; config counts_kept)
# Browsing with filters that no index answers checks rows one by one: a page
# looks through windows of this many rowids, for at most BROWSE_TIME_MS, and
# the next page goes on where it stopped.
BROWSE_WINDOW = 100_000
BROWSE_TIME_MS = 300
INT64_MAX = 2**63 - 1
SEARCH_COLUMNS = [
    "url", "text", "width", "height", "similarity", "punsafe", "pwatermark",
    "aesthetic", "hash", "__index_level_0__", "domain_id", "url_hash",
]
FILTER_COLUMNS = {
    "aesthetic": float, "punsafe": float, "pwatermark": float, "similarity": float,
    "width": int, "height": int, "domain_id": int,
}
OPERATORS = {"exact": "=", "gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}
SORTABLE = set(SEARCH_COLUMNS) | {"rowid"}


class SearchError(Exception):
    """A bad request: the message is shown to the user with HTTP 400."""


def fts_query(text, mode="default"):
    """The FTS5 query for what a user typed.

    default: words are ANDed and "quoted phrases" kept together; every term is
    quoted, so no character the user types can be FTS5 syntax. An unbalanced
    quote runs to the end. raw: the text is FTS5 syntax (OR, NOT, NEAR, prefix
    ``*``, parentheses), checked when it runs.
    """
    if mode == "raw":
        return text.strip() or None
    # Control characters separate tokens anyway; NUL would cut the query short.
    text = re.sub(r"[\x00-\x1f\x7f]", " ", text)
    terms = []
    for match in re.finditer(r'"([^"]*)"?|([^\s"]+)', text):
        term = match.group(1) if match.group(1) is not None else match.group(2)
        term = term.strip()
        if term:
            terms.append('"' + term.replace('"', '""') + '"')
    return " ".join(terms) or None


@dataclass
class SearchRequest:
    text: str
    query: str  # FTS5
    mode: str = "default"
    filters: list = field(default_factory=list)  # (column, operator, value)
    sort: str = None  # column, or None for best first
    sort_desc: bool = False
    relevance: bool = False
    after: int = None  # keyset: last rowid of the previous page
    offset: int = 0  # for re-sorted results
    size: int = 50
    gallery: bool = False
    # Datasette filters the search checks row by row, as Datasette builds
    # them (its Filters, and _where fragments): [(sql, params)]
    row_checks: list = field(default_factory=list)
    # (key, value) of Datasette filters that are not in FILTER_COLUMNS
    # with OPERATORS: made into row_checks by the caller (tableapi.py)
    other_filters: list = field(default_factory=list)


def _number(kind, column, raw):
    try:
        value = kind(raw)
    except ValueError:
        raise SearchError(f"{column}: {_clip(raw)!r} is not a number") from None
    if kind is float and value != value:
        raise SearchError(f"{column}: {_clip(raw)!r} is not a number")
    if kind is int and not -INT64_MAX <= value <= INT64_MAX:
        raise SearchError(f"{column}: {_clip(raw)!r} is too large")
    return value


def _clip(value, length=60):
    return value if len(value) <= length else value[: length - 1] + "…"


def parse_request(args, default_size, max_size):
    """A SearchRequest from query-string arguments (a MultiParams or dict of
    lists). Raises SearchError for anything it cannot honour."""
    def first(name, default=None):
        values = args.getlist(name) if hasattr(args, "getlist") else args.get(name, [])
        return values[0] if values else default

    text = first("_search", "") or ""
    if len(text) > 1000:
        raise SearchError("_search: at most 1,000 characters")
    mode = first("_searchmode", "default")
    if mode not in ("default", "raw"):
        raise SearchError("_searchmode: use raw (FTS5 syntax: OR, NOT, NEAR, prefix*) or leave it out")
    request = SearchRequest(text=text, query=fts_query(text, mode), mode=mode)
    request.gallery = first("_view") == "gallery"
    size = first("_size")
    if size is None:
        request.size = default_size
    elif size == "max":
        request.size = max_size
    else:
        if not (size.isascii() and size.isdigit()) or not 1 <= int(size) <= max_size:
            raise SearchError(f"_size: a number from 1 to {max_size}, or max")
        request.size = int(size)
    sort, sort_desc = first("_sort"), first("_sort_desc")
    if sort and sort_desc:
        raise SearchError("use either _sort or _sort_desc, not both")
    column = sort or sort_desc
    if column == "relevance" or first("_order") == "relevance":
        request.relevance = True
    elif column:
        if column not in SORTABLE:
            raise SearchError(f"cannot sort by {_clip(column)!r}: sort by one of {', '.join(sorted(SORTABLE))} or relevance")
        # best first is rowid order: these need no re-sort
        if not ((column == "rowid" and sort) or (column == "aesthetic" and sort_desc)):
            request.sort, request.sort_desc = column, bool(sort_desc)
    next_token = first("_next")
    if next_token:
        digits = next_token.removeprefix("o")
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
            raise SearchError(f"_next: {_clip(next_token)!r} is not a page token from this search")
        if next_token.startswith("o"):
            # offsets page re-sorted results, which have at most RESORT_CAP rows
            request.offset = min(int(digits), RESORT_CAP + max_size)
        else:
            request.after = int(digits)
    keys = args.keys() if hasattr(args, "keys") else []
    for key in keys:
        if key.startswith("_") and "__" not in key:
            continue  # Datasette's own arguments: not filters
        column, _, op = key.rpartition("__") if "__" in key else (key, "", "exact")
        if column not in FILTER_COLUMNS or op not in OPERATORS:
            values = args.getlist(key) if hasattr(args, "getlist") else args.get(key, [])
            request.other_filters += [(key, value) for value in values]
            continue
        raw = first(key)
        if not raw.strip():
            continue  # an empty box of the search form
        request.filters.append((column, OPERATORS[op], _number(FILTER_COLUMNS[column], key, raw)))
    domain = first("_domain")
    if domain:
        request.filters.append(("_domain", "=", domain.strip().lower()))
    return request


@dataclass
class SearchResult:
    rows: list
    columns: list
    count: int
    count_exact: bool
    next_token: str = None
    notes: list = field(default_factory=list)
    sql: str = ""
    params: dict = field(default_factory=dict)
    order: str = "best first"


# Rowid bounds equivalent to an aesthetic filter in a database stored best
# first: the first rowid whose score fails the condition, via the index.
AESTHETIC_BOUND = {
    ">=": ("upper", "select rowid from images where aesthetic < :v order by aesthetic desc limit 1"),
    ">": ("upper", "select rowid from images where aesthetic <= :v order by aesthetic desc limit 1"),
    "<=": ("lower", "select rowid from images where aesthetic <= :v order by aesthetic desc limit 1"),
    "<": ("lower", "select rowid from images where aesthetic < :v order by aesthetic desc limit 1"),
}


# A condition of Datasette's (its filters, a _where fragment) names the
# columns of images unqualified: checked in a scope of its own, where no
# column of images_fts (text) can make a name ambiguous.
ROW_CHECK = "exists (select 1 from images where images.rowid = i.rowid and ({condition}))"


# Compiles a condition without running it: a bad _where fragment or filter
# value is an error about that condition, not about the search.
CHECK_CONDITION = "explain select 1 from images where ({condition})"


def check_conditions(db, request):
    """Raise SearchError, naming it, for a row check that is not valid SQL."""
    for sql, params in request.row_checks:
        try:
            db.execute(CHECK_CONDITION.format(condition=sql), params)
        except sqlite3.Error as ex:
            raise SearchError(f"Invalid filter or _where ({_clip(sql)}): {ex}") from None


def _conditions(db, request, sorted_best_first):
    """SQL conditions on images (aliased i) and on the FTS rowid (f.rowid),
    with parameters; plus the domain id if one was asked for, and the rowid
    span [low, high) the aesthetic filters come to (None: no bound)."""
    where, fts_where, params = [], [], {}
    domain_id = None
    span = [None, None]
    for n, (column, op, value) in enumerate(request.filters):
        if column == "_domain":
            rows = (db.execute("select id from domain where domain = :d", {"d": value})).rows
            if not rows:
                raise SearchError(f"_domain: no images from {_clip(value)!r}")
            column, value = "domain_id", rows[0][0]
        if column == "domain_id" and op == "=":
            domain_id = value
        name = f"f{n}"  # Datasette's filters (row_checks) use p0, p1, ...
        where.append(f"i.[{column}] {op} :{name}")
        params[name] = value
        if column == "aesthetic" and sorted_best_first:
            kind, bound_sql = AESTHETIC_BOUND.get(op, (None, None))
            if kind:
                rows = (db.execute(bound_sql, {"v": value})).rows
                if rows:
                    params[f"b{n}"] = rows[0][0]
                    fts_where.append(f"f.rowid {'<' if kind == 'upper' else '>='} :b{n}")
                    if kind == "upper":
                        # rowid < bound is exactly score >= (or >) value: the rows
                        # below it need no check (NULL scores come after it)
                        where.pop()
                        span[1] = rows[0][0] if span[1] is None else min(span[1], rows[0][0])
                    else:
                        span[0] = rows[0][0] if span[0] is None else max(span[0], rows[0][0])
                elif kind == "lower":
                    fts_where.append("0")  # no row has such a score
                    span = [1, 1]
    for sql, check_params in request.row_checks:
        where.append(ROW_CHECK.format(condition=sql))
        params.update(check_params)
    return where, fts_where, params, domain_id, span


def _index_answers(column, op, sorted_best_first):
    """Whether a filter is exact in the rows an index gives in rowid order."""
    return (column in ("domain_id", "_domain") and op == "=") or (
        column == "aesthetic" and sorted_best_first and op in AESTHETIC_BOUND
    )


def run_browse(db, request, sorted_best_first=True):
    """Images best first (rowid order) with filters and no search: a page of
    the gallery, or of the search form's table view. ``db``: a Connection.

    The domain and, in a database stored best first, the aesthetic score are
    answered by their indexes; any other filter is checked row by row, through
    windows of BROWSE_WINDOW rowids for at most BROWSE_TIME_MS, and the page
    says where it stopped: no page reads more than that, however rare the
    matches."""
    columns = ["rowid"] + SEARCH_COLUMNS
    select = "i.rowid as rowid, " + ", ".join(f"i.[{c}]" for c in SEARCH_COLUMNS)
    where, _, params, _, (low, high) = _conditions(db, request, sorted_best_first)
    notes = []
    if request.relevance or request.sort:
        notes.append("Sorted best first: other orders are offered for searches.")
    start = max(request.after or 0, (low or 1) - 1)  # rows after this rowid
    last = (db.execute("select max(rowid) from images")).rows[0][0] or 0
    if high is not None:
        last = min(last, high - 1)
    filters_sql = "".join(f" and {w}" for w in where)
    limit = request.size + 1
    windowed = bool(request.row_checks) or not all(
        _index_answers(c, op, sorted_best_first) for c, op, _ in request.filters)
    rows, sql = [], ""
    began = time.perf_counter()
    position = start
    while position < last and len(rows) < limit:
        end = min(last, position + BROWSE_WINDOW) if windowed else last
        sql = (
            f"select {select} from images i where i.rowid > :start and i.rowid <= :end{filters_sql}"
            f" order by i.rowid limit {limit - len(rows)}"
        )
        rows += list((db.execute(sql, {**params, "start": position, "end": end})).rows)
        position = end
        if (time.perf_counter() - began) * 1000 > BROWSE_TIME_MS:
            break
    next_token = None
    if len(rows) > request.size:
        rows = rows[: request.size]
        next_token = str(rows[-1][0])
    elif position < last:
        next_token = str(position)
        notes.append(
            f"This page looked through images {start + 1:,} to {position:,} of {last:,} (filters checked row by "
            "row); the next page goes on from there."
        )
    return SearchResult(
        rows=rows, columns=columns, count=None, count_exact=False, next_token=next_token,
        notes=notes, sql=sql, params={**params, "start": start}, order="best first",
    )


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


class KeptCounts:
    """The most recently used search counts of one immutable database: a
    count is a pure function of the search and its filters there, and the
    most expensive part of a filtered search (every match checked against
    the filters), asked again for each next page."""

    def __init__(self, entries=COUNTS_KEPT):
        self.entries = entries
        self.kept = collections.OrderedDict()

    def get(self, key):
        found = self.kept.get(key)
        if found is not None:
            self.kept.move_to_end(key)
        return found

    def put(self, key, value):
        self.kept[key] = value
        self.kept.move_to_end(key)
        while len(self.kept) > self.entries:
            self.kept.popitem(last=False)


def _kept_counts(database, entries=COUNTS_KEPT):
    """The KeptCounts of ``database`` (Datasette's), or None for a database
    that can change (or when none are to be kept)."""
    if database.is_mutable or not entries:
        return None
    counts = getattr(database, "_laion_counts", None)
    if counts is None:
        counts = database._laion_counts = KeptCounts(entries)
    return counts


def run_search(db, request, sorted_best_first=True, counts_kept=COUNTS_KEPT):
    """Run a search on ``db`` (a Connection, inside ``in_one_trip``); returns a SearchResult."""
    columns = ["rowid"] + SEARCH_COLUMNS
    select = "i.rowid as rowid, " + ", ".join(f"i.[{c}]" for c in SEARCH_COLUMNS)
    where, fts_where, params, domain_id, (low, high) = _conditions(db, request, sorted_best_first)
    params["q"] = request.query
    notes = []

    def execute(sql, limit_ms=None):
        try:
            return db.execute(sql, params, custom_time_limit=limit_ms)
        except Exception as ex:  # FTS5 syntax errors come as OperationalError
            message = str(ex)
            if any(m in message for m in ("fts5", "syntax error", "no such column", "unterminated", "unknown special query")):
                raise SearchError(f"Invalid search syntax: {message}") from None
            raise

    filters_sql = "".join(f" and {w}" for w in where)
    fts_sql = "".join(f" and {w}" for w in fts_where)

    # From the domain side when the domain is small: its rows in rowid order,
    # each checked against the index.
    domain_small = False
    if domain_id is not None:
        size = (db.execute("select image_counts from domain where id = :d", {"d": domain_id})).rows
        domain_small = bool(size) and (size[0][0] or 0) <= DOMAIN_SCAN_MAX
    if domain_small:
        matches_from = (
            "select i.rowid as rowid from images i where i.domain_id = :domain_scan"
            " and exists (select 1 from images_fts f where images_fts match :q and f.rowid = i.rowid"
            f"{fts_sql})"
        )
        params["domain_scan"] = domain_id
    else:
        matches_from = f"select f.rowid as rowid from images_fts f where images_fts match :q{fts_sql}"

    limit = request.size + 1

    def best_first_sql():
        after = " and m.rowid > :after" if request.after is not None else ""
        if request.after is not None:
            params["after"] = request.after
        if domain_small:
            source = matches_from.replace("where i.domain_id = :domain_scan", "where i.domain_id = :domain_scan and i.rowid > :after") if after else matches_from
            sql = (
                f"select {select} from ({source}) m join images i on i.rowid = m.rowid where 1{filters_sql}"
                f" order by m.rowid limit {limit}"
            )
        else:
            after_fts = " and f.rowid > :after" if after else ""
            sql = (
                f"select {select} from images_fts f join images i on i.rowid = f.rowid"
                f" where images_fts match :q{fts_sql}{after_fts}{filters_sql} order by f.rowid limit {limit}"
            )
        return sql

    # Filters checked row by row against every match (a rare filter on a
    # common word could read millions): matches are read through windows of
    # rowids, for at most BROWSE_TIME_MS, as in run_browse.
    windowed = not domain_small and (bool(request.row_checks) or not all(
        _index_answers(c, op, sorted_best_first) and c != "domain_id" and c != "_domain"
        for c, op, _ in request.filters))
    if windowed and where:
        # A search with few matches has them all checked in one query (the
        # windows are for a common word with a rare filter).
        few_sql = (f"select count(*) from (select f.rowid from images_fts f where images_fts match :q{fts_sql}"
                   f" limit {FILTER_SCAN_CAP + 1})")
        try:
            windowed = execute(few_sql, COUNT_TIME_LIMIT_MS).rows[0][0] > FILTER_SCAN_CAP
        except QueryInterrupted:
            pass
    window = {"sql": None, "position": None, "last": None}

    def best_first_page():
        if not windowed:
            return list((execute(best_first_sql())).rows)
        start = max(request.after or 0, (low or 1) - 1)
        last = (db.execute("select max(rowid) from images")).rows[0][0] or 0
        if high is not None:
            last = min(last, high - 1)
        rows, position, began = [], start, time.perf_counter()
        while position < last and len(rows) < limit:
            end = min(last, position + BROWSE_WINDOW)
            params.update(wstart=position, wend=end)
            window["sql"] = (
                f"select {select} from images_fts f join images i on i.rowid = f.rowid where images_fts match :q{fts_sql}"
                f" and f.rowid > :wstart and f.rowid <= :wend{filters_sql} order by f.rowid limit {limit - len(rows)}"
            )
            rows += list((execute(window["sql"])).rows)
            position = end
            if (time.perf_counter() - began) * 1000 > BROWSE_TIME_MS:
                break
        window.update(position=position, last=last, start=start)
        return rows

    def exhausted():
        return not windowed or window["position"] is None or window["position"] >= window["last"]

    def count_matches():
        """(count, exact, note or None): exact up to the cap; notes a
        partial count; (None, False, note) when it takes too long."""
        try:
            return count_capped()
        except QueryInterrupted:
            # e.g. a phrase of very common words that are rarely next to each
            # other: every candidate has to be checked to count them.
            return None, False, "These matches take too long to count; they are shown without a total."

    def count_capped():
        note = None
        if where and not domain_small:
            count_sql = (
                f"select count(*), (select count(*) from (select f.rowid from images_fts f where images_fts match :q{fts_sql}"
                f" limit {FILTER_SCAN_CAP})) from (select 1 from (select f.rowid from images_fts f where images_fts match :q{fts_sql}"
                f" limit {FILTER_SCAN_CAP}) m join images i on i.rowid = m.rowid where 1{filters_sql} limit {COUNT_CAP + 1})"
            )
            counted, scanned = (execute(count_sql, COUNT_TIME_LIMIT_MS)).rows[0]
            count = min(counted, COUNT_CAP)
            exact = counted <= COUNT_CAP and scanned < FILTER_SCAN_CAP
            if counted <= COUNT_CAP and scanned >= FILTER_SCAN_CAP:
                note = f"Counted among the first {FILTER_SCAN_CAP:,} matches of the search only."
        elif not where:
            # Nothing to check in images: count in the index alone.
            count_sql = f"select count(*) from ({matches_from} limit {COUNT_CAP + 1})"
            counted = (execute(count_sql, COUNT_TIME_LIMIT_MS)).rows[0][0]
            count, exact = min(counted, COUNT_CAP), counted <= COUNT_CAP
        else:
            count_sql = (
                f"select count(*) from (select m.rowid from ({matches_from}) m join images i on i.rowid = m.rowid"
                f" where 1{filters_sql} limit {COUNT_CAP + 1})"
            )
            counted = (execute(count_sql, COUNT_TIME_LIMIT_MS)).rows[0][0]
            count, exact = min(counted, COUNT_CAP), counted <= COUNT_CAP
        return count, exact, note

    # The first page of a best-first search that fits on one page counts
    # itself: one scan instead of two (a phrase of common words can be slow).
    first_page_rows = None
    if not (request.relevance or request.sort) and request.after is None:
        first_page_rows = best_first_page()
    if first_page_rows is not None and len(first_page_rows) <= request.size and exhausted():
        count, exact = len(first_page_rows), True
    else:
        # The same search's count on its next pages (and for the next
        # visitor) comes from the counts kept for the immutable database.
        checks = tuple((sql, tuple(sorted(params.items()))) for sql, params in request.row_checks)
        key = (request.query, tuple(request.filters), checks, sorted_best_first, COUNT_CAP, FILTER_SCAN_CAP)
        counts = _kept_counts(db.database, counts_kept)
        kept = counts.get(key) if counts is not None else None
        if kept is None:
            kept = count_matches()
            if counts is not None:
                counts.put(key, kept)
        count, exact, note = kept
        if note:
            notes.append(note)
    cheap = exact and count is not None and count <= RESORT_CAP
    order = "best first"
    if (request.relevance or request.sort) and not cheap:
        wanted = "relevance" if request.relevance else f"{request.sort}"
        notes.append(
            f"Sorted best first: sorting by {wanted} is offered for searches with at most {RESORT_CAP:,} matches; "
            "narrow the search or add filters."
        )
    if request.relevance and cheap:
        order = "relevance"
        sql = (
            f"select {select} from (select f.rowid as rowid, bm25(images_fts) as score from images_fts f"
            f" where images_fts match :q{fts_sql}) m join images i on i.rowid = m.rowid where 1{filters_sql}"
            f" order by m.score, i.rowid limit {limit} offset {request.offset}"
        )
    elif request.sort and cheap:
        order = f"{request.sort} {'descending' if request.sort_desc else 'ascending'}"
        direction = "desc" if request.sort_desc else "asc"
        sql = (
            f"select {select} from ({matches_from}) m join images i on i.rowid = m.rowid where 1{filters_sql}"
            f" order by i.[{request.sort}] {direction}, i.rowid limit {limit} offset {request.offset}"
        )
    else:
        sql = best_first_sql()
    if order == "best first":
        rows = first_page_rows if first_page_rows is not None else best_first_page()
        sql = window["sql"] or sql
    else:
        rows = list((execute(sql)).rows)
    next_token = None
    if len(rows) > request.size:
        rows = rows[: request.size]
        if order == "best first":
            next_token = str(rows[-1][0])
        else:
            next_token = f"o{request.offset + request.size}"
    elif order == "best first" and not exhausted():
        next_token = str(window["position"])
        notes.append(
            f"This page looked through the matches among images {window['start'] + 1:,} to {window['position']:,} of "
            f"{window['last']:,} (filters checked row by row); the next page goes on from there."
        )
    return SearchResult(
        rows=rows, columns=columns, count=count, count_exact=exact, next_token=next_token,
        notes=notes, sql=sql, params=dict(params), order=order,
    )


# The rows facets count: the first FACET_CAP matches of the search (or, with
# no words, rows), best first, then the filters.
FACET_MATCHES = "select f.rowid as rowid from images_fts f where images_fts match :q{fts_where}"
FACET_ROWS = "select i.rowid as rowid from images i where 1{span}"
FACET_SOURCE = (
    "select i.rowid as rowid, {columns} from ({matches} order by rowid limit {cap}) m"
    " join images i on i.rowid = m.rowid where 1{filters}"
)
FACET_CAP_CHECK = "select count(*) from ({matches} limit {cap_plus_one})"


def facet_source(db, request, sorted_best_first=True):
    """(sql, params, exact) of the rows Datasette's facets count for a search
    or browsing: the first FACET_CAP matches, best first, that pass the
    filters; ``exact`` when there are no more matches than that."""
    where, fts_where, params, _, (low, high) = _conditions(db, request, sorted_best_first)
    if request.query:
        params["q"] = request.query
        matches = FACET_MATCHES.format(fts_where="".join(f" and {w}" for w in fts_where))
    else:
        span = ""
        if low is not None:
            span += " and i.rowid >= :span_low"
            params["span_low"] = low
        if high is not None:
            span += " and i.rowid < :span_high"
            params["span_high"] = high
        matches = FACET_ROWS.format(span=span)
    more = db.execute(FACET_CAP_CHECK.format(matches=matches, cap_plus_one=FACET_CAP + 1), params).rows[0][0]
    sql = FACET_SOURCE.format(
        columns=", ".join(f"i.[{c}]" for c in SEARCH_COLUMNS), matches=matches, cap=FACET_CAP,
        filters="".join(f" and {w}" for w in where),
    )
    return sql, params, more <= FACET_CAP
