"""The plugin's one request pipeline (its ``asgi_wrapper``).

Each request is parsed once, into an ``Incoming`` (path without base_url,
the query string's pairs, what kind of page it asks for), and routed:

* not a page of the LAION site (another database, an instance-wide page
  such as ``/-/plugins``, or any request while the plugin serves no LAION
  database): to Datasette, untouched;
* a search or browsing page of a LAION database's ``images`` table (a LAION
  database: one ``datasette laion build`` made, sites.py): the fast search
  (``search_view``);
* a table, row, database or canned-query page of the LAION database: checked
  by the guard (``guard.decide``: refused with a 400 that says why,
  redirected, or passed on, rewritten), then answered from the page cache
  (``page_cache``) or by Datasette;
* the home page and ``robots.txt`` of the LAION site: the page cache, or the
  plugin's own pages.
"""
import re
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import parse_qsl, urlencode

from datasette.utils import tilde_decode
from datasette.utils.asgi import Request, Response

from . import guard, params, search_view, sites, tables
from .compat import MultiParams, urlsafe_components
from .config import plugin_config, raw_plugin_config
from .page_cache import PageCache
from .views import error_response, robots_txt, start_sites

ROUTE_RE = re.compile(r"^/(?P<database>[^/.]+)(?:/(?P<table>[^/.]+))?(?:\.(?P<format>\w+))?$")
ROW_RE = re.compile(r"^/(?P<database>[^/.]+)/(?P<table>[^/.]+)/(?P<pks>[^/]+?)(?:\.(?P<format>\w+))?$")


@dataclass(frozen=True)
class Incoming:
    """A request to the LAION site, parsed once."""

    kind: str  # home, robots, allow-debug, bad-path, database, table, row
    path: str  # as requested (base_url included), without the query string
    pairs: tuple = ()  # the query string's (name, value) pairs
    database: str = None  # the name of the LAION database it is about
    table: str = None
    fmt: str = None  # None (HTML), "json", "csv", ...
    pks: str = None  # a row page's key(s)

    @cached_property
    def names(self):
        """The names in the query string."""
        return frozenset(k for k, _ in self.pairs)

    @cached_property
    def args(self):
        """The query string's values by name, as Datasette's ``request.args``."""
        return MultiParams([list(pair) for pair in self.pairs])

    def url_with(self, **changes):
        """This page's path and query string with ``changes`` (name: value,
        or None to remove the name), as Datasette's path_with_replaced_args."""
        pairs = [(k, v) for k, v in self.pairs if k not in changes]
        pairs += [(k, v) for k, v in changes.items() if v is not None]
        return self.path + ("?" + urlencode(pairs) if pairs else "")


def site_served(datasette, checked=True):
    """Whether the plugin serves a LAION site here: a LAION database is
    served (sites.py), or ``database_path`` configures one (perhaps not
    uploaded yet). ``checked=False``: before start-up, where a bad
    configuration is not this caller's to report."""
    if sites.sites(datasette):
        return True
    config = plugin_config(datasette) if checked else raw_plugin_config(datasette)
    return config["database_path"] is not None


def is_laion_page(datasette, database, view_name):
    """Whether a page Datasette renders belongs to the LAION site: a page of
    a LAION database, or the site's home page."""
    if database is not None:
        return sites.get(datasette, database) is not None
    return view_name == "index" and site_served(datasette)


def parse(datasette, scope):
    """The Incoming of a request to the LAION site, else None."""
    if scope.get("type") != "http" or not site_served(datasette):
        return None
    raw_path = scope.get("raw_path")
    full_path = raw_path.decode("latin-1").partition("?")[0] if raw_path else scope.get("path", "")
    path = full_path
    base_url = datasette.setting("base_url")
    if base_url != "/":
        if not path.startswith(base_url):
            return None
        path = "/" + path[len(base_url):]
    kind, name, table, fmt, pks = _classify(path, datasette)
    if kind is None:
        return None
    pairs = tuple(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
    return Incoming(kind=kind, path=full_path, pairs=pairs, database=name, table=table, fmt=fmt, pks=pks)


def _site_of(head, datasette):
    """The name of the LAION database whose route is ``head`` (a path's
    first segment, without a format), or None."""
    routes = {datasette.databases[name].route: name for name in sites.sites(datasette)}
    found = routes.get(head)
    if found is None and head.isascii():  # tilde-encoded routes: compare decoded
        found = routes.get(tilde_decode(head))
    return found


def _classify(path, datasette):
    """(kind, database, table, format, keys) of a path (base_url removed),
    or Nones when it is not a page of the LAION site."""
    nothing = (None, None, None, None, None)
    if path == "/":
        return "home", None, None, None, None
    if path == "/robots.txt":
        return "robots", None, None, None, None
    if path == "/-/allow-debug":
        return "allow-debug", None, None, None, None
    name = _site_of(path[1:].split("/", 1)[0].split(".", 1)[0], datasette)
    if name is None:
        return nothing
    if not path.isascii():
        return "bad-path", name, None, None, None  # Datasette decodes raw paths as ASCII: a 500
    match = ROUTE_RE.match(path)
    if match:
        table = match.group("table")
        return ("table" if table else "database"), name, tilde_decode(table) if table else None, match.group("format"), None
    match = ROW_RE.match(path)
    if match:
        return "row", name, tilde_decode(match.group("table")), match.group("format"), match.group("pks")
    return nothing


class Pipeline:
    def __init__(self, datasette, app):
        self.datasette = datasette
        self.app = app
        self.cache = PageCache(datasette)

    async def __call__(self, scope, receive, send):
        incoming = parse(self.datasette, scope)
        if incoming is None:
            await self.app(scope, receive, send)
            return
        await self.route(incoming, scope, receive, send)

    async def route(self, incoming, scope, receive, send):
        datasette = self.datasette
        kind = incoming.kind
        if kind == "robots":
            await (await robots_txt(datasette)).asgi_send(send)
            return
        if kind == "bad-path":
            await self.refuse(incoming, scope, receive, send, "Invalid request",
                              "The address holds characters that are not URL-encoded.")
            return
        if kind == "allow-debug":
            try:
                params.check_allow_debug(incoming.pairs)
            except params.Refusal as ex:
                await self.refuse(incoming, scope, receive, send, ex.title, ex.message)
                return
            await self.app(scope, receive, send)
            return
        if incoming.database is not None:  # a LAION database added after start-up: its templates
            await datasette.invoke_startup()
            await start_sites(datasette)
        if kind == "table" and search_view.wants_search(incoming, scope):
            await search_view.handle_safely(datasette, incoming, scope, receive, send)
            return
        if kind in ("table", "database", "row"):
            scope = await self.check(incoming, scope, receive, send)
            if scope is None:  # answered: refused or redirected
                return
        send = _with_notes(scope, send)
        key = self.cache.key(scope, incoming.names)
        if key is not None:
            await self.cache.serve(key, self.app, scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def check(self, incoming, scope, receive, send):
        """The guard's decision on a page of the LAION database: the scope to
        pass on (rewritten when the guard rewrote the query string), or None
        when the guard has answered (400, 404 or a redirect)."""
        datasette = self.datasette
        config = plugin_config(datasette)
        db = datasette.databases[incoming.database]
        fmt = incoming.fmt
        if incoming.kind == "row":
            table = await tables.describe(datasette, db, incoming.table, config)
            if table is not None and len(table.primary_keys) >= 2 and (
                len(urlsafe_components(incoming.pks)) != len(table.primary_keys)
            ):  # Datasette 0.65 fails with a 500 on fewer keys
                await self.refuse(
                    incoming, scope, receive, send, "Not found",
                    f"A row of {table.name} is addressed by {', '.join(table.primary_keys)}, separated by commas",
                    status=404,
                )
                return None
            return scope
        table = None
        if incoming.kind == "table" and fmt in (None, "json", "csv"):
            if await datasette.get_canned_query(db.name, incoming.table, scope.get("actor")) is None:
                table = await tables.describe(datasette, db, incoming.table, config)
        if table is None:  # the database page (SQL), a canned query, or no such table
            try:
                params.check_common(incoming.pairs)
                if incoming.kind == "database" and fmt == "csv" and not (incoming.args.get("sql") or "").strip():
                    # Datasette 0.65 fails with a 500 on the database page as CSV
                    raise params.Refusal("Invalid request",
                                        "CSV of a query: add ?sql=select ... (the database page itself has no CSV)")
            except params.Refusal as ex:
                await self.refuse(incoming, scope, receive, send, ex.title, ex.message)
                return None
            return scope
        decision = guard.decide(table, fmt, incoming.pairs)
        if decision.status == 302:
            await Response.redirect(incoming.path + "?" + decision.query).asgi_send(send)
            return None
        if decision.refused:
            links = [(f"{table.name}, first page", datasette.urls.table(db.name, table.name))]
            if table.natural:
                links.append(("the gallery", datasette.urls.table(db.name, table.name) + "?_view=gallery"))
            await self.refuse(incoming, scope, receive, send, decision.title, decision.message, links=links)
            return None
        scope = dict(scope, laion_guard={"table": table, "decision": decision})
        if decision.query is not None:
            scope["query_string"] = decision.query.encode("latin-1")
        return scope

    async def refuse(self, incoming, scope, receive, send, title, message, status=400, links=()):
        """Answer with an error page (or JSON, or CSV text) that says why."""
        await self.datasette.invoke_startup()
        request = Request({**scope, "csrftoken": scope.get("csrftoken") or (lambda: "")}, receive)
        fmt = incoming.fmt if incoming.kind in ("table", "database", "row") else None
        response = await error_response(self.datasette, request, fmt, status, title, message, links)
        await response.asgi_send(send)


def _with_notes(scope, send):
    """``send``, adding the guard's notes for the page as a header (ASCII)."""
    guarded = scope.get("laion_guard")
    notes = guarded["decision"].notes if guarded else None
    if not notes:
        return send
    header = " ".join(notes).encode("ascii", "replace")

    async def send_with_notes(message):
        if message["type"] == "http.response.start":
            message = dict(message, headers=[*message.get("headers", []), (b"x-laion-notes", header)])
        await send(message)

    return send_with_notes


def asgi_wrapper(datasette):
    def wrap(app):
        return Pipeline(datasette, app)

    return wrap
