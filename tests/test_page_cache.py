"""The LAION site's home page and page cache (page_cache.py, views.home)."""
import json
import re
from urllib.parse import parse_qsl

import pytest
from datasette.views.database import DatabaseView

from datasette_laion import page_cache, site

DB = "laion-aesthetic-6pls"


# -- the home page -----------------------------------------------------------


async def get(ds, path, **kwargs):
    return await ds.client.get(path, **kwargs)


@pytest.mark.asyncio
async def test_home_page(ds):
    """The LAION site's own home page: the search box first, no database
    list; its JSON is Datasette's."""
    response = await get(ds, "/", cookies={"visitor": "1"})  # a cookie: not from the cache
    assert response.status_code == 200
    assert "<title>LAION-Aesthetics" in response.text and f'action="/{DB}/images"' in response.text
    # nothing on it for a visitor to post, so nothing carries a CSRF token (see the page cache)
    assert "csrftoken" not in response.text and 'method="post"' not in response.text.lower()
    assert (await get(ds, "/.json")).json()[DB]["tables_count"] > 5  # the JSON is Datasette's


@pytest.mark.asyncio
async def test_home_page_asks_no_sql(ds, sql_calls):
    await get(ds, "/")
    calls = sql_calls()
    assert (await get(ds, "/", cookies={"visitor": "1"})).status_code == 200
    assert calls == []


@pytest.mark.asyncio
async def test_a_template_dir_can_replace_the_home_page(built, tmp_path):
    """--template-dir comes first: its laion_index.html is the home page."""
    (tmp_path / "laion_index.html").write_text("[home of {{ laion_database }}]")
    ds = site.make_datasette(built.path, built.inspect_path, template_dir=str(tmp_path))
    response = await ds.client.get("/")
    assert response.text == f"[home of {DB}]"


# -- the database page and the page cache --------------------------------------


def without_timing(text):
    text = re.sub(r"Queries took [\d.]+ms", "Queries took ?ms", text)
    return re.sub(r'"query_ms": [\d.e-]+', '"query_ms": 0', text)


@pytest.mark.asyncio
@pytest.mark.parametrize("path", [f"/{DB}", f"/{DB}.json"])
async def test_database_page_is_kept_for_anonymous_visitors(ds, monkeypatch, path, built):
    renders = []
    original = DatabaseView.data

    async def counting(self, request, *args, **kwargs):
        renders.append(request.path)
        return await original(self, request, *args, **kwargs)

    monkeypatch.setattr(DatabaseView, "data", counting)
    first = await get(ds, path + "?_laion_test=1")  # a query string of its own: a new entry
    again = await get(ds, path + "?_laion_test=1")
    fresh = await get(ds, path + "?_laion_test=1", cookies={"visitor": "1"})  # someone's: rendered
    assert len(renders) == 2
    assert first.status_code == again.status_code == fresh.status_code == 200
    assert first.text == again.text
    assert again.headers.pop("x-laion-cache") == "hit" and "x-laion-cache" not in first.headers
    assert dict(first.headers) == dict(again.headers)
    assert without_timing(first.text) == without_timing(fresh.text)  # what Datasette renders
    counts = json.loads(built.inspect_path.read_text())[DB]["tables"]
    if path.endswith(".json"):
        tables = {t["name"]: t["count"] for t in first.json()["tables"]}
        assert tables == {name: t["count"] for name, t in counts.items()}
    else:
        for table in ("images", "domain", "registered_domain", "artists"):
            assert f'<a href="/{DB}/{table}">{table}</a>' in first.text
            assert f"{counts[table]['count']:,} row" in first.text
        assert "csrftoken" not in first.text and 'method="post"' not in first.text.lower()


@pytest.mark.asyncio
async def test_sql_queries_are_not_kept(ds):
    values = set()
    for _ in range(2):
        response = await get(ds, f"/{DB}.json?sql=select+random()+as+r&_shape=array")
        values.add(response.json()[0]["r"])
    assert len(values) == 2


def fake_app(body=b"page", status=200, headers=(), calls=None):
    async def app(scope, receive, send):
        if calls is not None:
            calls.append(scope)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/html"), *headers]})
        await send({"type": "http.response.body", "body": body})

    return app


def scope(path=f"/{DB}", query=b"", method="GET", headers=(), host=b"example.com"):
    return {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": query,
            "scheme": "http", "headers": [(b"host", host), *headers]}


async def call(app, request):
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    await app(request, receive, send)
    return sent


class CacheApp:
    """A PageCache in front of ``app``, as the pipeline puts it (pipeline.py)."""

    def __init__(self, cache, app):
        self.page_cache, self.app = cache, app

    @property
    def cache(self):
        return self.page_cache.cache

    async def __call__(self, scope, receive, send):
        names = frozenset(k for k, _ in parse_qsl(scope.get("query_string", b"").decode(), keep_blank_values=True))
        key = self.page_cache.key(scope, names)
        if key is None:
            await self.app(scope, receive, send)
        else:
            await self.page_cache.serve(key, self.app, scope, receive, send)


@pytest.fixture
def cache_with(built):
    """A PageCache in front of a fake app that counts its calls."""
    from datasette.app import Datasette

    datasette = Datasette(immutables=[str(built.path)])

    def make(**kwargs):
        calls = []
        cache = CacheApp(page_cache.PageCache(datasette), fake_app(calls=calls, **kwargs))
        return cache, calls

    return make


@pytest.mark.asyncio
@pytest.mark.parametrize("case", [
    "cookie", "authorization", "post", "head", "sql", "empty sql", "row page", "filter", "search",
    "canned query parameter", "csv", "other path",
])
async def test_page_cache_passes_on_what_it_must_not_keep(cache_with, case):
    cache, calls = cache_with()
    request = {
        "cookie": scope(headers=[(b"cookie", b"ds_csrftoken=abc")]),
        "authorization": scope(headers=[(b"authorization", b"Bearer x")]),
        "post": scope(method="POST"),
        "head": scope(method="HEAD"),
        "sql": scope(query=b"sql=select+1"),
        "empty sql": scope(query=b"_hide_sql=1&sql="),
        "row page": scope(path=f"/{DB}/images/1"),
        "filter": scope(path=f"/{DB}/images", query=b"_sort=punsafe&punsafe__lt=0.5"),
        "search": scope(path=f"/{DB}/images", query=b"_search=dog"),
        "canned query parameter": scope(path=f"/{DB}/domain_lookup.json", query=b"domain=example.com"),
        "csv": scope(path=f"/{DB}/images.csv"),
        "other path": scope(path="/-/laion/stats"),
    }[case]
    for _ in range(2):
        await call(cache, request)
    assert len(calls) == 2 and not cache.cache
    await call(cache, scope())  # not served what that request got
    assert len(calls) == 3


@pytest.mark.asyncio
async def test_page_cache_never_keeps_a_cookie_or_an_error(cache_with):
    cache, calls = cache_with(headers=[(b"set-cookie", b"ds_csrftoken=abc; Path=/")])
    for _ in range(2):
        sent = await call(cache, scope())
        assert (b"set-cookie", b"ds_csrftoken=abc; Path=/") in sent[0]["headers"]
    assert len(calls) == 2 and not cache.cache
    cache, calls = cache_with(status=500)
    for _ in range(2):
        await call(cache, scope())
    assert len(calls) == 2 and not cache.cache
    cache, calls = cache_with(body=b"x" * (page_cache.CACHE_MAX_BODY + 1))
    for _ in range(2):
        await call(cache, scope())
    assert len(calls) == 2 and not cache.cache


@pytest.mark.asyncio
async def test_page_cache_keys_and_bounds(cache_with):
    cache, calls = cache_with()
    first = await call(cache, scope())
    again = await call(cache, scope())
    assert again[1] == first[1] and again[0]["headers"] == [*first[0]["headers"], (b"x-laion-cache", b"hit")]
    assert len(calls) == 1
    await call(cache, scope(path=f"/{DB}.json"))
    await call(cache, scope(path="/"))
    await call(cache, scope(host=b"other.example"))  # its absolute links differ
    await call(cache, scope(query=b"_show_hidden=1"))
    assert len(calls) == 5
    for i in range(page_cache.CACHE_ENTRIES * 2):
        await call(cache, scope(query=f"x={i}".encode()))
    assert len(cache.cache) == page_cache.CACHE_ENTRIES


@pytest.mark.asyncio
@pytest.mark.parametrize("path, query", [
    (f"/{DB}/images", b""),
    (f"/{DB}/images.json", b"_shape=array&_size=10"),
    (f"/{DB}/domain", b"_sort_desc=image_counts&_next=120"),
    (f"/{DB}/top_domains", b""),
    (f"/{DB}/artist_counts.json", b"_shape=objects"),
])
async def test_page_cache_keeps_listings(cache_with, path, query):
    """Table, view and canned-query pages whose URL carries only how to show
    them (sort, size, shape, next page) are kept; a hit says so."""
    cache, calls = cache_with()
    first = await call(cache, scope(path=path, query=query))
    again = await call(cache, scope(path=path, query=query))
    assert len(calls) == 1
    assert again[1] == first[1]
    assert (b"x-laion-cache", b"hit") in again[0]["headers"]
    assert (b"x-laion-cache", b"hit") not in first[0]["headers"]


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["metadata", "environment"])
async def test_page_cache_can_be_turned_off(built, monkeypatch, how):
    from datasette.app import Datasette

    metadata = {"plugins": {"datasette-laion": {"page_cache_mb": 0 if how == "metadata" else 8}}}
    if how == "environment":
        monkeypatch.setenv("DATASETTE_LAION_PAGE_CACHE_MB", "0")
    calls = []
    cache = CacheApp(page_cache.PageCache(Datasette(immutables=[str(built.path)], metadata=metadata)), fake_app(calls=calls))
    for _ in range(2):
        await call(cache, scope())
    assert len(calls) == 2 and not cache.cache


@pytest.mark.asyncio
async def test_page_cache_bounds_its_bytes(cache_with):
    cache, calls = cache_with(body=b"x" * 1000)
    cache.page_cache.max_bytes = 10_500
    for i in range(30):
        await call(cache, scope(path=f"/{DB}/images", query=f"_next={i}".encode()))
    assert len(cache.cache) == 10 and cache.page_cache.bytes == 10_000
    assert [key[1] for key in cache.cache] == [f"_next={i}".encode() for i in range(20, 30)]  # the newest


