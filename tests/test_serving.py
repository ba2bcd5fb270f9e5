"""Serving under load: worker processes (serving.py) and the cheaper home and
database pages, template look-ups and schema questions (fastpaths.py)."""
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from datasette.cli import cli as datasette_cli
from datasette.database import Database
from datasette.views.database import DatabaseView
from jinja2 import DictLoader, Environment, TemplateNotFound

from datasette_laion import config, fastpaths, serving, site

DB = "laion-aesthetic-6pls"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def invoke(*args):
    return CliRunner().invoke(datasette_cli, ["laion", *map(str, args)], catch_exceptions=False)


# -- worker processes --------------------------------------------------------


def children(pid):
    """{pid: command line} of the processes whose parent is ``pid``."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def holds_open(pid, path):
    """True when ``pid`` has ``path`` open."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False


def wait_for(condition, seconds=30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def start_server(tmp_path):
    started = []

    def start(*args, env=None):
        port = free_port()
        log = open(tmp_path / f"server-{port}.log", "w")
        process = subprocess.Popen(
            [sys.executable, "-m", "datasette_laion", "serve", *map(str, args), "-p", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True,
        )
        started.append(process)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/-/laion/health", timeout=2).json()["status"] == "ready":
                    break
            except (httpx.TransportError, ValueError):
                pass
            assert process.poll() is None, (tmp_path / f"server-{port}.log").read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        return process, base

    yield start
    for process in started:  # the supervisor and its workers: a process group of their own
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_workers_share_the_port_and_stop_cleanly(start_server, built, stop):
    process, base = start_server(built.path, "--workers", "2")
    kids = children(process.pid)
    workers = [pid for pid, cmd in kids.items() if "spawn_main" in cmd]
    assert len(workers) == 2, kids
    assert "uvicorn" in Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()  # the supervisor
    # each worker ran the startup and `datasette serve`'s database checks: it
    # holds the database open (as Datasette opens it: immutable, see below)
    wait_for(lambda: all(holds_open(pid, built.path.resolve()) for pid in workers))
    assert [(d["name"], d["is_mutable"]) for d in httpx.get(base + "/-/databases.json").json()] == [(DB, False)]
    assert httpx.get(f"{base}/{DB}/images.json?_search=dog&_shape=array").json()
    process.send_signal(stop)
    assert process.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in kids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in kids if alive(pid)], "orphans left behind"
    with pytest.raises(httpx.TransportError):
        httpx.get(base + "/-/laion/health", timeout=2)


def test_workers_stop_when_the_supervisor_is_killed(start_server, built):
    """SIGKILL to the supervisor (an OOM kill, a hard stop): the kernel tells
    the workers, which stop; none is left serving the port on its own."""
    process, base = start_server(built.path, "--workers", "2")
    workers = [pid for pid, cmd in children(process.pid).items() if "spawn_main" in cmd]
    assert len(workers) == 2
    process.kill()
    process.wait()
    wait_for(lambda: not any(alive(pid) for pid in workers), seconds=15)
    with pytest.raises(httpx.TransportError):
        httpx.get(base + "/-/laion/health", timeout=2)


def test_workers_share_one_signing_secret(start_server, built):
    """A CSRF token (or signed cookie) from any worker is good in every one:
    the secret is generated once and handed to all, in their environment."""
    process, base = start_server(built.path, "--workers", "2", env={"DATASETTE_SECRET": ""})
    workers = [pid for pid, cmd in children(process.pid).items() if "spawn_main" in cmd]
    secrets = {
        next(v for k, _, v in (e.partition(b"=") for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
             if k == b"DATASETTE_SECRET")
        for pid in workers
    }
    assert len(secrets) == 1 and len(secrets.pop()) == 64
    for _ in range(12):  # new connections: the kernel hands them to either worker
        with httpx.Client(base_url=base) as client:
            page = client.get("/-/messages")
            token = re.search(r'name="csrftoken" value="([^"]+)"', page.text).group(1)
        with httpx.Client(base_url=base, cookies={"ds_csrftoken": page.cookies["ds_csrftoken"]}) as client:
            posted = client.post("/-/messages", data={"csrftoken": token, "message": "hi", "message_type": "INFO"})
        assert posted.status_code == 302, posted.text


def test_default_workers():
    assert 1 <= serving.default_workers() <= serving.MAX_DEFAULT_WORKERS


def test_serve_help():
    result = invoke("serve", "--help")
    assert result.exit_code == 0
    assert "--workers INTEGER RANGE" in result.output
    assert "--access-log / --no-access-log" in result.output and "[default: no-access-log]" in result.output
    assert "laion serve [OPTIONS] [DB] [SERVE_OPTIONS]..." in result.output


def test_one_process_options_go_to_datasette_serve(built):
    result = invoke("serve", built.path, "--get", "/-/laion/health")
    assert result.exit_code == 0 and json.loads(result.output)["status"] == "ready"
    result = invoke("serve", built.path, "--workers", "2", "--get", "/")
    assert result.exit_code == 2
    assert result.output.endswith("Error: --get runs in one process: use --workers 1 with it\n")


def test_serve_usage_errors(tmp_path):
    result = invoke("serve")
    assert result.exit_code == 2
    assert "Error: Missing argument 'DB' (or a --metadata file whose datasette-laion plugin configuration has a " \
           "database_path)." in result.output
    result = invoke("serve", tmp_path / "missing.db")
    assert result.exit_code == 2 and f"Error: Invalid value for 'DB': File '{tmp_path / 'missing.db'}' does not exist." \
        in result.output


def test_bad_plugin_config_stops_before_anything_listens(built, tmp_path):
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps({"plugins": {"datasette-laion": {"safe_mode_threshold": 7}}}))
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "datasette_laion", "serve", str(built.path), "-m", str(metadata), "-p", str(port),
         "--workers", "2"], capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.endswith("Error: datasette-laion: safe_mode_threshold must be a number from 0 to 1, not 7\n")


async def lifespan(app, messages):
    """Sends ``messages`` to ``app``'s lifespan; returns what it answered."""
    queue = asyncio.Queue()
    for message in messages:
        queue.put_nowait(message)
    sent = []

    async def send(message):
        sent.append(message["type"])

    await asyncio.wait_for(app({"type": "lifespan", "asgi": {"version": "3.0"}}, queue.get, send), 30)
    return sent


@pytest.mark.asyncio
async def test_worker_app_starts_datasette_before_serving(built, monkeypatch):
    args = ["-i", str(built.path), "-m", str(site.METADATA_PATH), "--inspect-file", str(built.inspect_path),
            *site.setting_args()]
    monkeypatch.setenv(serving.ENV_OPTIONS, json.dumps({"args": args}))
    app = serving.worker_app()
    assert app.datasette.databases[DB].is_mutable is False
    sent = await lifespan(app, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert app.datasette._startup_invoked and app.datasette.jinja_env.auto_reload is False
    response = await app.datasette.client.get("/-/laion/health")
    assert response.json()["status"] == "ready"


@pytest.mark.asyncio
async def test_worker_app_reports_a_failed_startup():
    from datasette.app import Datasette

    ds = Datasette(metadata={"plugins": {"datasette-laion": {"safe_mode_threshold": 7}}})
    app = serving.WorkerApp(ds)
    sent = await lifespan(app, [{"type": "lifespan.startup"}])
    assert sent == ["lifespan.startup.failed"]
    assert app.app is None


# -- the home page -----------------------------------------------------------


async def get(ds, path, **kwargs):
    return await ds.client.get(path, **kwargs)


@pytest.mark.asyncio
async def test_home_page_is_datasettes(ds, monkeypatch):
    """The same page Datasette's IndexView renders, without its SQL."""
    ours = await get(ds, "/", cookies={"visitor": "1"})  # a cookie: not from the cache
    monkeypatch.setattr(fastpaths, "uses_own_index", lambda datasette: False)
    theirs = await get(ds, "/", cookies={"visitor": "1"})
    assert ours.status_code == theirs.status_code == 200
    assert ours.text == theirs.text
    assert dict(ours.headers) == dict(theirs.headers)
    assert "<title>LAION-Aesthetics" in ours.text and f'href="/{DB}/images"' in ours.text
    # nothing on it for a visitor to post, so nothing carries a CSRF token (see the page cache)
    assert "csrftoken" not in ours.text and 'method="post"' not in ours.text.lower()
    assert (await get(ds, "/.json")).json()[DB]["tables_count"] > 5  # the JSON is Datasette's


@pytest.fixture
def sql_calls(monkeypatch):
    """Call it to start counting trips to the SQL threads: the list it
    returns gets each trip's database name."""

    def start():
        calls = []
        original = Database.execute_fn

        async def counting(self, fn):
            calls.append(self.name)
            return await original(self, fn)

        monkeypatch.setattr(Database, "execute_fn", counting)
        return calls

    return start


@pytest.mark.asyncio
async def test_home_page_asks_no_sql(ds, sql_calls):
    await get(ds, "/")
    calls = sql_calls()
    assert (await get(ds, "/", cookies={"visitor": "1"})).status_code == 200
    assert calls == []


@pytest.mark.asyncio
async def test_another_index_template_gets_datasettes_index(built, tmp_path):
    (tmp_path / "index.html").write_text("{% for database in databases %}[{{ database.name }}: "
                                         "{{ database.tables_count }} tables]{% endfor %}")
    ds = site.make_datasette(built.path, built.inspect_path, template_dir=str(tmp_path))
    response = await ds.client.get("/")
    assert re.fullmatch(rf"\[{DB}: \d+ tables\]", response.text)


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


@pytest.fixture
def cache_with(built):
    """A PageCache in front of a fake app that counts its calls."""
    from datasette.app import Datasette

    datasette = Datasette(immutables=[str(built.path)])

    def make(**kwargs):
        calls = []
        cache = fastpaths.PageCache(datasette, fake_app(calls=calls, **kwargs))
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
    cache, calls = cache_with(body=b"x" * (fastpaths.CACHE_MAX_BODY + 1))
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
    for i in range(fastpaths.CACHE_ENTRIES * 2):
        await call(cache, scope(query=f"x={i}".encode()))
    assert len(cache.cache) == fastpaths.CACHE_ENTRIES


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
    cache = fastpaths.PageCache(Datasette(immutables=[str(built.path)], metadata=metadata), fake_app(calls=calls))
    for _ in range(2):
        await call(cache, scope())
    assert len(calls) == 2 and not cache.cache


@pytest.mark.asyncio
async def test_page_cache_bounds_its_bytes(cache_with):
    cache, calls = cache_with(body=b"x" * 1000)
    cache.max_bytes = 10_500
    for i in range(30):
        await call(cache, scope(path=f"/{DB}/images", query=f"_next={i}".encode()))
    assert len(cache.cache) == 10 and cache.bytes == 10_000
    assert [key[1] for key in cache.cache] == [f"_next={i}".encode() for i in range(20, 30)]  # the newest


# -- templates and schema ------------------------------------------------------


def test_template_misses_are_asked_once():
    asked = []

    class Counting(DictLoader):
        def get_source(self, environment, template):
            asked.append(template)
            return super().get_source(environment, template)

    env = Environment(loader=fastpaths.RememberMisses(Counting({"table.html": "{{ 1 + 1 }}"})))
    env.auto_reload = False
    for _ in range(3):
        assert env.select_template(["table-db-images.html", "table.html"]).render() == "2"
    assert asked == ["table-db-images.html", "table.html"]
    with pytest.raises(TemplateNotFound):
        env.get_template("table-db-images.html")
    assert asked == ["table-db-images.html", "table.html"]


@pytest.mark.asyncio
async def test_table_and_row_pages_ask_the_schema_once(ds, sql_calls):
    paths = [f"/{DB}/domain?_sort_desc=image_counts", f"/{DB}/domain/3", f"/{DB}/artists.json"]
    cookies = {"visitor": "1"}  # rendered each time, not answered from the page cache
    first = [await get(ds, p, cookies=cookies) for p in paths]
    calls = sql_calls()
    for path, before in zip(paths, first):
        calls.clear()
        response = await get(ds, path, cookies=cookies)
        assert response.status_code == 200 and without_timing(response.text) == without_timing(before.text)
        assert len(calls) <= 2, (path, len(calls))  # the rows and their count; nothing about the schema


@pytest.mark.asyncio
async def test_schema_answers_are_copies(ds):
    db = ds.get_database(DB)
    columns = await db.table_columns("domain")
    columns.append("junk")
    assert "junk" not in await db.table_columns("domain")


@pytest.mark.asyncio
async def test_schema_refresh_runs_again_for_a_mutable_database(built, monkeypatch):
    ds = site.make_datasette(built.path, built.inspect_path)
    runs = []
    original = type(ds)._refresh_schemas

    async def counting(self):
        runs.append(1)
        return await original(self)

    monkeypatch.setattr(type(ds), "_refresh_schemas", counting)
    for _ in range(3):
        await ds.client.get(f"/{DB}/domain/1.json")
    assert len(runs) == 1
    ds.add_memory_database("scratch")
    for _ in range(3):
        await ds.client.get(f"/{DB}/domain/1.json")
    assert len(runs) == 4


@pytest.mark.parametrize("value", [-1, "lots", True, 10_000])
def test_page_cache_size_is_checked(value, monkeypatch):
    monkeypatch.delenv("DATASETTE_LAION_PAGE_CACHE_MB", raising=False)
    with pytest.raises(config.ConfigError, match="page_cache_mb must be a number of megabytes"):
        config.validate({**config.DEFAULTS, "page_cache_mb": value})
    monkeypatch.setenv("DATASETTE_LAION_PAGE_CACHE_MB", "lots")
    with pytest.raises(config.ConfigError, match="DATASETTE_LAION_PAGE_CACHE_MB must be a number"):
        config.validate(dict(config.DEFAULTS))


def test_table_rows_are_written_as_datasettes_template_writes_them(ds):
    """Our _table.html writes its rows with a filter; the markup is that of
    Datasette's own template, values escaped alike (Markup kept as it is)."""
    from markupsafe import Markup

    asyncio.run(ds.invoke_startup())  # the plugin's filter is in the environment
    columns = [{"name": n, "sortable": False, "is_pk": False, "type": "TEXT", "notnull": 0, "description": None}
               for n in ("rowid", "text", "Odd name", "n")]
    values = [
        (1, '<script>alert("x")</script> & \'quotes\'', Markup('<a href="/x">x</a>'), None),
        (2, "emoji 🐱 and \u200b", "", 3.25),
        (3, 'x" onmouseover="alert(1)', Markup("&nbsp;"), -7),
    ]
    rows = [[{"column": c["name"], "value": v, "raw": v, "value_type": type(v).__name__.lower()}
             for c, v in zip(columns, row)] for row in values]
    context = {"display_rows": rows, "display_columns": columns, "request": None, "sort": None, "sort_desc": None}
    ours = ds.jinja_env.get_template("_table.html").render(context)
    theirs = ds.jinja_env.get_template("default:_table.html").render(context)

    def squeezed(html):
        return re.sub(r">\s+<", "><", html).strip()

    assert ours != theirs  # two templates (the rows' whitespace differs)
    assert squeezed(ours) == squeezed(theirs)
    assert "<script>" not in ours and "&lt;script&gt;" in ours and '<a href="/x">x</a>' in ours


def test_a_server_process_does_not_load_arrow(built):
    """Arrow (~50 MB resident) is the build's: a started site that has served
    its pages has not imported it, so each worker stays small."""
    code = f"""
import asyncio, sys
from datasette_laion import site
ds = site.make_datasette({str(built.path)!r}, {str(built.inspect_path)!r})
async def visit():
    await ds.invoke_startup()
    for path in ["/", "/{DB}", "/{DB}/images?_search=dog", "/{DB}/images", "/-/laion/stats", "/-/laion/mywork?q=x"]:
        assert (await ds.client.get(path)).status_code == 200, path
asyncio.run(visit())
print(sorted(m for m in sys.modules if m.split(".")[0] == "pyarrow"))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


@pytest.mark.parametrize("value", [-1, "many", 2.5, True])
def test_counts_kept_is_checked(value, monkeypatch):
    monkeypatch.delenv("DATASETTE_LAION_COUNTS_KEPT", raising=False)
    with pytest.raises(config.ConfigError, match="counts_kept must be a whole number"):
        config.validate({**config.DEFAULTS, "counts_kept": value})
    monkeypatch.setenv("DATASETTE_LAION_COUNTS_KEPT", "0")
    assert config.validate(dict(config.DEFAULTS))["counts_kept"] == 0


@pytest.mark.asyncio
async def test_row_pages_count_their_links_from_the_builds_figures(ds, db, monkeypatch):
    """A domain's row page says how many images link to it (and a registered
    domain's, how many hosts) from the counts the build stored, not by
    counting the images.domain_id index; the figures are the true counts."""
    true_images = dict(db.execute("select domain_id, count(*) from images where domain_id is not null group by domain_id"))
    true_hosts = dict(db.execute("select registered_domain_id, count(*) from domain group by registered_domain_id"))
    ids = [r[0] for r in db.execute("select id from domain order by id limit 20")]
    ids += [r[0] for r in db.execute("select id from domain order by id desc limit 20")]
    calls, original = [], Database.execute

    async def noting(self, sql, *args, **kwargs):
        if self.name == DB:
            calls.append(sql)
        return await original(self, sql, *args, **kwargs)

    monkeypatch.setattr(Database, "execute", noting)
    for table, row_ids, truth in (("domain", ids, true_images), ("registered_domain", ids[:10], true_hosts)):
        for row_id in row_ids:
            calls.clear()
            body = (await get(ds, f"/{DB}/{table}/{row_id}.json?_extras=foreign_key_tables")).json()
            (links,) = body["foreign_key_tables"]
            assert links["count"] == truth.get(row_id, 0), (table, row_id)
            assert not [c for c in calls if "count(*)" in c], [c for c in calls if "count(*)" in c]
    # a missing row: Datasette's 404, as before
    assert (await get(ds, f"/{DB}/domain/99999999")).status_code == 404


@pytest.mark.asyncio
async def test_link_counts_of_other_databases_are_counted(tmp_path):
    """Another immutable database with tables of the same names (not built
    by this project: no build_info) gets Datasette's own count."""
    import sqlite3

    from datasette.app import Datasette

    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        create table domain (id integer primary key, domain text, image_counts integer);
        create table images (url text, domain_id integer references domain(id));
        insert into domain values (1, 'example.com', 999);
        insert into images values ('https://example.com/a.jpg', 1), ('https://example.com/b.jpg', 1);
    """)
    conn.commit()
    conn.close()
    other = Datasette(immutables=[str(path)])
    await other.invoke_startup()
    body = (await other.client.get("/other/domain/1.json?_extras=foreign_key_tables")).json()
    assert body["foreign_key_tables"][0]["count"] == 2
