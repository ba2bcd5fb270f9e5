"""The statistics the build precomputes, checked against figures computed here
from the parquet files themselves; the statistics and "is my work in it?"
pages, their JSON, their answers and their handling of hostile input."""
import hashlib
import re
import sqlite3
import unicodedata
from urllib.parse import quote

import numpy as np
import pyarrow.parquet as pq
import pytest

from datasette_laion import build, charts, functions, mywork, site, stats

STATS = "/-/laion/stats"
MYWORK = "/-/laion/mywork"


def stored(value):
    """A float32 score as the build stores it: its shortest decimal."""
    return None if value is None else float(str(np.float32(value)))


@pytest.fixture(scope="module")
def source(parquet_dir):
    """Every row of the parquet files, as plain Python values."""
    rows = pq.read_table(
        parquet_dir, columns=["URL", "TEXT", "WIDTH", "HEIGHT", "punsafe", "pwatermark", "AESTHETIC_SCORE"]
    ).to_pylist()
    values = {
        "aesthetic": [stored(r["AESTHETIC_SCORE"]) for r in rows],
        "punsafe": [stored(r["punsafe"]) for r in rows],
        "pwatermark": [stored(r["pwatermark"]) for r in rows],
        "width": [r["WIDTH"] for r in rows],
        "height": [r["HEIGHT"] for r in rows],
        "aspect_ratio": [r["WIDTH"] / r["HEIGHT"] if r["WIDTH"] is not None and r["HEIGHT"] else None for r in rows],
        "caption_length": [len(r["TEXT"]) if r["TEXT"] is not None else None for r in rows],
    }
    return {"rows": rows, "values": values}


# ------------------------------------------------------------ precomputed


def test_histograms_match_the_parquet_files(db, source):
    buckets = db.execute("select metric, bucket_start, bucket_end, count from stats_histogram order by id").fetchall()
    assert {b[0] for b in buckets} == set(stats.METRICS)
    for metric, values in source["values"].items():
        present = [v for v in values if v is not None]
        rows = [b[1:] for b in buckets if b[0] == metric]
        for start, end, count in rows:
            expected = sum(1 for v in present if (start is None or v >= start) and (end is None or v < end))
            assert count == expected, (metric, start, end)
        # every value is in some bucket (the empty ends are trimmed, nothing else)
        assert sum(c for _, _, c in rows) == len(present), metric
        assert rows[0][2] > 0 and rows[-1][2] > 0
        # contiguous
        assert all(a[1] == b[0] for a, b in zip(rows, rows[1:])), metric


def test_figures_match_the_parquet_files(db, source):
    figures = dict(db.execute("select key, value from stats_figures").fetchall())
    values = source["values"]
    assert figures["rows"] == len(source["rows"])
    for metric, column in values.items():
        present = [v for v in column if v is not None]
        assert figures[f"{metric}.count"] == len(present)
        assert figures[f"{metric}.missing"] == len(column) - len(present)
        assert figures[f"{metric}.min"] == pytest.approx(min(present), rel=1e-12)
        assert figures[f"{metric}.max"] == pytest.approx(max(present), rel=1e-12)
        assert figures[f"{metric}.mean"] == pytest.approx(sum(present) / len(present), abs=1e-6)
    assert figures["caption_length.missing"] == sum(1 for r in source["rows"] if r["TEXT"] is None) > 0
    unsafe = [v is not None and v > 0.5 for v in values["punsafe"]]
    marked = [v is not None and v > 0.8 for v in values["pwatermark"]]
    assert figures["punsafe_over_0_5"] == sum(unsafe) > 0
    assert figures["pwatermark_over_0_8"] == sum(marked) > 0
    assert figures["punsafe_over_0_5_and_pwatermark_over_0_8"] == sum(a and b for a, b in zip(unsafe, marked))
    assert figures["punsafe_over_0_5_or_pwatermark_over_0_8"] == sum(a or b for a, b in zip(unsafe, marked))
    # the same as build_info's, counted through the indexes
    info = dict(db.execute("select key, value from build_info").fetchall())
    assert info["punsafe_over_0_5"] == figures["punsafe_over_0_5"]
    assert info["pwatermark_over_0_8"] == figures["pwatermark_over_0_8"]


def test_source_file_checksums(db, parquet_dir):
    files = sorted(parquet_dir.glob("*.parquet"))
    recorded = db.execute("select name, bytes, sha256 from source_files order by id").fetchall()
    assert recorded == [(f.name, f.stat().st_size, hashlib.sha256(f.read_bytes()).hexdigest()) for f in files]


def test_histograms_merge_like_one_pass(parquet_dir):
    from datasette_laion.read import iter_batches, normalise
    from datasette_laion.source import open_sources

    sources = open_sources([parquet_dir])
    whole, halves = stats.Histograms(), [stats.Histograms(), stats.Histograms()]
    for k, source in enumerate(sources):
        for batch in iter_batches(source, 1_500):
            batch = normalise(batch, source, {})
            whole.add(batch)
            halves[k % 2].add(batch)
    merged, one = stats.merge([h.state() for h in halves]), stats.merge([whole.state()])
    for name in stats.METRICS:  # sums differ in the last bits with the order of addition
        assert merged["metrics"][name].pop("sum") == pytest.approx(one["metrics"][name].pop("sum"), rel=1e-12)
    assert merged == one
    assert stats.merge([]) == stats.Histograms().state()


@pytest.mark.parametrize("name", list(stats.METRICS))
def test_bucket_indexes_are_searchsorted(name):
    metric, edges = stats.METRICS[name], stats.EDGES[name]
    rng = np.random.default_rng(3)
    values = np.concatenate([
        rng.uniform(metric.start - 3 * metric.step, metric.stop + 3 * metric.step, 20_000),
        edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf),
        np.round(rng.uniform(metric.start, metric.stop, 20_000) / metric.step) * metric.step,  # edges, off by rounding
        np.arange(0, 10.001, 0.1), np.arange(0, 1.0001, 0.01),  # 0.30000000000000004 and friends
        [np.inf, -np.inf, 1e300, -1e300, 0.0, -0.0],
    ])
    assert (stats.bucket_indexes(name, values) == np.searchsorted(edges, values, side="right")).all()


@pytest.fixture(scope="module")
def excluded_build(parquet_dir, tmp_path_factory, source):
    """A build of one file with two removal lists."""
    work = tmp_path_factory.mktemp("excluded")
    first = min(parquet_dir.glob("*.parquet"))
    rows = pq.read_table(first, columns=["URL", "hash"]).to_pylist()
    (work / "optout.txt").write_text("# artists' opt-out\n" + "\n".join(r["URL"] for r in rows[:5]) + "\n")
    (work / "removed.csv").write_text("hash\n" + "".join(f"{r['hash']}\n" for r in rows[100:103]))
    out = work / site.DATABASE_FILE
    result = build.build(out, [first], exclude=[work / "optout.txt", work / "removed.csv"], progress=False)
    return result, site.make_datasette(result.path, result.inspect_path)


@pytest.mark.asyncio
async def test_statistics_say_what_was_excluded(excluded_build):
    result, ds = excluded_build
    assert result.excluded >= 8
    data = (await ds.client.get(STATS + ".json")).json()
    version = data["data_version"]
    assert version["excluded_rows"] == result.excluded == data["figures"]["excluded_rows"]
    assert [(e["name"], e["urls"], e["hashes"]) for e in version["exclusions"]] == [("optout.txt", 5, 0), ("removed.csv", 0, 3)]
    # the histograms describe what is left
    assert sum(b["count"] for b in data["histograms"]["aesthetic"]["buckets"]) == result.rows == data["rows"]
    html = (await ds.client.get(STATS)).text
    assert f"<strong>{result.excluded}</strong> rows" in html
    assert "<td>optout.txt</td>" in html and "<td>removed.csv</td>" in html


# ---------------------------------------------------------------- charts


@pytest.mark.parametrize(
    "top,ticks",
    [(0, [0, 1]), (7, [0, 2, 4, 6, 8]), (2779, [0, 1000, 2000, 3000]), (4_378_000, [0, 1_000_000, 2_000_000, 3_000_000, 4_000_000, 5_000_000])],
)
def test_nice_ticks(top, ticks):
    assert charts.nice_ticks(top)[0] == ticks


@pytest.mark.parametrize(
    "start,end,integer,label",
    [(6.1, 6.2, False, "6.1 to 6.2"), (60, 70, True, "60 to 69"), (4096.0, None, True, "4,096 or more"), (None, 0.0, False, "under 0")],
)
def test_bucket_label(start, end, integer, label):
    assert charts.bucket_label(start, end, integer) == label


def test_charts_escape_and_survive_no_data():
    svg = charts.bars("x", "<b>", [('"><script>alert(1)</script>', "/d/1?a=1&b=2", 5)], total=10)
    assert "<script>" not in svg and "&lt;script&gt;" in svg and 'href="/d/1?a=1&amp;b=2"' in svg
    assert "<rect" in charts.histogram("h", "t", "x", [(0.0, 0.1, 3), (0.1, 0.2, 0), (0.2, None, 1)])
    assert "<svg" in charts.histogram("h", "t", "x", []) and "<svg" in charts.bars("b", "t", [], total=0)


# ---------------------------------------------------------------- pages


@pytest.mark.asyncio
async def test_statistics_page_and_json(ds, db, parquet_dir):
    response = await ds.client.get(STATS)
    assert response.status_code == 200
    html = response.text
    assert html.count('<svg class="laion-chart') == len(stats.METRICS) + 2
    for metric in stats.METRICS.values():
        assert str(charts.escape(metric.title)) in html
    assert "i.pinimg.com" in html and "pinimg.com" in html
    first = min(parquet_dir.glob("*.parquet"))
    assert hashlib.sha256(first.read_bytes()).hexdigest() in html
    assert "No removal or opt-out list was applied to this build: <strong>0</strong> rows excluded." in html
    data = (await ds.client.get(STATS + ".json")).json()
    assert data["rows"] == 12_000 and data["available"] is True
    assert set(data["histograms"]) == set(stats.METRICS)
    top = db.execute("select domain, image_counts from domain order by image_counts desc limit 20").fetchall()
    assert [(d["domain"], d["image_counts"]) for d in data["top_domains"]] == top
    assert data["top_registered_domains"][0]["registered_domain"] == "pinimg.com"
    assert {t["key"]: t["count"] for t in data["thresholds"]}["punsafe_over_0_5"] == db.execute(
        "select count(*) from images where punsafe > 0.5"
    ).fetchone()[0]
    assert data["data_version"]["built_at"] and len(data["data_version"]["source_files"]) == 3


@pytest.mark.asyncio
async def test_home_page_links_to_both(ds):
    html = (await ds.client.get("/")).text
    assert f'href="{STATS}"' in html and f'href="{MYWORK}"' in html


def host_count(rows, host):
    return sum(1 for r in rows if functions.domain(r["URL"]) == host)


def registered_count(rows, name):
    return sum(1 for r in rows if functions.registered_domain(r["URL"]) == name)


def tokens(text):
    """FTS5 unicode61 tokens, near enough for ASCII names: runs of letters and digits, lower-cased."""
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return re.findall(r"[^\W_]+", text.lower())


def phrase_count(rows, name):
    wanted = tokens(name)
    count = 0
    for r in rows:
        if r["TEXT"] is None:
            continue
        have = tokens(r["TEXT"])
        count += any(have[i : i + len(wanted)] == wanted for i in range(len(have) - len(wanted) + 1))
    return count


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "q,host,registered",
    [
        ("i.pinimg.com", "i.pinimg.com", "pinimg.com"),
        ("https://i.pinimg.com/some/picture.jpg", "i.pinimg.com", "pinimg.com"),
        ("I.PINIMG.COM", "i.pinimg.com", "pinimg.com"),
        ("render.fineartamerica.com/featured", "render.fineartamerica.com", "fineartamerica.com"),
        ("pinimg.com", None, "pinimg.com"),  # a registered domain that is no host itself
        ("www.no-such-site-at-all.net", None, None),
    ],
)
async def test_mywork_site_counts(ds, source, q, host, registered):
    answer = (await ds.client.get(MYWORK + ".json?q=" + quote(q))).json()
    assert answer["kind"] == "site"
    site_ = answer["site"]
    rows = source["rows"]
    assert site_["host_images"] == (host_count(rows, host) if host else 0)
    assert site_["registered_domain_images"] == (registered_count(rows, registered) if registered else 0)
    if host:
        assert site_["host_images"] > 0 and site_["gallery_url"] == f"/laion-aesthetic-6pls/images?_domain={host}&_view=gallery"
        assert all(e["domain"] == host for e in answer["examples"]) and len(answer["examples"]) == 12
    if registered:
        assert site_["registered_domain"] == registered and site_["registered_domain_hosts"] >= 1
        assert site_["registered_domain_url"].startswith("/laion-aesthetic-6pls/registered_domain/")
        assert answer["examples"] and all(functions.registrable_domain(e["domain"]) == registered for e in answer["examples"])
    else:
        assert answer["examples"] == []
    # examples are the best ones: in rowid order
    assert [e["rowid"] for e in answer["examples"]] == sorted(e["rowid"] for e in answer["examples"])
    html = (await ds.client.get(MYWORK + "?q=" + quote(q))).text
    if host:
        assert f"{site_['host_images']:,} images</strong>" in html and html.count('class="laion-thumb') == 12
    else:
        assert "<strong>No image</strong>" in html


@pytest.mark.asyncio
async def test_mywork_exact_image_url(ds, db):
    rowid, url = db.execute("select rowid, url from images where domain_id = 1 and rowid > 100 limit 1").fetchone()
    answer = (await ds.client.get(MYWORK + ".json?q=" + quote(url))).json()
    assert answer["exact_url"] == {"url": url, "found": True, "rowid": rowid, "row_url": f"/laion-aesthetic-6pls/images/{rowid}"}
    answer = (await ds.client.get(MYWORK + ".json?q=" + quote(url + "x"))).json()
    assert answer["exact_url"]["found"] is False and answer["site"]["host_images"] > 0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "name",
    ['Dwayne "The Rock" Johnson', "Thomas Kinkade", "Georgia O'Keeffe", "Edward Burne-Jones", "R2-D2", "zzqx nothing"],
)
async def test_mywork_name_counts(ds, db, source, name):
    answer = (await ds.client.get(MYWORK + ".json?q=" + quote(name))).json()
    assert answer["kind"] == "name"
    expected = phrase_count(source["rows"], name)
    assert answer["name"]["count"] == expected and answer["name"]["count_exact"] is True
    assert expected == db.execute(
        "select count(*) from images_fts where images_fts match ?", [functions.fts_phrase(name)]
    ).fetchone()[0]
    assert len(answer["examples"]) == min(expected, 12)
    assert answer["name"]["search_url"] == functions.phrase_search_url(lambda: "/laion-aesthetic-6pls/images")(name)
    # the full results page finds as many
    search = (await ds.client.get(answer["name"]["search_json"])).json()
    assert search["filtered_table_rows_count"] == expected
    html = (await ds.client.get(MYWORK + "?q=" + quote(name))).text
    if expected:
        assert f"{expected:,} image" in html
    else:
        assert "<strong>No image</strong> has a caption that mentions" in html


@pytest.mark.asyncio
async def test_mywork_counts_are_capped_like_the_search(ds, monkeypatch):
    monkeypatch.setattr(mywork, "COUNT_CAP", 100)
    answer = (await ds.client.get(MYWORK + ".json?q=the")).json()
    assert answer["name"]["count"] == 100 and answer["name"]["count_exact"] is False
    assert answer["name"]["count_text"] == "100+"
    html = (await ds.client.get(MYWORK + "?q=the")).text
    assert "<strong>More than 100 images</strong> (100+)" in html


@pytest.mark.asyncio
async def test_mywork_safe_mode(ds):
    answer = (await ds.client.get(MYWORK + ".json?q=the")).json()
    flagged = [e for e in answer["examples"] if e["punsafe"] is None or e["punsafe"] >= 0.5]
    assert flagged
    html = (await ds.client.get(MYWORK + "?q=the")).text
    assert html.count("laion-hidden") == len(flagged)
    for example in flagged:
        assert f'<img src="{example["url"]}"' not in html


@pytest.mark.parametrize(
    "text,kind,expected",
    [
        ("example.com", "auto", ("site", "example.com", None)),
        ("  https://Example.COM:8080/a/b.jpg?x=1 ", "auto", ("site", "example.com", "https://Example.COM:8080/a/b.jpg?x=1")),
        ("https://example.com/", "auto", ("site", "example.com", None)),
        ("//cdn.example.com/x.jpg", "auto", ("site", "cdn.example.com", "//cdn.example.com/x.jpg")),
        ("www.bbc.co.uk/news", "auto", ("site", "www.bbc.co.uk", None)),
        ("192.168.0.1", "auto", ("site", "192.168.0.1", None)),
        ("bücher.de", "auto", ("site", "bücher.de", None)),
        ("Greg Rutkowski", "auto", ("name", None, None)),
        ("Mr.Brainwash", "auto", ("name", None, None)),
        ("J.R.R. Tolkien", "auto", ("name", None, None)),
        ("javascript:alert(1)", "auto", ("name", None, None)),
        ("example.com", "name", ("name", None, None)),
        ("mrbrainwash.art", "site", ("site", "mrbrainwash.art", None)),
        ("line\none\ttab", "auto", ("name", None, None)),
    ],
)
def test_parse_lookup(text, kind, expected):
    lookup = mywork.parse_lookup(text, kind)
    assert (lookup.kind, lookup.host, lookup.url) == expected


HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(2)>',
    "javascript:alert(3)",
    "' onmouseover='alert(4)' x='",
    'https://evil.example.com/"><svg onload=alert(5)>',
    "JaVaScRiPt:alert(6)//example.com",
    "</textarea></title><script>alert(7)</script>",
    "{{ 7*7 }} {% raw %}",
    "\u202egnp.exe",
    "x" * 2000,
]


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["auto", "site", "name"])
@pytest.mark.parametrize("payload", HOSTILE, ids=range(len(HOSTILE)))
async def test_mywork_escapes_hostile_input(ds, payload, kind):
    response = await ds.client.get(f"{MYWORK}?kind={kind}&q=" + quote(payload))
    assert response.status_code in (200, 400)
    html = response.text
    assert not re.search(r"<script>alert|<img src=x|<svg onload|onmouseover='alert", html, re.IGNORECASE)
    assert not re.search(r"""(href|src)\s*=\s*["']?\s*javascript:""", html, re.IGNORECASE)
    if payload.startswith("{{"):
        assert "{{ 7*7 }}" in html  # shown, never evaluated
    json_response = await ds.client.get(f"{MYWORK}.json?kind={kind}&q=" + quote(payload))
    assert json_response.status_code == response.status_code
    assert json_response.headers["content-type"].startswith("application/json")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "query,message",
    [
        ("q=" + "x" * 2001, "That is 2,001 characters long; enter at most 2,000."),
        ("q=" + "y" * 60_000, "That is 60,000 characters long; enter at most 2,000."),
        ("q=a%00b", "control characters"),
        ("q=%1b%5b31mred", "control characters"),
        ("q=caf%C2%85e", "control characters"),  # C1 (NEL)
        ("q=example.com&kind=bogus", "kind: use auto, site or name"),
        ("q=Greg+Rutkowski&kind=site", "is not a website address"),
        ("q=javascript:alert(1)&kind=site", "is not a website address"),
        ("q=javascript://example.com/%0aalert(1)", "is not a website address"),
        ("q=ftp://example.com/x.jpg", "is not a website address"),
        ("q=http://%5B::1/x", "is not a website address"),
        ("q=!!!", "at least one letter or digit"),
    ],
)
async def test_mywork_bad_input_is_a_400(ds, query, message):
    html = await ds.client.get(f"{MYWORK}?{query}")
    assert html.status_code == 400 and message in html.text.replace("&#34;", '"').replace("&#39;", "'")
    data = await ds.client.get(f"{MYWORK}.json?{query}")
    assert data.status_code == 400 and message in data.json()["error"] and data.json()["ok"] is False


@pytest.mark.asyncio
async def test_mywork_empty(ds):
    response = await ds.client.get(MYWORK)
    assert response.status_code == 200 and 'name="q"' in response.text and "laion-verdict" not in response.text
    assert (await ds.client.get(MYWORK + "?q=+++")).status_code == 200
    response = await ds.client.get(MYWORK + ".json")
    assert response.status_code == 400 and "enter a website address" in response.json()["error"]


def test_pages_cope_with_a_database_without_stats(tmp_path, built):
    """An older build (no stats tables, no sha256): the page says so."""
    import asyncio
    import shutil

    copy = tmp_path / site.DATABASE_FILE
    shutil.copy(built.path, copy)
    conn = sqlite3.connect(copy)
    conn.executescript("drop table stats_histogram; drop table stats_figures;")
    conn.close()
    ds = site.make_datasette(copy)

    async def get():
        return await ds.client.get(STATS), await ds.client.get(STATS + ".json")

    html, data = asyncio.run(get())
    assert html.status_code == 200 and "built without statistics" in html.text
    assert data.json()["available"] is False and data.json()["thresholds"]  # build_info's figures


@pytest.mark.asyncio
async def test_pages_before_the_database_is_uploaded(tmp_path):
    from datasette.app import Datasette

    metadata = site.metadata()
    metadata["plugins"]["datasette-laion"]["database_path"] = str(tmp_path / "laion" / "laion-aesthetic-6pls.db")
    ds = Datasette(metadata=metadata, settings=site.settings())
    for path in (STATS, STATS + ".json", MYWORK + "?q=example.com", MYWORK + ".json?q=example.com"):
        response = await ds.client.get(path)
        assert response.status_code == 503 and "not being served" in response.text, path
