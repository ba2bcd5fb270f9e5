"""The search answers Datasette's table API: every documented table
argument on ``images?_search=...`` gets what plain Datasette (no plugin,
same file, metadata and settings) answers, the oracle, or a 400 that says
why. Never a 5xx, never a 200 that ignores an argument."""
import csv
import io

import pytest
from datasette.app import Datasette
from plain_datasette import plain_site, plugin_unloaded

from datasette_laion import search, site

DB = "laion-aesthetic-6pls"
IMAGES = f"/{DB}/images"


@pytest.fixture(scope="module")
def plain(built):
    with plugin_unloaded():
        return plain_site(built)


@pytest.fixture(scope="module")
def ours(built):
    return site.make_datasette(built.path, built.inspect_path)


async def both(plain, ours, path):
    with plugin_unloaded():
        theirs = await plain.client.get(path)
    mine = await ours.client.get(path)
    return theirs, mine


# (query string, what is compared): every case is also checked for the same
# rows, columns and keys.
JSON_CASES = [
    "_search=dog&_size=5",
    "_search=dog&_size=5&_col=text&_col=width",
    "_search=dog&_size=5&_col=width&_col=text&_col=width",
    "_search=dog&_size=5&_nocol=text&_nocol=url",
    "_search=dog&_size=5&_labels=on",
    "_search=dog&_size=5&_labels=off",
    "_search=dog&_size=5&_label=domain_id",
    "_search=dog&_size=5&_labels=on&_col=text",
    "_search=dog&_size=5&_shape=objects",
    "_search=dog&_size=5&_shape=array",
    "_search=dog&_size=5&_shape=arrayfirst",
    "_search=dog&_size=5&_shape=object",
    "_search=dog&_size=5&_shape=array&_labels=on",
    "_search=dog&_size=5&_where=width > 2000",
    "_search=dog&_size=5&_where=width > 2000&_where=height < 1500",
    "_search=dog&_size=5&_where=text like '%black%'",
    "_search=dog&_size=5&width__gt=2000",
    "_search=dog&_size=5&text__contains=black",
    "_search=dog&_size=5&url__endswith=.jpg",
    "_search=dog&_size=5&domain_id__in=1,2,3",
    "_search=dog&_size=5&domain_id__notin=1,2",
    "_search=dog&_size=5&text__notblank=1",
    "_search=dog&_size=5&punsafe__isnull=1",
    "_search=dog&_size=5&hash__startswith=1",
    "_search=dog&_size=5&aesthetic__gte=7&width__lt=1000",
    "_search=dog&_size=5&rowid__gt=100",
    "_search=dog&_size=5&domain_id=1",
    "_search=dog&_size=5&_facet=domain_id",
    "_search=dog&_size=5&_facet=domain_id&_facet=width&_facet_size=3",
    "_search=dog&_size=5&_facet=domain_id&width__gt=1000",
    "_search=dog&_size=5&_facet=domain_id&_nofacet=1",
    "_search=dog&_size=5&_nocount=1",
    "_search=dog&_size=5&_sort=width",
    "_search=dog&_size=5&_sort_desc=width",
    "_search=dog&_size=5&_sort=rowid",
    "_search=dog&_size=5&_json=text",
    "_search=dog&_size=5&_timelimit=1000",
    "_search=dog&_size=5&_nosuggest=1",
    "_search_text=dog&_size=5",
    "_search=dog OR cat&_searchmode=raw&_size=5",
    '_search="black dog"&_size=5',
    "_search=dog&_size=max&_col=width",
    "_search=dog&_size=5&_fts_table=images_fts&_fts_pk=rowid",
]


def comparable(body):
    """What must be the same: rows, columns, count and facets."""
    if not isinstance(body, dict) or "rows" not in body:
        return body
    facets = {
        name: [(r["value"], r["label"], r["count"], r["selected"], r["toggle_url"]) for r in facet["results"]]
        for name, facet in body.get("facet_results", {}).items()
    }
    return {
        "rows": body["rows"], "columns": body["columns"], "count": body["filtered_table_rows_count"],
        "expanded_columns": body["expanded_columns"], "facets": facets,
        "facet_toggles": {n: f["toggle_url"] for n, f in body.get("facet_results", {}).items()},
    }


@pytest.mark.asyncio
@pytest.mark.parametrize("query", JSON_CASES)
async def test_json_as_plain_datasette_answers(plain, ours, query):
    theirs, mine = await both(plain, ours, f"{IMAGES}.json?{query}")
    assert theirs.status_code == 200, theirs.text[:300]
    assert mine.status_code == 200, mine.text[:300]
    assert mine.headers["content-type"] == theirs.headers["content-type"]
    assert mine.headers.get("cache-control") == theirs.headers.get("cache-control")
    if "_nl=" in query or mine.headers["content-type"].startswith("text/plain"):
        assert mine.text == theirs.text
        return
    t, m = theirs.json(), mine.json()
    if isinstance(t, dict):
        assert set(t) <= set(m), set(t) - set(m)  # every key of Datasette's, and a few more
        if "filtered_table_rows_count" in m:
            assert m["filtered_table_rows_count_exact"] in (True, None)
    assert comparable(m) == comparable(t)


@pytest.mark.asyncio
@pytest.mark.parametrize("query", ["_search=dog&_size=7", "_search=dog&_size=7&_sort=width",
                                   "_search=dog&_size=7&_sort_desc=height", "_search=dog&_size=7&_where=width>1000"])
async def test_next_pages_hold_the_same_rows(plain, ours, query):
    """Page after page, the same rows in the same order (the tokens are each site's own)."""
    pages = {}
    for name, ds in (("plain", plain), ("ours", ours)):
        url, rows = f"{IMAGES}.json?{query}&_shape=objects", []
        for _ in range(4):
            if name == "plain":
                with plugin_unloaded():
                    body = (await ds.client.get(url)).json()
            else:
                body = (await ds.client.get(url)).json()
            rows += body["rows"]
            if not body["next_url"]:
                break
            url = body["next_url"].replace("http://localhost", "")
        pages[name] = rows
    assert pages["ours"] == pages["plain"] and len(pages["ours"]) == 28


CSV_CASES = [
    "_search=dog&_size=5",
    "_search=dog&_size=5&_labels=on",
    "_search=dog&_size=5&_label=domain_id&_col=domain_id&_col=text",
    "_search=dog&_size=5&_header=off",
    "_search=dog&_size=5&_where=width>2000",
    "_search=dog&_stream=on",
    "_search=dog&_stream=on&_col=width&width__gt=1500",
    "_search=dog&_stream=on&_sort=width",
    "_search=dog&_size=5&_dl=1",
]


@pytest.mark.asyncio
@pytest.mark.parametrize("query", CSV_CASES)
async def test_csv_as_plain_datasette_answers(plain, ours, query):
    theirs, mine = await both(plain, ours, f"{IMAGES}.csv?{query}")
    assert theirs.status_code == mine.status_code == 200, mine.text[:300]
    assert mine.headers["content-type"] == theirs.headers["content-type"]
    assert mine.headers.get("content-disposition") == theirs.headers.get("content-disposition")
    assert list(csv.reader(io.StringIO(mine.text))) == list(csv.reader(io.StringIO(theirs.text)))


@pytest.mark.asyncio
@pytest.mark.parametrize("query, message", [
    ('_search=dog&_through={"table":"domain","column":"domain","value":"x"}', "_through is not available"),
    ("_search=dog&_search_url=x", "_search_url: the full-text index has no column 'url'"),
    ("_search=dog&_fts_table=other", "_fts_table/_fts_pk"),
    ("_search=dog&_col=nope", "_col=nope - invalid columns"),
    ("_search=dog&_col=text&_nocol=text", "_col and _nocol leave no column to show"),  # Datasette: a 400 (bad SQL)
    ("_search=black&_search_text=dog", "_search and _search_text together"),  # Datasette: _search_text ignored
    ("_search=dog&_nocol=nope", "_nocol=nope - invalid columns"),
    ("_search=dog&nope__gt=1", "images has no column 'nope'"),
    ("_search=dog&_timelimit=abc", "_timelimit: a number of milliseconds"),
    ("_search=dog&_shape=nope", "Invalid _shape: nope"),
    ("_search=dog&_stream=on&_next=5", "_next not allowed for CSV streaming"),
])
async def test_refused_with_a_reason(ours, query, message):
    fmt = "csv" if "_stream" in query else "json"
    response = await ours.client.get(f"{IMAGES}.{fmt}?{query}")
    assert response.status_code == 400
    assert message in response.text


@pytest.mark.asyncio
async def test_add_filter_form_redirects_as_datasette_does(plain, ours):
    query = "_search=dog&_filter_column=width&_filter_op=gt&_filter_value=2000"
    theirs, mine = await both(plain, ours, f"{IMAGES}?{query}")
    assert theirs.status_code == mine.status_code == 302
    assert mine.headers["location"] == theirs.headers["location"]


@pytest.mark.asyncio
async def test_facets_beyond_the_cap_count_the_first_matches(ours, db, monkeypatch):
    """More matches than FACET_CAP: facets count the first FACET_CAP, best
    first, and the answer says so."""
    monkeypatch.setattr(search, "FACET_CAP", 100)
    body = (await ours.client.get(f"{IMAGES}.json?_search=dog&_facet=domain_id&_size=1&_facet_size=max")).json()
    first = [r[0] for r in db.execute(
        "select i.domain_id from images_fts f join images i on i.rowid = f.rowid where images_fts match 'dog'"
        " order by f.rowid limit 100")]
    counted = {r["value"]: r["count"] for r in body["facet_results"]["domain_id"]["results"]}
    expected = {}
    for value in first:
        if value is not None:
            expected[value] = expected.get(value, 0) + 1
    assert counted == expected
    assert any("Facets counted among the first 100 matches" in note for note in body["notes"])


@pytest.mark.asyncio
async def test_html_page_honours_columns_labels_and_facets(ours):
    page = (await ours.client.get(f"{IMAGES}?_search=dog&_col=text&_col=domain_id&_facet=domain_id")).text
    assert 'class="col-text"' in page and 'class="col-url"' not in page
    assert f'<a href="/{DB}/domain/1">i.pinimg.com</a>' in page and "facet-domain_id" in page
    plain_ids = (await ours.client.get(f"{IMAGES}?_search=dog&_col=domain_id&_labels=off")).text
    assert f'<a href="/{DB}/domain/1">i.pinimg.com</a>' not in plain_ids and f'<a href="/{DB}/domain/1">1</a>' in plain_ids


@pytest.mark.asyncio
async def test_where_needs_execute_sql(built):
    metadata = site.metadata()
    metadata["databases"] = {DB: {"allow_sql": False}}
    ds = Datasette(immutables=[str(built.path)], metadata=metadata, settings=site.settings())
    response = await ds.client.get(f"{IMAGES}.json?_search=dog&_where=width>1")
    assert response.status_code == 403 and "_where= is not allowed" in response.text


@pytest.mark.asyncio
@pytest.mark.parametrize("where, message", [
    ("width >", "Invalid filter or _where (width >): near \")\": syntax error"),
    ("nope = 1", "Invalid filter or _where (nope = 1): no such column: nope"),
])
async def test_a_bad_where_is_named(ours, where, message):
    response = await ours.client.get(f"{IMAGES}.json", params={"_search": "dog", "_where": where})
    assert response.status_code == 400 and message in response.json()["error"]
