"""Each use of Datasette's internals (compat.py) still takes effect on the installed Datasette."""
import asyncio
import re
import subprocess
import sys

import pytest
from datasette.database import Database
from jinja2 import DictLoader, Environment, TemplateNotFound

from datasette_laion import compat, config, site

DB = "laion-aesthetic-6pls"


async def get(ds, path, **kwargs):
    return await ds.client.get(path, **kwargs)


def without_timing(text):
    text = re.sub(r"Queries took [\d.]+ms", "Queries took ?ms", text)
    return re.sub(r'"query_ms": [\d.e-]+', '"query_ms": 0', text)


# -- templates and schema ------------------------------------------------------


def test_template_misses_are_asked_once():
    asked = []

    class Counting(DictLoader):
        def get_source(self, environment, template):
            asked.append(template)
            return super().get_source(environment, template)

    env = Environment(loader=compat.RememberMisses(Counting({"table.html": "{{ 1 + 1 }}"})))
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


@pytest.fixture
def refresh_runs(monkeypatch):
    """The runs of Datasette's schema refresh, counted (a list)."""
    from datasette.app import Datasette

    runs = []
    original = Datasette._refresh_schemas

    async def counting(self):
        runs.append(1)
        return await original(self)

    monkeypatch.setattr(Datasette, "_refresh_schemas", counting)
    return runs


@pytest.mark.asyncio
async def test_schema_refresh_runs_again_for_a_mutable_database(built, refresh_runs):
    ds = site.make_datasette(built.path, built.inspect_path)
    runs = refresh_runs
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
    """The LAION tables' _table.html writes its rows with a filter; the markup is that of
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
    ours = ds.jinja_env.get_template(f"_table-{DB}-images.html").render(context)  # templating.py
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


# -- one test per use of Datasette's internals (compat.py) ----------------------


def test_every_schema_method_still_exists():
    """keep_schema_answers wraps each method by name: one Datasette renamed
    would silently be asked on every page again."""
    missing = [name for name in compat.SCHEMA_METHODS if not hasattr(Database, name)]
    assert missing == []


@pytest.mark.asyncio
async def test_the_laion_database_keeps_its_schema_answers(ds):
    await ds.invoke_startup()
    db = ds.get_database(DB)
    assert getattr(db, compat.KEPT_MARK) is True
    assert all(name in db.__dict__ for name in compat.SCHEMA_METHODS)
    assert "execute" in db.__dict__


def test_datasette_filters_operators():
    """The guard reads Datasette's filter operators from its Filters class."""
    assert {"exact", "not", "contains", "gt", "gte", "lt", "lte", "in", "notin", "isnull", "notnull",
            "notblank", "like", "glob", "startswith", "endswith"} <= compat.FILTER_LOOKUPS


@pytest.mark.asyncio
async def test_jinja_is_tuned_and_misses_remembered_on_the_site(built):
    ds = site.make_datasette(built.path, built.inspect_path)  # its own: no page asked yet
    await ds.invoke_startup()
    assert ds.jinja_env.auto_reload is False
    assert isinstance(ds.jinja_env.loader, compat.RememberMisses)
    await get(ds, f"/{DB}/registered_domain", cookies={"visitor": "1"})
    assert "table.html" not in ds.jinja_env.loader.missing  # found
    assert "query-laion-aesthetic-6pls.html" not in ds.jinja_env.loader.missing  # never asked yet
    await get(ds, f"/{DB}/top_domains", cookies={"visitor": "1"})
    assert "query-laion-aesthetic-6pls.html" in ds.jinja_env.loader.missing  # asked once, then remembered


@pytest.mark.asyncio
async def test_site_pages_skip_the_schema_refresh(built, refresh_runs):
    """refresh_schemas replaced on the instance: Datasette calls it before
    every page; a rename would refresh on every page again."""
    ds = site.make_datasette(built.path, built.inspect_path)
    runs = refresh_runs
    for path in (f"/{DB}", f"/{DB}/domain.json", f"/{DB}/images/1.json", "/"):
        assert (await ds.client.get(path, cookies={"visitor": "1"})).status_code == 200
    assert len(runs) == 1


def test_serve_instance_builds_what_datasette_serve_builds(built):
    ds = compat.serve_instance([str(built.path), "-i", str(built.path), "--setting", "default_page_size", "7"])
    assert ds.setting("default_page_size") == 7
    asyncio.run(ds.invoke_startup())
    compat.run_sync(lambda: compat.check_databases(ds))


@pytest.mark.asyncio
async def test_table_counts_from_inspect_data(ds):
    counts = compat.table_counts_known(ds.get_database(DB))
    assert counts and counts["images"] > 10_000


@pytest.mark.asyncio
async def test_the_search_knows_the_actor(built):
    """The search is answered before Datasette's router: the actor comes
    from the actor_from_request hooks (here: the signed ds_actor cookie)."""
    from datasette.app import Datasette

    metadata = site.metadata()
    metadata["databases"] = {DB: {"allow": {"id": "root"}}}
    ds = Datasette(immutables=[str(built.path)], metadata=metadata, settings=site.settings())
    await ds.invoke_startup()
    path = f"/{DB}/images.json?_search=dog&_size=1"
    assert (await ds.client.get(path)).status_code == 403
    cookie = ds.sign({"a": {"id": "root"}}, "actor")
    response = await ds.client.get(path, cookies={"ds_actor": cookie})
    assert response.status_code == 200 and response.json()["private"] is True


@pytest.mark.asyncio
async def test_custom_rows_are_objects_in_json_and_values_when_iterated():
    row = compat.CustomRow(["a", "b"])
    row["a"], row["b"] = 1, {"value": 2, "label": "x"}
    assert list(row) == [1, {"value": 2, "label": "x"}]
    response = compat.json_response(compat.MultiParams([["_shape", "arrays"]]), {"rows": [row], "columns": ["a", "b"]})
    assert response.body == '{"rows": [{"a": 1, "b": {"value": 2, "label": "x"}}], "columns": ["a", "b"]}'
