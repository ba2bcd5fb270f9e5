"""The fast search on Datasette's own URLs, checked against captions
tokenized independently in the test."""
import re
import sqlite3

import pytest

from datasette_laion import kept_counts, one_trip, search, search_request

DB = "/laion-aesthetic-6pls"


@pytest.fixture(scope="module")
def rows(db_path):
    conn = sqlite3.connect(f"file:{db_path}?immutable=1", uri=True)
    conn.row_factory = sqlite3.Row
    found = [dict(r) for r in conn.execute("select rowid, * from images order by rowid")]
    domains = dict(conn.execute("select domain, id from domain"))
    conn.close()
    return found, domains


def words(text):
    return re.findall(r"[a-z0-9]+", (text or "").lower())


def matching(rows, *terms):
    out = []
    for row in rows:
        tokens = words(row["text"])
        joined = " " + " ".join(tokens) + " "
        if all((" " + " ".join(words(t)) + " ") in joined for t in terms):
            out.append(row)
    return out


@pytest.fixture(autouse=True)
def no_kept_counts(ds):
    """Each test counts afresh: several change the caps or the SQL."""
    ds.get_database(DB.strip("/"))._laion_counts = None
    yield


async def get(ds, path):
    response = await ds.client.get(path)
    return response


async def all_pages(ds, path, size=50):
    found, url, pages = [], f"{path}&_size={size}&_shape=objects", 0
    while url:
        response = await ds.client.get(url)
        assert response.status_code == 200, response.text
        body = response.json()
        found.extend(body["rows"])
        url = body["next_url"]
        if url:
            url = url.split("localhost", 1)[1]
        pages += 1
    return found, pages


@pytest.mark.asyncio
@pytest.mark.parametrize("query,terms", [("dog", ["dog"]), ("lemur", ["lemur"]), ('"thomas kinkade"', ["thomas kinkade"]),
                                          ("the dog", ["the", "dog"]), ('dog "black dog"', ["dog", "black dog"])])
async def test_search_finds_exactly_the_matching_rows_best_first(ds, rows, query, terms):
    images, _ = rows
    expected = [r["rowid"] for r in matching(images, *terms)]
    found, pages = await all_pages(ds, f"{DB}/images.json?_search={query}", size=200)
    assert [r["rowid"] for r in found] == expected
    assert pages == max(1, -(-len(expected) // 200))


@pytest.mark.asyncio
async def test_keyset_paging_deep(ds, rows):
    images, _ = rows
    expected = [r["rowid"] for r in matching(images, "the")]
    url = f"{DB}/images.json?_search=the&_size=7"
    for page in range(25):
        body = (await ds.client.get(url)).json()
        assert [r[0] for r in body["rows"]] == expected[page * 7 : page * 7 + 7]
        assert body["next"] == str(body["rows"][-1][0])
        url = body["next_url"].split("localhost", 1)[1]


@pytest.mark.asyncio
async def test_json_shapes(ds):
    default = (await ds.client.get(f"{DB}/images.json?_search=dog&_size=2")).json()
    for key in ("database", "table", "rows", "columns", "filtered_table_rows_count", "next", "next_url", "query", "primary_keys"):
        assert key in default
    assert default["columns"][:3] == ["rowid", "url", "text"] and isinstance(default["rows"][0], list)
    objects = (await ds.client.get(f"{DB}/images.json?_search=dog&_size=2&_shape=objects")).json()
    assert objects["rows"][0]["rowid"] == default["rows"][0][0]
    array = (await ds.client.get(f"{DB}/images.json?_search=dog&_size=2&_shape=array")).json()
    assert array == objects["rows"]
    first = (await ds.client.get(f"{DB}/images.json?_search=dog&_size=2&_shape=arrayfirst")).json()
    assert first == [r[0] for r in default["rows"]]
    bad = await ds.client.get(f"{DB}/images.json?_search=dog&_shape=object")  # as Datasette answers it
    assert bad.status_code == 200 and bad.json() == {
        "ok": False, "error": "_shape=object not available for tables with no primary keys"}
    assert isinstance(array[0]["hash"], str)


@pytest.mark.asyncio
async def test_counts_exact_then_capped(ds, rows, monkeypatch):
    images, _ = rows
    body = (await ds.client.get(f"{DB}/images.json?_search=dog&_size=1")).json()
    assert body["filtered_table_rows_count"] == len(matching(images, "dog"))
    assert body["filtered_table_rows_count_exact"] is True
    monkeypatch.setattr(search, "COUNT_CAP", 100)
    body = (await ds.client.get(f"{DB}/images.json?_search=dog&_size=1")).json()
    assert body["filtered_table_rows_count"] == 100 and body["filtered_table_rows_count_exact"] is False
    html = (await ds.client.get(f"{DB}/images?_search=dog&_size=1")).text
    assert "100+ matches" in html


@pytest.mark.asyncio
async def test_relevance_when_cheap_and_fallback_when_not(ds, db, monkeypatch):
    expected = [r[0] for r in db.execute("select rowid from images_fts where images_fts match 'lemur OR kinkade' order by rank, rowid")]
    body = (await ds.client.get(f"{DB}/images.json?_search=lemur OR kinkade&_searchmode=raw&_sort=relevance&_size=max")).json()
    assert [r[0] for r in body["rows"]] == expected and body["order"] == "relevance"
    monkeypatch.setattr(search, "RESORT_CAP", 5)
    body = (await ds.client.get(f"{DB}/images.json?_search=dog&_sort=relevance&_size=3")).json()
    assert body["order"] == "best first"
    assert "Sorted best first" in body["notes"][0]
    html = (await ds.client.get(f"{DB}/images?_search=dog&_sort=relevance")).text
    assert "Sorted best first" in html


@pytest.mark.asyncio
async def test_sort_by_column_when_cheap(ds, rows):
    images, _ = rows
    expected = sorted(matching(images, "lemur"), key=lambda r: (-r["punsafe"], r["rowid"]))
    body = (await ds.client.get(f"{DB}/images.json?_search=lemur&_sort_desc=punsafe&_size=max&_shape=array")).json()
    assert [r["rowid"] for r in body] == [r["rowid"] for r in expected]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "args,check",
    [
        ("aesthetic__gte=7", lambda r: r["aesthetic"] >= 7),
        ("aesthetic__gt=6.5&aesthetic__lt=7", lambda r: 6.5 < r["aesthetic"] < 7),
        ("aesthetic__lte=6.2", lambda r: r["aesthetic"] <= 6.2),
        ("punsafe__lte=0.01", lambda r: r["punsafe"] <= 0.01),
        ("pwatermark__lte=0.05", lambda r: r["pwatermark"] <= 0.05),
        ("aesthetic__gte=6.5&punsafe__lt=0.5&pwatermark__lte=0.8", lambda r: r["aesthetic"] >= 6.5 and r["punsafe"] < 0.5 and r["pwatermark"] <= 0.8),
        ("domain_id=1", lambda r: r["domain_id"] == 1),
        ("_domain=i.pinimg.com", lambda r: r["domain_id"] == 1),
        ("_domain=render.fineartamerica.com&punsafe__lt=0.5", lambda r: r["domain_id"] == 2 and r["punsafe"] < 0.5),
    ],
)
async def test_filters_combined_with_search(ds, rows, args, check, monkeypatch):
    images, _ = rows
    monkeypatch.setattr(search, "FILTER_SCAN_CAP", 10**6)  # every match checked: exact counts (see below)
    for word in ("the", "dog"):
        expected = [r["rowid"] for r in matching(images, word) if check(r)]
        found, _ = await all_pages(ds, f"{DB}/images.json?_search={word}&{args}", size=100)
        assert [r["rowid"] for r in found] == expected, (word, args)
        body = (await ds.client.get(f"{DB}/images.json?_search={word}&{args}&_size=1")).json()
        assert body["filtered_table_rows_count"] == len(expected) and body["filtered_table_rows_count_exact"]


@pytest.mark.asyncio
async def test_filtered_counts_check_the_first_matches_only(ds, rows, monkeypatch):
    """A filter checked row by row is checked against the first
    FILTER_SCAN_CAP matches (best first) for the count: exact when the
    search has no more, else "N+" (a lower bound) with a note; the pages
    still list every match that passes."""
    images, _ = rows
    monkeypatch.setattr(search, "FILTER_SCAN_CAP", 50)
    passing = [r for r in matching(images, "the") if r["punsafe"] < 0.5]
    first = [r for r in matching(images, "the")[:50] if r["punsafe"] < 0.5]
    body = (await ds.client.get(f"{DB}/images.json?_search=the&punsafe__lt=0.5&_size=5")).json()
    assert body["filtered_table_rows_count"] == len(first) < len(passing)
    assert body["filtered_table_rows_count_exact"] is False
    assert "Counted among the first 50 matches of the search only." in body["notes"]
    html = (await ds.client.get(f"{DB}/images?_search=the&punsafe__lt=0.5&_size=5")).text
    assert f"{len(first):,}+ matches" in html
    found, _ = await all_pages(ds, f"{DB}/images.json?_search=the&punsafe__lt=0.5", size=100)
    assert [r["rowid"] for r in found] == [r["rowid"] for r in passing]
    rare = next(w for w in ("lemur", "axolotl", "kinkade") if 5 < len(matching(images, w)) <= 50)
    expected = [r for r in matching(images, rare) if r["punsafe"] < 0.5]
    body = (await ds.client.get(f"{DB}/images.json?_search={rare}&punsafe__lt=0.5&_size=2")).json()
    assert body["filtered_table_rows_count"] == len(expected) and body["filtered_table_rows_count_exact"] is True
    # an aesthetic floor is a rowid bound: counted in the full-text index alone, exact to COUNT_CAP
    expected = [r for r in matching(images, "the") if r["aesthetic"] >= 6.5]
    body = (await ds.client.get(f"{DB}/images.json?_search=the&aesthetic__gte=6.5&_size=2")).json()
    assert body["filtered_table_rows_count"] == len(expected) > 50 and body["filtered_table_rows_count_exact"] is True


@pytest.mark.asyncio
async def test_small_domain_is_searched_from_the_domain_side(ds, rows, db):
    images, domains = rows
    # a mid-sized domain of the sample, and a word
    domain_id, host = db.execute("select id, domain from domain where image_counts between 20 and 200 order by id limit 1").fetchone()
    expected = [r["rowid"] for r in matching(images, "the") if r["domain_id"] == domain_id]
    found, _ = await all_pages(ds, f"{DB}/images.json?_search=the&_domain={host}", size=3)
    assert [r["rowid"] for r in found] == expected and expected


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "query",
    ['NEAR(dog cat)', 'dog*', 'AND', 'OR dog', '"unbalanced', 'a:b', '^dog', '(dog', 'dog-cat', "o'keeffe", "🐶", "\x00", "'", '""', "-dog"],
)
async def test_default_mode_never_errors(ds, query):
    from urllib.parse import quote

    response = await ds.client.get(f"{DB}/images.json?_search={quote(query)}&_size=2")
    assert response.status_code == 200, response.text


@pytest.mark.asyncio
@pytest.mark.parametrize("query,status", [("dog OR lemur", 200), ("dog NOT the", 200), ("NEAR(black dog, 3)", 200), ("lem*", 200),
                                           ("dog AND", 400), ('"unterminated', 400), ("(dog", 400), ("nosuchcolumn:dog", 400)])
async def test_advanced_mode(ds, db, query, status):
    from urllib.parse import quote

    response = await ds.client.get(f"{DB}/images.json?_search={quote(query)}&_searchmode=raw&_size=max")
    assert response.status_code == status, response.text
    if status == 200:
        expected = [r[0] for r in db.execute("select rowid from images_fts where images_fts match ? order by rowid", [query])]
        assert [r[0] for r in response.json()["rows"]] == expected[:1000]
    else:
        assert response.json()["error"].startswith("Invalid search syntax")
        html = await ds.client.get(f"{DB}/images?_search={quote(query)}&_searchmode=raw")
        assert html.status_code == 400 and "Invalid search syntax" in html.text


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "args,message",
    [
        ("_sort=nope", "cannot sort by 'nope'"),
        ("_sort=url&_sort_desc=url", "use either _sort or _sort_desc"),
        ("_size=100000", "_size: a number from 1 to 1000"),
        ("_next=abc", "_next: 'abc' is not a page token"),
        ("aesthetic__gte=high", "aesthetic__gte: 'high' is not a number"),
        ("nope__contains=x", "images has no column 'nope'"),
        ("_searchmode=regex", "_searchmode: use raw"),
        ("_domain=no.such.host", "_domain: no images from 'no.such.host'"),
    ],
)
async def test_bad_parameters_get_400_with_a_message(ds, args, message):
    response = await ds.client.get(f"{DB}/images.json?_search=dog&{args}")
    assert response.status_code == 400
    assert message in response.json()["error"]


@pytest.mark.asyncio
async def test_bookmarked_urls_and_order_synonyms(ds, rows):
    images, _ = rows
    expected = [r["rowid"] for r in matching(images, "thomas kinkade")][:50]
    for args in ['_search="Thomas Kinkade"&_sort=rowid', '_search="Thomas Kinkade"&_sort_desc=aesthetic', '_search="Thomas Kinkade"']:
        body = (await ds.client.get(f"{DB}/images.json?{args}&_shape=array")).json()
        assert [r["rowid"] for r in body] == expected
    assert (await ds.client.get(f"{DB}/images?_search=lemur")).status_code == 200


@pytest.mark.asyncio
async def test_html_table_and_gallery(ds):
    html = (await ds.client.get(f"{DB}/images?_search=dog&_size=5")).text
    assert html.count('class="laion-thumb') >= 1 and 'class="rows-and-columns"' in html
    assert "matches</strong>" in html and 'href="/laion-aesthetic-6pls/images?_search=dog&amp;_size=5&amp;_view=gallery"' in html
    gallery = (await ds.client.get(f"{DB}/images?_search=dog&_size=5&_view=gallery")).text
    assert gallery.count('<li>') == 5 and "aesthetic" in gallery
    browse = (await ds.client.get(f"{DB}/images?_view=gallery&_size=4")).text
    assert browse.count('<li>') == 4


@pytest.mark.asyncio
async def test_plain_table_pages_stay_datasette(ds):
    response = await ds.client.get(f"{DB}/images?_size=3")
    assert response.status_code == 200 and "laion-results" not in response.text
    assert '<input id="_search" type="search" name="_search"' in response.text


@pytest.mark.parametrize(
    "text,expected",
    [
        ("dog", '"dog"'),
        ("black dog", '"black" "dog"'),
        ('"black dog" park', '"black dog" "park"'),
        ('"unbalanced phrase', '"unbalanced phrase"'),
        ('say "hi', '"say" "hi"'),
        ("NEAR(a b)", '"NEAR(a" "b)"'),
        ("", None),
        ('  ""  ', None),
    ],
)
def test_fts_query_default_mode(text, expected):
    assert search_request.fts_query(text) == expected


@pytest.mark.asyncio
async def test_a_count_that_takes_too_long_is_given_up_not_failed(ds, monkeypatch):
    from datasette.database import QueryInterrupted

    original = one_trip.Connection.execute

    def slow_counts(self, sql, *args, **kwargs):
        if sql.startswith("select count(*)"):
            raise QueryInterrupted(None, sql, {})
        return original(self, sql, *args, **kwargs)

    monkeypatch.setattr(one_trip.Connection, "execute", slow_counts)
    body = (await ds.client.get(f"{DB}/images.json?_search=the&_size=3")).json()
    assert len(body["rows"]) == 3 and body["filtered_table_rows_count"] is None
    assert body["notes"] == ["These matches take too long to count; they are shown without a total."]
    html = (await ds.client.get(f"{DB}/images?_search=the&_size=3")).text
    assert "Matches not counted" in html and "take too long to count" in html
    # a search that fits on one page counts itself, with no count query
    body = (await ds.client.get(f"{DB}/images.json?_search=axolotl")).json()
    assert body["filtered_table_rows_count_exact"] is True


def test_search_page_cells_are_what_render_cell_gives(rows):
    """The search table's cells, written column by column, are the plugin's
    render_cell HTML (thumbnails, rounded scores) or the escaped value, for
    every row of the sample (its hostile captions and URLs included)."""
    from markupsafe import escape

    from datasette_laion import config, render, search_view

    found, domains = rows
    labels = {i: d for d, i in domains.items()}
    urls = {"row": f"{DB}/images/", "domain": f"{DB}/domain/"}
    conf = dict(config.DEFAULTS)
    columns = ["rowid"] + search_request.SEARCH_COLUMNS
    writers = search_view.cell_writers(columns, labels, urls, conf)
    for row in found:
        for column in columns:
            value = row[column]
            if column == "rowid":
                expected = f'<a href="{DB}/images/{value}">{value}</a>'
            elif column == "domain_id" and value is not None:
                expected = f'<a href="{DB}/domain/{value}">{escape(labels.get(value, ""))}</a>&nbsp;<em>{value}</em>'
            else:
                rendered = render.render_cell(row, value, column, "images", conf)
                expected = rendered if rendered is not None else "&nbsp;" if value is None else escape(value)
            assert writers[column](row) == str(expected), (row["rowid"], column)


@pytest.mark.asyncio
async def test_counts_are_kept_for_the_next_pages(ds, rows, monkeypatch):
    """A filtered search's count (every match checked against the filters)
    is made once: its next pages, and the same search again, reuse it."""
    images, _ = rows
    counts = []
    original = one_trip.Connection.execute

    def counting(self, sql, *args, **kwargs):
        if sql.startswith("select count(*)") and "join images" in sql:  # matches checked against the filters
            counts.append(sql)
        return original(self, sql, *args, **kwargs)

    monkeypatch.setattr(one_trip.Connection, "execute", counting)
    path = f"{DB}/images.json?_search=dog&punsafe__lt=0.5&_size=5"
    first = (await ds.client.get(path)).json()
    expected = [r for r in matching(images, "dog") if r["punsafe"] is not None and r["punsafe"] < 0.5]
    assert first["filtered_table_rows_count"] == len(expected) > 10 and len(counts) == 1
    second = (await ds.client.get(f"{path}&_next={first['next']}")).json()
    again = (await ds.client.get(path)).json()
    assert len(counts) == 1
    assert second["filtered_table_rows_count"] == again["filtered_table_rows_count"] == len(expected)
    assert second["rows"] != first["rows"] and again["rows"] == first["rows"]
    await ds.client.get(f"{DB}/images.json?_search=dog&punsafe__lt=0.6&_size=5")  # another filter: counted
    await ds.client.get(f"{DB}/images.json?_search=cat&punsafe__lt=0.5&_size=5")  # another search: counted
    assert len(counts) == 3


def test_kept_counts_are_bounded_and_only_for_immutable_databases():
    kept = kept_counts.KeptCounts(entries=3)
    for i in range(5):
        kept.put(i, (i, True, None))
    assert kept.get(0) is None and kept.get(2) == (2, True, None)
    kept.put(5, (5, True, None))  # 2 was used last: 3 goes
    assert list(kept.kept) == [4, 2, 5]

    class Mutable:
        is_mutable = True

    assert kept_counts.kept_counts(Mutable()) is None


@pytest.mark.asyncio
async def test_a_search_is_one_trip_to_a_sql_thread(ds, monkeypatch):
    """Every query of a search (bounds, page, count, domain names) runs in
    one execute_fn call, with Datasette's time limit on each."""
    from datasette.database import Database

    trips, limits = [], []
    original_fn, original_execute = Database.execute_fn, one_trip.Connection.execute

    async def counting_trips(self, fn):
        trips.append(fn)
        return await original_fn(self, fn)

    def noting_limits(self, sql, params=None, custom_time_limit=None):
        limits.append(min(self.time_limit_ms, custom_time_limit or self.time_limit_ms))
        return original_execute(self, sql, params, custom_time_limit)

    monkeypatch.setattr(Database, "execute_fn", counting_trips)
    monkeypatch.setattr(one_trip.Connection, "execute", noting_limits)
    for path in [f"{DB}/images?_search=dog&aesthetic__gte=5&punsafe__lt=0.5", f"{DB}/images.json?_search=the",
                 f"{DB}/images?_view=gallery&punsafe__lt=0.5"]:
        trips.clear()
        limits.clear()
        response = await ds.client.get(path)
        assert response.status_code == 200
        assert len(trips) == 1 and len(limits) >= 2, path
        assert set(limits) <= {ds.setting("sql_time_limit_ms"), search.COUNT_TIME_LIMIT_MS}
