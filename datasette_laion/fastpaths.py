"""Less work per request, for a site whose database never changes.

Under load the site is bound by the CPU of each server process's one event
loop thread (routing, permission checks, templates), not by SQLite. What is
done here is what an immutable deployment makes safe:

* ``HomeView``: the home page rendered from the project's ``index.html``
  with the context it uses. Datasette's IndexView first lists every table
  of every database with its columns, keys and permissions (~40 SQL
  queries, queued behind the searches on the SQL threads) for a list this
  template does not show.
* ``PageCache``: pages rendered once per process and kept, since their
  content depends on nothing but their URL and the immutable database: the
  home page, each immutable database's page, and its listings, the pages of
  a table, view or canned query whose query string only says how to show
  them (sort, page size, next page, JSON shape: no filter, search or
  parameter value a visitor typed; PRESENTATION_PARAMS), HTML and JSON.
  Those come from a small set of URLs that many visitors ask for (top
  domains, the names tables, the first pages). Only anonymous GETs (no
  cookie, no Authorization header) are served from it or stored in it, only
  whole 200 responses that set no cookie, and never a SQL query
  (``?sql=``); keyed by path, query string, Host and scheme (the page's
  absolute JSON link), bounded in entries and in bytes (``page_cache_mb``,
  0: off). A page served from it has the header ``x-laion-cache: hit``.
* ``tune()``, at start-up: Jinja's ``auto_reload`` off (it stats every
  template file on every render) and template misses remembered (Datasette
  looks up ``table-<db>-<table>.html`` and the like, which do not exist, on
  every page); Datasette's per-request schema refresh (two SQL queries per
  database per page) skipped once it has run, while every database is
  immutable; and each immutable database's answers to Datasette's schema
  questions (columns, keys, foreign keys, full-text table, the stored
  spelling of a table name) kept: a table or row page then asks SQLite for
  its rows and their count only, instead of 7-15 trips to the SQL threads;
  and a domain's row page reads how many images link to it from the count
  the build stored (``LINK_COUNTS``) instead of counting them.

A database that can change keeps all of Datasette's own behaviour: none of this applies to it.
"""
import collections
import copy
from pathlib import Path
from urllib.parse import parse_qsl

from datasette.version import __version__ as datasette_version
from datasette.views.index import IndexView
from jinja2 import BaseLoader, TemplateNotFound

from .config import plugin_config

TEMPLATES_DIR = Path(__file__).parent / "templates"
CACHE_ENTRIES = 512  # responses kept per process, their bodies' bytes bounded by page_cache_mb
CACHE_MAX_BODY = 512 * 1024  # bytes; a bigger response is not kept
MISSES_KEPT = 10_000  # template names remembered as missing


# ---------------------------------------------------------------- start-up


def tune(datasette):
    """Called from the startup hook, after every prepare_jinja2_environment."""
    env = datasette.jinja_env
    env.auto_reload = False
    if not isinstance(env.loader, RememberMisses):
        env.loader = RememberMisses(env.loader)
    if not getattr(datasette, "_laion_refresh_once", False):
        datasette.refresh_schemas = refresh_schemas_once(datasette, datasette.refresh_schemas)
        datasette._laion_refresh_once = True
    for name, db in datasette.databases.items():
        if not db.is_mutable and not db.is_memory and name != "_internal":
            remember_schema(db)


class RememberMisses(BaseLoader):
    """A template loader that asks ``loader`` once per missing name: the
    template files do not change while the server runs."""

    def __init__(self, loader):
        self.loader = loader
        self.missing = set()

    def _miss(self, name):
        if len(self.missing) < MISSES_KEPT:
            self.missing.add(name)

    def get_source(self, environment, template):
        if template in self.missing:
            raise TemplateNotFound(template)
        try:
            return self.loader.get_source(environment, template)
        except TemplateNotFound:
            self._miss(template)
            raise

    def load(self, environment, name, globals=None):
        if name in self.missing:
            raise TemplateNotFound(name)
        try:
            return self.loader.load(environment, name, globals)
        except TemplateNotFound:
            self._miss(name)
            raise

    def list_templates(self):
        return self.loader.list_templates()


def refresh_schemas_once(datasette, refresh_schemas):
    """Datasette's refresh_schemas, run while any database can change (or
    the set of databases has changed since it last ran), else skipped."""
    refreshed_for = None

    async def refresh():
        nonlocal refreshed_for
        databases = tuple(datasette.databases.items())
        if databases == refreshed_for:
            return
        await refresh_schemas()
        if all(not db.is_mutable for name, db in databases if name != "_internal"):
            refreshed_for = databases

    return refresh


# The schema questions Datasette asks of a database on every table, row and
# database page, each a trip to the SQL threads (where it waits behind the
# searches): answered once per immutable database and kept.
SCHEMA_METHODS = (
    "attached_databases", "table_exists", "table_names", "table_columns", "table_column_details",
    "primary_keys", "fts_table", "label_column_for_table", "foreign_keys_for_table", "hidden_table_names",
    "view_names", "get_all_foreign_keys", "get_table_definition", "get_view_definition",
)
SCHEMA_ANSWERS_KEPT = 1_000  # per method: table names come from URLs


# Datasette 0.65.5 looks up the stored spelling of a table's name in
# sqlite_master on every view-table permission check (several per page).
NAME_SPELLING_SQL = "select name from sqlite_master where type in ('table', 'view') and name = ? collate nocase"


# The row page of a domain (or registered domain) counts the rows that link
# to it: Datasette asks SQLite, which reads the whole range of the
# images.domain_id index (1.3M entries, 50 ms, for the biggest host). The
# build stored those counts: domain.image_counts is the number of images
# with that domain_id, registered_domain.hosts that of its domain rows.
LINK_COUNTS = {
    "select (select count(*) from images where domain_id=:id)":
        "select coalesce((select image_counts from domain where id = :id), 0)",
    "select (select count(*) from domain where registered_domain_id=:id)":
        "select coalesce((select hosts from registered_domain where id = :id), 0)",
}
BUILT_HERE_SQL = "select 1 from sqlite_master where type = 'table' and name = 'build_info'"


def remember_schema(db):
    """Keep the answers of ``db``'s schema methods and of its table-name
    look-ups (the database is immutable); each caller gets its own copy.
    Instance attributes, calling the class's methods when they must ask."""
    if getattr(db, "_laion_schema_kept", False):
        return
    for name in SCHEMA_METHODS:
        if hasattr(type(db), name):
            setattr(db, name, _remembered(db, name))
    db.execute = _known_queries(db)
    db._laion_schema_kept = True


def _remembered(db, name):
    answers = {}

    async def remembered(*args, **kwargs):
        key = (args, tuple(sorted(kwargs.items())))
        try:
            answer = answers[key]
        except KeyError:
            answer = await getattr(type(db), name)(db, *args, **kwargs)
            if len(answers) < SCHEMA_ANSWERS_KEPT:
                answers[key] = answer
        return copy.deepcopy(answer)

    remembered.__name__ = name
    return remembered


def _known_queries(db):
    """``db.execute``, with the table-name look-ups kept, and the counts of
    LINK_COUNTS read from the build's columns (in a database this project
    built: one with its build_info table)."""
    spellings = {}  # (name,) -> Results, which its callers only read
    built_here = []

    async def execute(sql, params=None, **kwargs):
        if not kwargs and isinstance(params, dict) and sql in LINK_COUNTS:
            if not built_here:
                built_here.append(bool((await type(db).execute(db, BUILT_HERE_SQL)).rows))
            if built_here[0]:
                return await type(db).execute(db, LINK_COUNTS[sql], params)
        if kwargs or not isinstance(params, tuple) or " ".join(sql.split()) != NAME_SPELLING_SQL:
            return await type(db).execute(db, sql, params, **kwargs)
        try:
            return spellings[params]
        except KeyError:
            results = await type(db).execute(db, sql, params)
            if len(spellings) < SCHEMA_ANSWERS_KEPT:
                spellings[params] = results
            return results

    return execute


# ---------------------------------------------------------------- home page


def uses_own_index(datasette):
    """True when index.html is the project's (which shows no database list)."""
    try:
        template = datasette.jinja_env.get_template("index.html")
    except TemplateNotFound:
        return False
    return template.filename is not None and Path(template.filename).parent == TEMPLATES_DIR


class HomeView(IndexView):
    """Datasette's home page (permissions, headers, template, context), less
    the database list that the project's index.html does not show. The JSON
    (``/.json``), or another index.html (``--template-dir``), is Datasette's."""

    async def get(self, request):
        if request.url_vars.get("format") or not uses_own_index(self.ds):
            return await super().get(request)
        await self.ds.ensure_permissions(request.actor, ["view-instance"])
        return await self.render(
            ["index.html"],
            request=request,
            context={
                "databases": [],
                "metadata": self.ds.metadata(),
                "datasette_version": datasette_version,
                "private": not await self.ds.permission_allowed(None, "view-instance", default=True),
            },
        )


async def home(datasette, request):
    """The route of ``/`` (``register_routes``; before Datasette's own)."""
    return await HomeView(datasette).dispatch_request(request)


# ---------------------------------------------------------------- page cache


def asgi_wrapper(datasette, outer):
    """The plugin's ASGI wrapper: ``outer`` (the guard and the search) around
    the page cache around Datasette."""

    def wrap(app):
        return outer(PageCache(datasette, app))

    return wrap


def _header(scope, name):
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value
    return None


# Query-string parameters that choose how a page is shown, not what it
# holds: a URL with only these names a page of the site, from a set small
# enough to be worth keeping (sort orders, page sizes, shapes, next pages).
PRESENTATION_PARAMS = frozenset({
    "_sort", "_sort_desc", "_size", "_next", "_shape", "_nl", "_labels", "_nolabels", "_json", "_col", "_nocol",
    "_nocount", "_nofacet", "_show_hidden", "_hide_sql", "_show_sql", "_extra", "_trace_none",
})


class PageCache:
    """Whole responses of the pages that depend only on the immutable data,
    for anonymous GETs; see the module's docstring."""

    def __init__(self, datasette, app, entries=CACHE_ENTRIES, max_body=CACHE_MAX_BODY, max_bytes=None):
        self.datasette = datasette
        self.app = app
        self.entries = entries
        self.max_body = max_body
        self.max_bytes = max_bytes
        self.bytes = 0
        self.cache = collections.OrderedDict()
        self._paths_for = None
        self._pages = frozenset()
        self._listings = frozenset()
        self.hits = self.misses = 0

    def _known(self):
        """(pages, listing prefixes): the home page and each immutable
        database's page, HTML and JSON; and each such database's URL
        followed by a slash, under which its table, view and canned-query
        pages are listings."""
        databases = tuple(self.datasette.databases.items())
        if databases != self._paths_for:
            urls = self.datasette.urls
            pages, listings = {urls.instance()}, set()
            for name, db in databases:
                if not db.is_mutable and name != "_internal":
                    pages.add(urls.database(name))
                    pages.add(urls.database(name, format="json"))
                    listings.add(urls.database(name) + "/")
            self._pages = frozenset(p.encode("latin-1") for p in pages)
            self._listings = frozenset(p.encode("latin-1") for p in listings)
            self._paths_for = databases
        return self._pages, self._listings

    def _is_listing(self, path, listings):
        """``/<db>/<table, view or canned query>`` or its ``.json``: one
        segment under an immutable database (a row page has two)."""
        head, slash, name = path.rpartition(b"/")
        if not name or head + slash not in listings:
            return False
        _, dot, extension = name.partition(b".")  # Datasette tilde-encodes dots in names
        return not dot or extension == b"json"

    def key(self, scope):
        """The cache key of a request that may be answered from the cache, else None."""
        if scope["type"] != "http" or scope.get("method") != "GET":
            return None
        if self.max_bytes is None:  # the configuration is read at the first request
            self.max_bytes = int(plugin_config(self.datasette)["page_cache_mb"] * 1024 * 1024)
        if not self.max_bytes:
            return None
        path = scope.get("raw_path") or scope.get("path", "").encode("latin-1")
        path = path.partition(b"?")[0]
        pages, listings = self._known()
        page = path in pages
        if not page and not self._is_listing(path, listings):
            return None
        if _header(scope, b"cookie") is not None or _header(scope, b"authorization") is not None:
            return None  # someone's: their actor, messages, CSRF token
        query = scope.get("query_string", b"")
        names = {name for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)}
        if "sql" in names:
            return None  # a query, not the page
        if not page and not names <= PRESENTATION_PARAMS:
            return None  # filters, searches, canned-query parameters: values a visitor chose
        return (path, query, _header(scope, b"host"), scope.get("scheme"))

    async def __call__(self, scope, receive, send):
        key = self.key(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        cached = self.cache.get(key)
        if cached is not None:
            self.cache.move_to_end(key)
            self.hits += 1
            start, body = cached
            await send(dict(start, headers=[*start["headers"], (b"x-laion-cache", b"hit")]))
            await send({"type": "http.response.body", "body": body})
            return
        self.misses += 1
        messages = []
        size = 0

        async def keep(message):
            nonlocal messages, size
            if messages is not None:
                if message["type"] == "http.response.start":
                    messages.append(message)
                elif message["type"] == "http.response.body":
                    size += len(message.get("body", b""))
                    messages.append(message)
                    if size > self.max_body:
                        messages = None
                    elif not message.get("more_body"):
                        self.store(key, messages)
                        messages = None
            await send(message)

        await self.app(scope, receive, keep)

    def store(self, key, messages):
        start, *bodies = messages
        if start.get("status") != 200 or not bodies:
            return
        if any(name.lower() == b"set-cookie" for name, _ in start.get("headers") or ()):
            return  # a cookie (a CSRF token) is for one visitor only
        start = {"type": "http.response.start", "status": 200, "headers": list(start.get("headers") or ())}
        body = b"".join(m.get("body", b"") for m in bodies)
        if key in self.cache:
            self.bytes -= len(self.cache[key][1])
        self.cache[key] = (start, body)
        self.bytes += len(body)
        self.cache.move_to_end(key)
        while len(self.cache) > self.entries or self.bytes > self.max_bytes:
            self.bytes -= len(self.cache.popitem(last=False)[1][1])
