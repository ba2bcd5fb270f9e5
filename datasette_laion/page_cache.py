"""Whole pages of the LAION site, rendered once per process and kept.

Their content depends on nothing but their URL and the immutable LAION
database: the home page, the LAION database's page, and its listings, the
pages of a table, view or canned query whose query string only says how to
show them (sort, page size, next page, JSON shape: no filter, search or
parameter value a visitor typed; PRESENTATION_PARAMS), HTML and JSON. Those
come from a small set of URLs that many visitors ask for (top domains, the
names tables, the first pages). Only anonymous GETs (no cookie, no
Authorization header) are served from it or stored in it, only whole 200
responses that set no cookie, and never a SQL query (``?sql=``); keyed by
path, query string, Host and scheme (the page's absolute JSON link), bounded
in entries and in bytes (``page_cache_mb``, 0: off). A page served from it
has the header ``x-laion-cache: hit``. No other database's page is kept.
"""
import collections

from . import sites
from .config import plugin_config

CACHE_ENTRIES = 512  # responses kept per process, their bodies' bytes bounded by page_cache_mb
CACHE_MAX_BODY = 512 * 1024  # bytes; a bigger response is not kept


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

    def __init__(self, datasette, entries=CACHE_ENTRIES, max_body=CACHE_MAX_BODY, max_bytes=None):
        self.datasette = datasette
        self.entries = entries
        self.max_body = max_body
        self.max_bytes = max_bytes
        self.bytes = 0
        self.cache = collections.OrderedDict()
        self._paths_for = None  # the sites.sites() answer the paths are for
        self._pages = frozenset()
        self._listings = frozenset()
        self.hits = self.misses = 0

    def _known(self):
        """(pages, listing prefixes): the home page and each LAION database's
        page, HTML and JSON; and each such database's URL followed by a
        slash, under which its table, view and canned-query pages are
        listings (none for a database that can change)."""
        found = sites.sites(self.datasette)
        if found is not self._paths_for:
            urls = self.datasette.urls
            pages, listings = {urls.instance()}, set()
            for name in found:
                if not self.datasette.databases[name].is_mutable:
                    pages.add(urls.database(name))
                    pages.add(urls.database(name, format="json"))
                    listings.add((urls.database(name) + "/").encode("latin-1"))
            self._pages = frozenset(p.encode("latin-1") for p in pages)
            self._listings = frozenset(listings)
            self._paths_for = found
        return self._pages, self._listings

    @staticmethod
    def _is_listing(path, listings):
        """``/<db>/<table, view or canned query>`` or its ``.json``: one
        segment under a LAION database (a row page has two)."""
        head, slash, name = path.rpartition(b"/")
        if not name or head + slash not in listings:
            return False
        _, dot, extension = name.partition(b".")  # Datasette tilde-encodes dots in names
        return not dot or extension == b"json"

    def key(self, scope, names):
        """The cache key of a request (``names``: the names in its query
        string) that may be answered from the cache, else None."""
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
        if "sql" in names:
            return None  # a query, not the page
        if not page and not names <= PRESENTATION_PARAMS:
            return None  # filters, searches, canned-query parameters: values a visitor chose
        return (path, scope.get("query_string", b""), _header(scope, b"host"), scope.get("scheme"))

    async def serve(self, key, app, scope, receive, send):
        """Answer from the cache, or from ``app`` (and keep its answer)."""
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

        await app(scope, receive, keep)

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
