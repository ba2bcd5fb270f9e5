"""The plugin's one request pipeline (its ``asgi_wrapper``).

Each request is parsed once, into an ``Incoming`` (path without base_url,
the query string's pairs, what kind of page it asks for), and routed:

* not a page of the LAION site (another database, an instance-wide page
  such as ``/-/plugins``, or any request while the plugin serves no LAION
  database): to Datasette, untouched;
* a search or browsing page of the LAION ``images`` table: the fast search
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

from . import guard, search_view, tables
from .compat import MultiParams, urlsafe_components
from .config import plugin_config, raw_plugin_config
from .page_cache import PageCache
from .views import error_response, robots_txt

ROUTE_RE = re.compile(r"^/(?P<database>[^/.]+)(?:/(?P<table>[^/.]+))?(?:\.(?P<format>\w+))?$")
ROW_RE = re.compile(r"^/(?P<database>[^/.]+)/(?P<table>[^/.]+)/(?P<pks>[^/]+?)(?:\.(?P<format>\w+))?$")


@dataclass(frozen=True)
class Incoming:
    """A request to the LAION site, parsed once."""

    kind: str  # home, robots, allow-debug, bad-path, database, table, row
    path: str  # as requested (base_url included), without the query string
    pairs: tuple = ()  # the query string's (name, value) pairs
    database: str = None  # the LAION database's name
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


def site_database(datasette, checked=True):
    """(name, Database or None) of the LAION database, or None when the
    plugin serves no LAION site here (the database is neither served nor
    configured by ``database_path``). ``checked=False``: before start-up,
    where a bad configuration is not this caller's to report."""
    config = plugin_config(datasette) if checked else raw_plugin_config(datasette)
    name = config["database"]
    db = datasette.databases.get(name)
    if db is None and config["database_path"] is None:
        return None
    return name, db


def is_laion_page(datasette, database, view_name):
    """Whether a page Datasette renders belongs to the LAION site: a page of
    its database, or its home page."""
    site = site_database(datasette)
    if site is None:
        return False
    return database == site[0] or (database is None and view_name == "index")


def parse(datasette, scope):
    """The Incoming of a request to the LAION site, else None."""
    if scope.get("type") != "http":
        return None
    site = site_database(datasette)
    if site is None:
        return None
    name, db = site
    raw_path = scope.get("raw_path")
    full_path = raw_path.decode("latin-1").partition("?")[0] if raw_path else scope.get("path", "")
    path = full_path
    base_url = datasette.setting("base_url")
    if base_url != "/":
        if not path.startswith(base_url):
            return None
        path = "/" + path[len(base_url):]
    kind, table, fmt, pks = _classify(path, db)
    if kind is None:
        return None
    pairs = tuple(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
    return Incoming(kind=kind, path=full_path, pairs=pairs, database=name, table=table, fmt=fmt, pks=pks)


def _classify(path, db):
    """(kind, table, format, keys) of a path (base_url removed), or Nones."""
    nothing = (None, None, None, None)
    if path == "/":
        return "home", None, None, None
    if path == "/robots.txt":
        return "robots", None, None, None
    if path == "/-/allow-debug":
        return "allow-debug", None, None, None
    if db is None:
        return nothing
    prefix = "/" + db.route
    if path != prefix and not path.startswith((prefix + "/", prefix + ".")):
        # tilde-encoded routes: compare decoded
        head = path[1:].split("/", 1)[0].split(".", 1)[0]
        if not head.isascii() or tilde_decode(head) != db.route:
            return nothing
    if not path.isascii():
        return "bad-path", None, None, None  # Datasette decodes raw paths as ASCII: a 500
    match = ROUTE_RE.match(path)
    if match:
        table = match.group("table")
        return ("table" if table else "database"), tilde_decode(table) if table else None, match.group("format"), None
    match = ROW_RE.match(path)
    if match:
        return "row", tilde_decode(match.group("table")), match.group("format"), match.group("pks")
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
                guard.check_allow_debug(incoming.pairs)
            except guard.Refusal as ex:
                await self.refuse(incoming, scope, receive, send, ex.title, ex.message)
                return
            await self.app(scope, receive, send)
            return
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
                guard.check_common(incoming.pairs)
                if incoming.kind == "database" and fmt == "csv" and not (incoming.args.get("sql") or "").strip():
                    # Datasette 0.65 fails with a 500 on the database page as CSV
                    raise guard.Refusal("Invalid request",
                                        "CSV of a query: add ?sql=select ... (the database page itself has no CSV)")
            except guard.Refusal as ex:
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
