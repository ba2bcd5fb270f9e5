"""Serve searches of the images table on Datasette's own URLs.

``/<db>/images?_search=...`` as HTML, JSON and CSV (and any ``_view=gallery``
or ``_view=table`` page: the search form's browsing, with filters and no
words) are answered here, routed by the request pipeline (pipeline.py), with
the fast search of ``search.py`` (with ``_searchmode=meaning``, the search
by meaning of ``meaning_search.py``). A request is answered in phases:
``plan`` (its arguments, checked: permissions, Datasette's table arguments
by ``tableapi``, redirects; a search by meaning's nearest images), one trip
to a SQL thread (``_run``: the search, the labels it shows, the source of
its facets), Datasette's facet classes when asked, then the page: HTML,
JSON through Datasette's own renderer, or CSV (search_csv.py).
"""
import logging
import math
import time
from dataclasses import dataclass
from typing import Optional

from datasette.utils.asgi import Request, Response
from markupsafe import Markup, escape

from . import compat, meaning, meaning_search, one_trip, render, search, search_csv, search_request, sites, tableapi
from .compat import QueryInterrupted
from .config import plugin_config
from .profiles import SITE_COLUMNS
from .views import error_response, safe_mode_threshold

TABLE = "images"


def wants_search(incoming, scope):
    """Whether a request to a LAION table (an Incoming) is one of ours: a
    search of the images table (a search by meaning even without words: it
    says what it lacks), or its gallery or table view."""
    if incoming.table != TABLE or incoming.fmt not in (None, "json", "csv") or scope.get("method") not in ("GET", "HEAD"):
        return False
    has_search = any(v.strip() for key in incoming.args.keys() if key == "_search" or key.startswith("_search_")
                     for v in incoming.args.getlist(key))
    return has_search or incoming.args.get("_view", "") in ("gallery", "table") or (
        incoming.args.get("_searchmode") == "meaning")


def _count_text(result):
    if result.count is None:
        return "Matches not counted"
    if result.count_exact:
        return f"{result.count:,} {'match' if result.count == 1 else 'matches'}"
    return f"{result.count:,}+ matches"


def _domain_labels(conn, result):
    """{domain id: domain} of the rows of a SearchResult."""
    column = result.columns.index("domain_id")
    ids = sorted({row[column] for row in result.rows if row[column] is not None})
    if not ids:
        return {}
    placeholders = ", ".join(f":d{i}" for i in range(len(ids)))
    found = conn.execute(
        f"select id, domain from domain where id in ({placeholders})", {f"d{i}": v for i, v in enumerate(ids)}
    )
    return {row[0]: row[1] for row in found.rows}


def cell_writers(columns, labels, urls, config, threshold=render.SAFE_MODE_SETTING):
    """{column: function(row) -> the cell's HTML}: what the plugin's
    render_cell hook gives for the images table (thumbnails, rounded
    scores), else the value escaped; rowids and domain ids as links. Chosen
    once per column, not per cell: a page has ~650 cells. ``threshold``:
    safe mode's (views.safe_mode_threshold), by default the configured one."""
    image_columns = config["image_columns"].get(TABLE, ())
    if threshold is render.SAFE_MODE_SETTING:
        threshold = config["safe_mode_threshold"]
    thumbnail_url = config["thumbnail_url"]

    def plain(value):
        if value is None:
            return "&nbsp;"
        return str(value) if type(value) is int else str(escape(value))

    def writer(column):
        if column == "rowid":
            return lambda row: f'<a href="{urls["row"]}{row["rowid"]}">{row["rowid"]}</a>'
        if column == "domain_id":
            def domain(row):
                value = row["domain_id"]
                if value is None:
                    return "&nbsp;"
                label = labels.get(value)
                if label is None:  # _labels=off, as Datasette writes it then
                    return f'<a href="{urls["domain"]}{value}">{value}</a>'
                return f'<a href="{urls["domain"]}{value}">{escape(label)}</a>&nbsp;<em>{value}</em>'
            return domain
        if column in image_columns:
            def image(row):
                value = row[column]
                if isinstance(value, str):
                    return str(render.thumbnail(value, row.get("text"), row.get("punsafe"), threshold, thumbnail_url))
                return plain(value)
            return image
        if column in render.ROUNDED_COLUMNS:
            def score(row):
                value = row[column]
                return render.rounded_html(value) if type(value) is float else plain(value)
            return score
        return lambda row: plain(row[column])

    return {column: writer(column) for column in columns}


# The images table's one foreign key, as Datasette describes it.
FOREIGN_KEYS = {"domain_id": ({"column": "domain_id", "other_table": "domain", "other_column": "id"}, "domain")}


class Redirect(Exception):
    def __init__(self, location):
        super().__init__(location)
        self.location = location


@dataclass
class Plan:
    """Everything a search request asks for, checked (phase 1 of handle)."""

    search: search_request.SearchRequest
    table: tableapi.TableArgs
    fmt: str
    actor: Optional[dict]
    private: bool
    allow_sql: bool


async def plan(datasette, incoming, request):
    """The Plan of a request; raises SearchError (400), tableapi.Forbidden
    (403), Redirect (302) or meaning.LoadError (503). A search by meaning
    finds its candidates here (meaning_search.prepare)."""
    args, database, fmt = incoming.args, incoming.database, incoming.fmt or "html"
    actor = await compat.actor_from_request(datasette, request)
    visible, private = await datasette.check_visibility(
        actor, permissions=[("view-table", (database, TABLE)), ("view-database", database), "view-instance"])
    if not visible:
        raise tableapi.Forbidden("You do not have permission to view this table")
    redirect = compat.filters_redirect(args)
    if redirect:
        raise Redirect(incoming.url_with(**dict(redirect)))
    if "_sort_by_desc" in args:
        raise Redirect(incoming.url_with(_sort_desc=args.get("_sort"), _sort_by_desc=None, _sort=None))
    table_metadata = datasette.table_metadata(database, TABLE) or {}
    max_size = datasette.setting("max_returned_rows")
    parsed = search_request.parse_request(args, table_metadata.get("size") or datasette.setting("default_page_size"), max_size)
    settings = {name: datasette.setting(name) for name in ("allow_facet", "allow_csv_stream", "default_cache_ttl")}
    table_columns = meaning_search.COLUMNS[1:] if parsed.mode == "meaning" else search_request.SEARCH_COLUMNS
    table_args = tableapi.parse(args, fmt, table_columns, FOREIGN_KEYS, settings, table_metadata.get("facets") or ())
    if table_args.extra_search and parsed.mode == "meaning":
        parsed.text = table_args.extra_search
    elif table_args.extra_search:
        extra = search_request.fts_query(table_args.extra_search, parsed.mode)
        parsed.query = f"({parsed.query}) AND ({extra})" if parsed.query and parsed.mode == "raw" else (
            f"{parsed.query} {extra}" if parsed.query else extra)
        parsed.text = " ".join(t for t in (parsed.text, table_args.extra_search) if t)
    allow_sql = await datasette.permission_allowed(actor, "execute-sql", database, default=True)
    wheres = args.getlist("_where")
    if wheres and not allow_sql:
        raise tableapi.Forbidden("_where= is not allowed")
    for key, _ in parsed.other_filters:
        column = key.rsplit("__", 1)[0] if "__" in key else key
        if column not in search_request.SEARCH_COLUMNS and column != "rowid":
            raise search_request.SearchError(f"images has no column {column[:60]!r}: filter on "
                                     + ", ".join(["rowid", *search_request.SEARCH_COLUMNS]))
    clauses, params = compat.filter_clauses(parsed.other_filters, TABLE)
    parsed.row_checks = [(clause, params) for clause in clauses] + [(where, {}) for where in wheres if where.strip()]
    if table_args.stream:
        parsed.size = max_size
    if parsed.mode == "meaning":
        await meaning_search.prepare(datasette, database, parsed)
    return Plan(parsed, table_args, fmt, actor, private, allow_sql)


def _run(conn, plan, config, labels_wanted, facets_wanted):
    """The search (or browsing), the labels of the domains it shows, and the
    source of its facets: one trip to a SQL thread (``conn``: a one_trip.Connection)."""
    search.check_conditions(conn, plan.search)
    best_first = one_trip.stored_best_first(conn)
    meaning_mode = plan.search.mode == "meaning"
    if meaning_mode:
        found = meaning_search.run(conn, plan.search)
    elif plan.search.query:
        found = search.run_search(conn, plan.search, best_first, counts_kept=config["counts_kept"])
    else:
        found = search.run_browse(conn, plan.search, best_first)
    labels = _domain_labels(conn, found) if labels_wanted else {}
    facet_source = None
    if facets_wanted:
        facet_source = (meaning_search.facet_source(conn, plan.search) if meaning_mode
                        else search.facet_source(conn, plan.search, best_first))
    return found, labels, facet_source


def _json_data(datasette, plan, result, columns, rows, database, next_url, query_ms, facets, facets_exact):
    parsed = plan.search
    description = result.order
    if parsed.mode == "meaning":
        description = f"{result.order} to {parsed.text!r}"
    elif parsed.query:
        description = f"where search matches {parsed.text!r}, {result.order}"
    data = {
        "database": database,
        "table": TABLE,
        "is_view": False,
        "human_description_en": description,
        "rows": rows,
        "truncated": False,
        "filtered_table_rows_count": None if plan.table.nocount else result.count,
        "filtered_table_rows_count_exact": None if plan.table.nocount else result.count_exact,
        "expanded_columns": [c for c in columns if c in plan.table.labels],
        "expandable_columns": [list(fk) for fk in FOREIGN_KEYS.values()],
        "columns": columns,
        "primary_keys": [],
        "units": {},
        "query": {"sql": result.sql, "params": dict(result.params)},
        "facet_results": facets,
        "suggested_facets": [],
        "next": result.next_token,
        "next_url": next_url,
        "private": plan.private,
        "allow_execute_sql": plan.allow_sql,
        "query_ms": query_ms,
        "order": result.order,
        "search_mode": parsed.mode if parsed.searching else None,  # default (words), raw or meaning
        "stored_order": _site(datasette, database).info.get("order", "aesthetic desc"),  # what "best first" is
        "notes": result.notes + ([] if facets_exact else [facets_note()] if facets else []),
    }
    for key in ("source", "source_url", "license", "license_url"):  # as Datasette's JSON has them
        value = datasette.metadata(key)
        if value:
            data[key] = value
    return data


def _site(datasette, database):
    """The searched database's Site (sites.py): the pipeline sends only LAION databases here."""
    return sites.get(datasette, database)


def facets_note():
    return f"Facets counted among the first {search.FACET_CAP:,} matches, best first."


async def handle(datasette, incoming, scope, receive, send):
    await datasette.invoke_startup()  # idempotent; Datasette's router would do it
    # Outside Datasette's CSRF middleware: these pages have no forms that post.
    scope = {**scope, "csrftoken": scope.get("csrftoken") or (lambda: "")}
    request = Request(scope, receive)
    database, fmt = incoming.database, incoming.fmt or "html"
    config = plugin_config(datasette)
    db = datasette.get_database(database)
    start = time.perf_counter()
    try:
        the_plan = await plan(datasette, incoming, request)
        if the_plan.table.stream:
            await search_csv.stream_csv(
                datasette, db, the_plan,
                lambda conn, page_plan: _run(conn, page_plan, config, bool(the_plan.table.labels), False), send)
            return
        labels_wanted = (fmt == "html" and the_plan.table.html_labels) or bool(the_plan.table.labels)
        result, labels, facet_source = await one_trip.in_one_trip(
            datasette, db, lambda conn: _run(conn, the_plan, config, labels_wanted, the_plan.table.facets),
            the_plan.table.time_limit_ms)
    except Redirect as ex:
        await Response.redirect(ex.location).asgi_send(send)
        return
    except tableapi.Forbidden as ex:
        response = await error_response(datasette, request, fmt, 403, "Forbidden", str(ex))
        await response.asgi_send(send)
        return
    except search_request.SearchError as ex:
        response = await error_response(datasette, request, fmt, 400, "Invalid search", str(ex))
        await response.asgi_send(send)
        return
    except meaning.LoadError as ex:
        logging.getLogger(__name__).error("search by meaning: %s", ex)
        response = await error_response(datasette, request, fmt, 503, "Search by meaning unavailable", str(ex),
                                         links=[("search the captions for these words", incoming.url_with(
                                             _searchmode=None, _next=None))])
        response.headers["Retry-After"] = str(max(1, math.ceil(ex.retry_after)))
        await response.asgi_send(send)
        return
    except QueryInterrupted:
        response = await error_response(
            datasette, request, fmt, 400, "Search took too long",
            "This search took longer than the time limit; add words or filters to narrow it.",
        )
        await response.asgi_send(send)
        return
    facets, facets_exact = {}, True
    if facet_source is not None:
        sql, params, facets_exact = facet_source
        facets, _ = await compat.facet_results(datasette, request, database, TABLE, sql, params,
                                               datasette.table_metadata(database, TABLE) or {})
    query_ms = (time.perf_counter() - start) * 1000
    next_url = None
    if result.next_token:
        next_url = datasette.absolute_url(request, incoming.url_with(_next=result.next_token))
    label_of = {("domain_id", k): v for k, v in labels.items()}
    if fmt == "json":
        columns, rows = tableapi.rows_for(result.columns, result.rows, the_plan.table, label_of)
        data = _json_data(datasette, the_plan, result, columns, rows, database, next_url, query_ms, facets, facets_exact)
        response = compat.json_response(incoming.args, data)
    elif fmt == "csv":
        columns, rows = tableapi.rows_for(result.columns, result.rows, the_plan.table, label_of)
        await search_csv.send_csv(send, the_plan, columns, search_csv.one_page(rows))
        return
    else:
        response = await _html(datasette, request, incoming, the_plan, result, labels, next_url, query_ms,
                               facets, facets_exact)
    compat.set_response_headers(datasette, response, the_plan.table.ttl)
    await response.asgi_send(send)


async def _html(datasette, request, incoming, plan, result, labels, next_url, query_ms, facets, facets_exact):
    # Rendered here rather than cell by cell in Jinja, which costs more than
    # the search; every value goes through escape() or render. Only the view
    # asked for is rendered. Row links are built from the table's URL: rowids
    # and domain ids are integers, which need no tilde-encoding.
    database, parsed = incoming.database, plan.search
    config = plugin_config(datasette)
    threshold = safe_mode_threshold(datasette, database)
    site = _site(datasette, database)
    rows = [dict(zip(result.columns, row)) for row in result.rows]
    # the HTML table leaves out the site columns the source does not fill (always empty), unless asked by _col
    columns = plan.table.columns if "_col" in incoming.names else tuple(
        c for c in plan.table.columns if c not in SITE_COLUMNS or site.has(c))
    urls = {
        "row": datasette.urls.table(database, TABLE) + "/",
        "domain": datasette.urls.table(database, "domain") + "/",
    }
    table_body = gallery = None
    if parsed.gallery:
        gallery = [
            {
                "rowid": row["rowid"],
                "row_url": f'{urls["row"]}{row["rowid"]}',
                "thumb": render.render_cell(row, row["url"], "url", TABLE, config, threshold=threshold),
                "text": row["text"],
                "aesthetic": row["aesthetic"],
                "cosine": row.get("cosine"),
                "domain": labels.get(row["domain_id"]),
                "domain_url": f'{urls["domain"]}{row["domain_id"]}' if row["domain_id"] else None,
            }
            for row in rows
        ]
    else:
        writers = list(cell_writers(columns, labels, urls, config, threshold).items())
        table_body = Markup(
            "".join(
                "<tr>" + "".join(f'<td class="col-{column}">{write(row)}</td>' for column, write in writers) + "</tr>\n"
                for row in rows
            )
        )
    images_url = datasette.urls.table(database, TABLE)
    html = await datasette.render_template(
        "laion_search.html",
        {
            "database": database,
            "table": TABLE,
            "search_text": parsed.text,
            "search_mode": parsed.mode,
            "meaning_offered": meaning_search.offered(datasette, database),
            "filters": list(parsed.filters),
            "other_filters": list(parsed.other_filters) + [("_where", w) for w in incoming.args.getlist("_where")],
            "columns": columns,
            "table_body": table_body,
            "row_count": len(rows),
            "gallery_items": gallery,
            "gallery": parsed.gallery,
            "count_text": None if plan.table.nocount else _count_text(result) if parsed.query else None,
            "notes": result.notes + ([] if facets_exact or not facets else [facets_note()]),
            "facets": list(facets.values()),
            "order": site.order_label if result.order == "best first" else result.order,
            "site": site,
            "next_url": next_url,
            # without words, the table view is ours too (Datasette's own table
            # page answers one filter at a time)
            "table_url": incoming.url_with(_view=None) if parsed.searching else incoming.url_with(_view="table"),
            "gallery_url": incoming.url_with(_view="gallery"),
            "json_url": incoming.url_with().replace(images_url, images_url + ".json", 1),
            "relevance_url": incoming.url_with(_sort="relevance", _next=None, _sort_desc=None),
            "best_url": incoming.url_with(_sort=None, _sort_desc=None, _next=None, _order=None),
            "query_ms": query_ms,
            "args": incoming.args,
        },
        request=request,
        view_name="table",
    )
    return Response.html(html)


async def handle_safely(datasette, incoming, scope, receive, send):
    """handle(), with any unexpected error answered as a 500 with a message
    (and logged) rather than a dropped connection."""
    started = []

    async def tracking_send(message):
        if message["type"] == "http.response.start":
            started.append(True)
        await send(message)

    fmt = incoming.fmt or "html"
    try:
        await handle(datasette, incoming, scope, receive, tracking_send)
    except Exception:
        logging.getLogger(__name__).exception("search failed: %s", scope.get("query_string"))
        if started:
            raise
        request = Request({**scope, "csrftoken": lambda: ""}, receive)
        response = await error_response(
            datasette, request, fmt, 500, "Search failed", "This search failed on the server; it has been logged."
        )
        await response.asgi_send(send)
