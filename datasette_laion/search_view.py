"""Serve searches of the images table on Datasette's own URLs.

``/<db>/images?_search=...`` and ``/<db>/images.json?_search=...`` (and any
``_view=gallery`` or ``_view=table`` page: the search form's browsing, with
filters and no words) are answered here, through an ASGI wrapper, with the
fast search of ``search.py``; every other request goes to Datasette, once the
guard (``guard.py``) has checked it. The JSON keeps the keys and ``_shape``
variants of Datasette's table JSON.
"""
import json
import logging
import time
from urllib.parse import parse_qs

from datasette.database import QueryInterrupted
from datasette.utils import path_with_removed_args, path_with_replaced_args
from datasette.utils.asgi import Request, Response
from markupsafe import Markup, escape

from . import guard, render, search
from .config import plugin_config
from .views import error_response

TABLE = "images"


def wants_search(datasette, scope):
    """(database, format) when this request is one of ours, else None."""
    if scope.get("type") != "http" or scope.get("method") not in ("GET", "HEAD"):
        return None
    config = plugin_config(datasette)
    database = config["database"]
    if database not in datasette.databases:
        return None
    base = datasette.urls.table(database, TABLE)
    path = scope.get("path", "")
    if path == base:
        fmt = "html"
    elif path == base + ".json":
        fmt = "json"
    else:
        return None
    args = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    has_search = any(v.strip() for v in args.get("_search", []))
    if not has_search and args.get("_view", [""])[0] not in ("gallery", "table"):
        return None
    return database, fmt


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


def cell_writers(columns, labels, urls, config):
    """{column: function(row) -> the cell's HTML}: what the plugin's
    render_cell hook gives for the images table (thumbnails, rounded
    scores), else the value escaped; rowids and domain ids as links. Chosen
    once per column, not per cell: a page has ~650 cells."""
    image_columns = config["image_columns"].get(TABLE, ())
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
                return f'<a href="{urls["domain"]}{value}">{escape(labels.get(value, ""))}</a>&nbsp;<em>{value}</em>'
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


def _json_body(request_args, result, rows, database, next_url, query_ms):
    shape = request_args.get("_shape", "arrays")
    columns = result.columns
    if shape == "array":
        return [dict(zip(columns, row)) for row in rows]
    if shape == "arrayfirst":
        return [row[0] for row in rows]
    if shape not in ("arrays", "objects"):
        return None
    return {
        "database": database,
        "table": TABLE,
        "is_view": False,
        "human_description_en": (
            f"where search matches {request_args.get('_search')!r}, {result.order}"
            if (request_args.get("_search") or "").strip() else result.order
        ),
        "rows": [dict(zip(columns, row)) for row in rows] if shape == "objects" else [list(row) for row in rows],
        "truncated": False,
        "filtered_table_rows_count": result.count,
        "filtered_table_rows_count_exact": result.count_exact,
        "expanded_columns": [],
        "expandable_columns": [[{"column": "domain_id", "other_table": "domain", "other_column": "id"}, "domain"]],
        "columns": columns,
        "primary_keys": [],
        "units": {},
        "query": {"sql": result.sql, "params": {k: v for k, v in result.params.items()}},
        "facet_results": {},
        "suggested_facets": [],
        "next": result.next_token,
        "next_url": next_url,
        "private": False,
        "allow_execute_sql": True,
        "query_ms": query_ms,
        "order": result.order,
        "notes": result.notes,
    }


async def handle(datasette, scope, receive, send, database, fmt):
    await datasette.invoke_startup()  # idempotent; Datasette's router would do it
    # Outside Datasette's CSRF middleware: these pages have no forms that post.
    scope = {**scope, "csrftoken": scope.get("csrftoken") or (lambda: "")}
    request = Request(scope, receive)
    config = plugin_config(datasette)
    db = datasette.get_database(database)
    max_size = datasette.setting("max_returned_rows")
    table_metadata = datasette.table_metadata(database, TABLE) or {}
    default_size = table_metadata.get("size") or datasette.setting("default_page_size")
    start = time.perf_counter()
    try:
        parsed = search.parse_request(request.args, default_size, max_size)
        if request.args.get("_shape") == "object":
            raise search.SearchError("_shape=object not available for tables with no primary keys")
        html = fmt == "html"

        def work(conn):  # the whole search, and the domains it shows, in one trip to a SQL thread
            best_first = _sorted_best_first(conn)
            if parsed.query:
                found = search.run_search(conn, parsed, best_first, counts_kept=config["counts_kept"])
            else:
                found = search.run_browse(conn, parsed, best_first)
            return found, _domain_labels(conn, found) if html else {}

        result, labels = await search.in_one_trip(datasette, db, work)
    except search.SearchError as ex:
        response = await error_response(datasette, request, fmt, 400, "Invalid search", str(ex))
        await response.asgi_send(send)
        return
    except QueryInterrupted:
        response = await error_response(
            datasette, request, fmt, 400, "Search took too long",
            "This search took longer than the time limit; add words or filters to narrow it.",
        )
        await response.asgi_send(send)
        return
    query_ms = (time.perf_counter() - start) * 1000
    rows = [dict(zip(result.columns, row)) for row in result.rows]
    next_url = None
    if result.next_token:
        next_url = datasette.absolute_url(request, path_with_replaced_args(request, {"_next": result.next_token}))
    if fmt == "json":
        body = _json_body(request.args, result, result.rows, database, next_url, query_ms)
        if body is None:
            response = await error_response(
                datasette, request, fmt, 400, "Invalid _shape",
                "_shape: use arrays, objects, array or arrayfirst",
            )
        elif request.args.get("_nl") and request.args.get("_shape") == "array":
            response = Response.text("\n".join(json.dumps(r, default=str) for r in body), content_type="text/plain")
        else:
            response = Response.json(body, default=str)
        await response.asgi_send(send)
        return
    # Rendered here rather than cell by cell in Jinja, which costs more than
    # the search; every value goes through escape() or render. Only the view
    # asked for is rendered. Row links are built from the table's URL: rowids
    # and domain ids are integers, which need no tilde-encoding.
    urls = {
        "row": datasette.urls.table(database, TABLE) + "/",
        "domain": datasette.urls.table(database, "domain") + "/",
        "config": config,
    }
    table_body = gallery = None
    if parsed.gallery:
        gallery = [
            {
                "rowid": row["rowid"],
                "row_url": f'{urls["row"]}{row["rowid"]}',
                "thumb": render.render_cell(row, row["url"], "url", TABLE, config),
                "text": row["text"],
                "aesthetic": row["aesthetic"],
                "domain": labels.get(row["domain_id"]),
                "domain_url": f'{urls["domain"]}{row["domain_id"]}' if row["domain_id"] else None,
            }
            for row in rows
        ]
    else:
        writers = list(cell_writers(result.columns, labels, urls, config).items())
        table_body = Markup(
            "".join(
                "<tr>" + "".join(f'<td class="col-{column}">{write(row)}</td>' for column, write in writers) + "</tr>\n"
                for row in rows
            )
        )
    filters = [(c, op, v) for c, op, v in parsed.filters]
    html = await datasette.render_template(
        "laion_search.html",
        {
            "database": database,
            "table": TABLE,
            "search_text": parsed.text,
            "search_mode": parsed.mode,
            "filters": filters,
            "columns": result.columns,
            "table_body": table_body,
            "row_count": len(rows),
            "gallery_items": gallery,
            "gallery": parsed.gallery,
            "count_text": _count_text(result) if parsed.query else None,
            "notes": result.notes,
            "order": result.order,
            "next_url": next_url,
            # without words, the table view is ours too (Datasette's own table
            # page answers one filter at a time)
            "table_url": path_with_removed_args(request, {"_view"}) if parsed.query
            else path_with_replaced_args(request, {"_view": "table"}),
            "gallery_url": path_with_replaced_args(request, {"_view": "gallery"}),
            "json_url": path_with_replaced_args(request, {}).replace(
                datasette.urls.table(database, TABLE), datasette.urls.table(database, TABLE) + ".json", 1
            ),
            "relevance_url": path_with_replaced_args(request, {"_sort": "relevance", "_next": None, "_sort_desc": None}),
            "best_url": path_with_removed_args(request, {"_sort", "_sort_desc", "_next", "_order"}),
            "query_ms": query_ms,
            "args": request.args,
        },
        request=request,
    )
    await Response.html(html).asgi_send(send)


def _sorted_best_first(conn):
    """Whether the build stored rows best first; asked once per (immutable) database."""
    database = conn.database
    found = getattr(database, "_laion_sorted_best_first", None)
    if found is None:
        rows = conn.execute("select value from build_info where key = 'order'").rows
        found = bool(rows) and rows[0][0] == "aesthetic desc"
        if not database.is_mutable:
            database._laion_sorted_best_first = found
    return found


async def _handle_safely(datasette, scope, receive, send, database, fmt):
    """handle(), with any unexpected error answered as a 500 with a message
    (and logged) rather than a dropped connection."""
    started = []

    async def tracking_send(message):
        if message["type"] == "http.response.start":
            started.append(True)
        await send(message)

    try:
        await handle(datasette, scope, receive, tracking_send, database, fmt)
    except Exception:
        logging.getLogger(__name__).exception("search failed: %s", scope.get("query_string"))
        if started:
            raise
        request = Request({**scope, "csrftoken": lambda: ""}, receive)
        response = await error_response(
            datasette, request, fmt, 500, "Search failed", "This search failed on the server; it has been logged."
        )
        await response.asgi_send(send)


def asgi_wrapper(datasette):
    def wrap(app):
        async def wrapped(scope, receive, send):
            target = wants_search(datasette, scope)
            if target is not None:
                await _handle_safely(datasette, scope, receive, send, *target)
                return
            scope = await guard.check(datasette, scope, receive, send, plugin_config(datasette))
            if scope is None:  # refused, with a 400 that says why
                return
            note = guard.notes_header(scope)
            if note:
                original_send = send

                async def send(message):
                    if message["type"] == "http.response.start":
                        message = dict(message, headers=[*message.get("headers", []), (b"x-laion-notes", note)])
                    await original_send(message)

            await app(scope, receive, send)

        return wrapped

    return wrap
