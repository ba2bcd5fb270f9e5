"""Any database `datasette laion build` made is a LAION site, whatever its
file name (sites.py), and several are served side by side, each adapted to
what its source has (site_metadata.py): titles, licence and source from the
profile, canned queries, filters, charts and the words for its order."""
import sqlite3

import pytest
from datasette.app import Datasette

from datasette_laion import build, sample, site, sites

ROWS = 1_500


@pytest.fixture(scope="module")
def databases(tmp_path_factory):
    """name -> built database path: the 6+ schema as `mine.db`, PD12M (no
    scores: source order), DataComp (CLIP similarity first), and COYO built
    with a row filter."""
    found = {}
    for name, profile, options in (
        ("mine", None, {}),
        ("pd12m", "pd12m", {}),
        ("datacomp", "datacomp-1b", {}),
        ("coyo", "coyo-700m", {"min_aesthetic": 5.0}),
    ):
        directory = tmp_path_factory.mktemp(name)
        sample.generate(directory / "parquet", rows=ROWS, files=1, seed=5, profile=profile)
        result = build.build(directory / f"{name}.db", [directory / "parquet"], progress=False, workers=1, **options)
        found[name] = result.path
    return found


def _datasette(paths, metadata=None):
    meta = site.metadata()
    if metadata:
        meta.update(metadata)
    return Datasette(immutables=[str(p) for p in paths], metadata=meta, settings=site.settings())


@pytest.fixture(scope="module")
def several(databases):
    return _datasette([databases["mine"], databases["pd12m"], databases["datacomp"], databases["coyo"]])


def test_recognised_by_build_info_not_by_name(databases, tmp_path):
    ds = _datasette([databases["mine"]])
    assert list(sites.sites(ds)) == ["mine"]
    found = sites.get(ds, "mine")
    assert found.title == "LAION-Aesthetics v2 6+" and found.best_first == "aesthetic"
    # a copy without build_info is an ordinary database, even under the LAION name
    plain = tmp_path / "laion-aesthetic-6pls.db"
    conn = sqlite3.connect(plain)
    conn.execute("create table images (url text, text text)")
    conn.close()
    assert sites.sites(_datasette([plain])) == {}


@pytest.mark.asyncio
async def test_a_single_database_is_the_home_page_search(databases):
    ds = _datasette([databases["pd12m"]])
    home = (await ds.client.get("/")).text
    assert 'action="/pd12m/images"' in home
    assert "<h1>PD12M image search</h1>" in home
    assert "?database=" not in home  # one database: the plugin pages need no choice
    page = await ds.client.get("/pd12m/images?_search=dog")
    assert page.status_code == 200 and "laion-results" in page.text


@pytest.mark.asyncio
async def test_home_lists_every_database(several):
    response = await several.client.get("/")
    assert response.status_code == 200
    home = response.text
    for name, title in (("mine", "LAION-Aesthetics v2 6+"), ("pd12m", "PD12M"), ("datacomp", "DataComp-1B"),
                        ("coyo", "COYO-700M, aesthetic &gt;= 5")):
        assert f'action="/{name}/images"' in home
        assert f'<a href="/{name}">{title}</a>' in home
        assert f"/-/laion/stats?database={name}" in home
    assert "Image-text datasets:" in home
    pd12m = home[home.index('id="dataset-pd12m"'):]
    assert "safe mode has nothing to go on" in pd12m[:pd12m.index("</section>")]


@pytest.mark.asyncio
async def test_each_database_has_its_own_search_and_counts(several, databases):
    for name in ("mine", "pd12m", "datacomp", "coyo"):
        conn = sqlite3.connect(f"file:{databases[name]}?immutable=1", uri=True)
        want = conn.execute("select count(*) from images_fts where images_fts match 'dog'").fetchone()[0]
        total = conn.execute("select count(*) from images").fetchone()[0]
        conn.close()
        data = (await several.client.get(f"/{name}/images.json?_search=dog&_size=5")).json()
        assert data["filtered_table_rows_count"] == want, name
        stats = (await several.client.get(f"/-/laion/stats.json?database={name}")).json()
        assert stats["database"] == name and stats["rows"] == total


@pytest.mark.asyncio
async def test_metadata_from_the_profile(several):
    meta = (await several.client.get("/-/metadata.json")).json()
    pd12m = meta["databases"]["pd12m"]
    assert pd12m["title"] == "PD12M"
    assert pd12m["source"].startswith("PD12M (Spawning/PD12M)") and pd12m["source_url"].startswith("https://")
    assert pd12m["license"] and pd12m["license_url"].startswith("https://")
    assert "in the order of the source's files" in pd12m["description"]
    assert meta["databases"]["mine"]["license"] == "CC-BY 4.0 (LAION metadata)"
    assert "highest CLIP image-caption similarity first" in meta["databases"]["datacomp"]["description"]
    # a column the source lacks is said to be empty; a renamed one names the source's column
    columns = pd12m["tables"]["images"]["columns"]
    assert columns["aesthetic"] == "Not in PD12M: always empty"
    assert "(the source's clip_similarity_vitb32)" in meta["databases"]["coyo"]["tables"]["images"]["columns"]["similarity"]


@pytest.mark.asyncio
async def test_metadata_yml_still_wins(databases):
    ds = _datasette([databases["pd12m"]], {
        "title": "My own title",
        "databases": {"pd12m": {"license": "Mine", "queries": {"image_by_url": {"sql": "select 1 as one"}}}},
    })
    meta = (await ds.client.get("/-/metadata.json")).json()
    assert meta["title"] == "My own title"
    assert meta["databases"]["pd12m"]["license"] == "Mine"
    assert meta["databases"]["pd12m"]["source"].startswith("PD12M")
    rows = (await ds.client.get("/pd12m/image_by_url.json?_shape=array")).json()
    assert rows == [{"one": 1}]


@pytest.mark.asyncio
async def test_canned_queries_list_only_the_columns_the_source_has(several):
    for name, absent, present in (("pd12m", ("aesthetic", "punsafe", "pwatermark", "similarity"), ()),
                                  ("mine", (), ("aesthetic", "punsafe", "pwatermark", "similarity")),
                                  ("datacomp", ("aesthetic", "punsafe", "pwatermark"), ("similarity",))):
        data = (await several.client.get(f"/{name}/image_by_url.json?url=x&_shape=objects")).json()
        assert data["ok"], data
        for column in absent:
            assert column not in data["columns"], (name, column)
        for column in present:
            assert column in data["columns"], (name, column)
        rows = (await several.client.get(f"/{name}/images_for_name.json?name=dog&_shape=array")).json()
        assert rows and all("aesthetic" in r for r in rows) == ("aesthetic" in present)
    database = (await several.client.get("/pd12m.json")).json()
    assert {q["name"] for q in database["queries"]} >= {"images_for_name", "image_by_url", "top_domains"}


@pytest.mark.asyncio
async def test_search_page_offers_what_the_source_has(several):
    pd12m = (await several.client.get("/pd12m/images?_search=dog")).text
    assert 'name="aesthetic__gte"' not in pd12m and 'name="punsafe__lte"' not in pd12m
    assert "in the order of the source&#39;s files (it has no score to rank by)" in pd12m
    assert '<th class="col-aesthetic"' not in pd12m  # always empty: not a table column
    mine = (await several.client.get("/mine/images?_search=dog")).text
    assert 'name="aesthetic__gte"' in mine and 'name="punsafe__lte"' in mine
    assert "best first (highest aesthetic score first)" in mine
    datacomp = (await several.client.get("/datacomp/images?_search=dog")).text
    assert 'name="aesthetic__gte"' not in datacomp
    assert "best first (highest CLIP image-caption similarity first)" in datacomp
    browse = (await several.client.get("/pd12m/images")).text
    assert "aesthetic__gte" not in browse


@pytest.mark.asyncio
async def test_stats_and_mywork_per_database(several):
    pd12m = (await several.client.get("/-/laion/stats?database=pd12m")).text
    assert "<h1>PD12M at a glance</h1>" in pd12m
    assert "Flagged images" not in pd12m and 'id="aesthetic"' not in pd12m
    mine = (await several.client.get("/-/laion/stats?database=mine")).text
    assert "Flagged images" in mine and 'id="aesthetic"' in mine
    answer = (await several.client.get("/-/laion/mywork.json?database=datacomp&q=dog&kind=name")).json()
    assert answer["ok"] and answer["rows"] == sites.get(several, "datacomp").rows
    page = (await several.client.get("/-/laion/mywork?database=pd12m&q=dog&kind=name")).text
    assert '<input type="hidden" name="database" value="pd12m">' in page
    assert "the first of them" in page
    missing = await several.client.get("/-/laion/stats.json?database=nope")
    assert missing.status_code == 404 and "not one of the image databases" in missing.json()["error"]


@pytest.mark.asyncio
async def test_robots_and_health_name_every_database(several):
    robots = (await several.client.get("/robots.txt")).text
    for name in ("mine", "pd12m", "datacomp", "coyo"):
        assert f"Disallow: /{name}/images\n" in robots
    health = (await several.client.get("/-/laion/health")).json()
    assert health["databases"] == ["mine", "pd12m", "datacomp", "coyo"] and health["status"] == "ready"


@pytest.mark.asyncio
async def test_image_page_of_each(several):
    pd12m = await several.client.get("/pd12m/images/1")
    mine = await several.client.get("/mine/images/1")
    assert pd12m.status_code == mine.status_code == 200
    assert "<section class=\"laion-image\">" in pd12m.text and "<section class=\"laion-image\">" in mine.text
    assert "<dt>license</dt>" in pd12m.text and "<dt>aesthetic</dt>" not in pd12m.text
    assert "<dt>aesthetic</dt>" in mine.text
