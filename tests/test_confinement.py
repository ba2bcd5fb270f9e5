"""The plugin acts on the LAION database only: another database, served
beside it or alone, gets Datasette's own behaviour; other plugins' menu
links, CSS, JS and body scripts stay on every page, the LAION ones too."""
import sqlite3

import pytest
from datasette import hookimpl
from datasette.app import Datasette
from datasette.plugins import pm

from datasette_laion import site

DB = "laion-aesthetic-6pls"
LAION_ASSETS = ("laion.css", "laion.js")


@pytest.fixture(scope="module")
def other_db(tmp_path_factory):
    """An ordinary database whose tables have the LAION tables' names and
    columns: nothing of the plugin's may apply to them."""
    path = tmp_path_factory.mktemp("other") / "other.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        create table images (url text, text text, punsafe real, aesthetic real, domain_id integer);
        create virtual table images_fts using fts5 (text, content=images);
        create table domain (id integer primary key, domain text, image_counts integer);
    """)
    conn.executemany("insert into images values (?, ?, ?, ?, ?)", [
        (f"https://example.com/{i}.jpg", f"caption {i} dog", 0.9 if i % 2 else 0.1, 6 + i / 100, 1) for i in range(30)
    ])
    conn.execute("insert into images_fts (rowid, text) select rowid, text from images")
    conn.execute("insert into domain values (1, 'example.com', 30)")
    conn.commit()
    conn.close()
    return path


class OtherPlugin:
    """Another plugin's contributions to every page."""

    __name__ = "other_plugin"

    @hookimpl
    def menu_links(self, datasette, actor):
        return [{"href": "/-/other-link", "label": "Other plugin link"}]

    @hookimpl
    def extra_css_urls(self):
        return ["https://example.com/other-plugin.css"]

    @hookimpl
    def extra_js_urls(self):
        return ["https://example.com/other-plugin.js"]

    @hookimpl
    def extra_body_script(self):
        return "var OTHER_PLUGIN = 1;"


@pytest.fixture
def other_plugin():
    plugin = OtherPlugin()
    pm.register(plugin, name="other_plugin")
    yield
    pm.unregister(plugin)


async def pages(ds, paths):
    await ds.invoke_startup()
    return {path: await ds.client.get(path, cookies={"visitor": "1"}) for path in paths}


OTHER_PAGES = ["/", "/other", "/other/images", "/other/images?_search=dog", "/other/images/1", "/other/domain",
               "/other?sql=select+url,+punsafe+from+images+limit+3"]


@pytest.mark.asyncio
async def test_another_database_alone_is_plain_datasette(other_db):
    ds = Datasette(immutables=[str(other_db)])
    got = await pages(ds, OTHER_PAGES)
    for path, response in got.items():
        assert response.status_code == 200, path
        assert not any(asset in response.text for asset in LAION_ASSETS), path
        assert "laion-thumb" not in response.text and "laion-safe-toggle" not in response.text, path
        assert "x-laion-cache" not in response.headers
    assert "other" in got["/"].text and "images" in got["/"].text  # Datasette's index: the database list
    # no LAION thumbnails (datasette-render-image-tags, installed with the
    # plugin, renders .jpg URLs as ever), no rounded scores
    assert '<img src="https://example.com/0.jpg" width="200" loading="lazy">' in got["/other/images"].text
    assert "0.9</td>" in got["/other/images"].text


@pytest.mark.asyncio
async def test_another_database_beside_the_laion_one(other_db, built):
    ds = site.make_datasette(built.path, built.inspect_path)
    ds.add_database(ds.databases[DB].__class__(ds, path=str(other_db), is_mutable=False), name="other")
    got = await pages(ds, OTHER_PAGES[1:] + [
        "/other/images?_sort=text",  # the guard refuses this on the LAION images
        "/other/images.json?_sort_desc=punsafe&_facet=domain_id",
        "/other/images.csv?_stream=on",
    ])
    for path, response in got.items():
        assert response.status_code == 200, (path, response.text[:300])
        assert not any(asset in response.text for asset in LAION_ASSETS), path
        assert "laion-thumb" not in response.text, path
    # the same requests of the LAION database: the plugin's
    laion = await pages(ds, [f"/{DB}/images?_sort=text", f"/{DB}/images?_search=dog"])
    assert laion[f"/{DB}/images?_sort=text"].status_code == 400
    assert "laion-results" in laion[f"/{DB}/images?_search=dog"].text
    # the plugin's SQL functions and limits are the LAION database's only
    bad = await ds.client.get("/other.json?sql=select+domain('https://a.example/x')")
    assert bad.status_code == 400 and "no such function" in bad.json()["error"]
    ok = await ds.client.get(f"/{DB}.json?sql=select+domain('https://a.example/x')+as+d&_shape=array")
    assert ok.json() == [{"d": "a.example"}]


@pytest.mark.asyncio
async def test_other_databases_pages_are_never_kept(other_db, built):
    ds = site.make_datasette(built.path, built.inspect_path)
    ds.add_database(ds.databases[DB].__class__(ds, path=str(other_db), is_mutable=False), name="other")
    await ds.invoke_startup()
    for path in ("/other", "/other/images", "/other/domain.json"):
        for _ in range(2):
            response = await ds.client.get(path)
            assert response.status_code == 200 and "x-laion-cache" not in response.headers


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/", f"/{DB}", f"/{DB}/images", f"/{DB}/images?_search=dog",
                                  f"/{DB}/images?_view=gallery", f"/{DB}/images/1", f"/{DB}/domain",
                                  f"/{DB}/top_domains", "/-/laion/stats", "/-/laion/mywork?q=dog"])
async def test_other_plugins_keep_their_place_on_laion_pages(built, other_plugin, path):
    ds = site.make_datasette(built.path, built.inspect_path)
    response = (await pages(ds, [path]))[path]
    assert response.status_code == 200
    text = response.text
    assert "Other plugin link" in text  # menu_links
    assert "https://example.com/other-plugin.css" in text and "https://example.com/other-plugin.js" in text
    assert "var OTHER_PLUGIN = 1;" in text
    assert "laion.css" in text and "laion.js" in text


@pytest.mark.asyncio
async def test_a_missing_laion_database_is_said_not_a_500(tmp_path):
    metadata = {"plugins": {"datasette-laion": {"database_path": str(tmp_path / "not-there.db")}}}
    ds = Datasette(metadata=metadata)
    await ds.invoke_startup()
    home = await ds.client.get("/")
    assert home.status_code == 200 and "has not been uploaded yet" in home.text
    health = (await ds.client.get("/-/laion/health")).json()
    assert health["status"] == "not uploaded"
    assert (await ds.client.get("/-/laion/stats")).status_code == 503


@pytest.mark.asyncio
async def test_home_page_without_the_laion_database_is_datasettes(tmp_path):
    """Installed but with no LAION database: Datasette's own index, no 500."""
    ds = Datasette(memory=True)
    await ds.invoke_startup()
    response = await ds.client.get("/")
    assert response.status_code == 200 and "_memory" in response.text
    assert not any(asset in response.text for asset in LAION_ASSETS)
