"""Search that stays fast for every word at 12M rows.

Datasette's own table search runs ``rowid in (select rowid from images_fts
where ... match ...) order by ...``: its cost grows with the number of
matches (1.2 s for "dog", a timeout for the commonest words). Here the search
is driven from the FTS table in rowid order, which is "best first" because the
build stores rows by descending aesthetic score, with keyset paging on rowid:
every page reads only the rows it shows. Counts are exact up to a cap and
shown as "N+" beyond it; relevance (bm25) and other sorts are used when the
match count makes them cheap, and the page says so when it falls back.

This module holds the SQL and runs it; ``search_request`` parses a request,
``search_view`` renders the result. A search runs whole in one trip to a SQL
thread (``one_trip.in_one_trip``).
"""
import sqlite3
import time
from dataclasses import dataclass, field

from .compat import QueryInterrupted
from .kept_counts import COUNTS_KEPT, kept_counts
from .search_request import RESORT_CAP, SEARCH_COLUMNS, SearchError, clip

COUNT_CAP = 10_000  # exact counts up to this many matches
FACET_CAP = 10_000  # facets count the first this many matches, best first
# A filtered search's count checks at most this many matches against the
# filters (~4 us each at 12M rows): exact when the search has no more, else
# "N+" (at least N) with a note.
FILTER_SCAN_CAP = 2_000
DOMAIN_SCAN_MAX = 20_000  # domains this small are searched from the domain side
COUNT_TIME_LIMIT_MS = 300  # a count that takes longer is given up, and the page says so
# Browsing with filters that no index answers checks rows one by one: a page
# looks through windows of this many rowids, for at most BROWSE_TIME_MS, and
# the next page goes on where it stopped.
BROWSE_WINDOW = 100_000
BROWSE_TIME_MS = 300


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
            raise SearchError(f"Invalid filter or _where ({clip(sql)}): {ex}") from None


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
                raise SearchError(f"_domain: no images from {clip(value)!r}")
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
        counts = kept_counts(db.database, counts_kept)
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
