"""scripts/bench_load.py: its pure helpers (percentiles, sizes, URLs,
outcomes, the traffic mix and the verdicts), and one brief run of the whole
script against our server on the test database."""
import importlib.util
import random
import sys
from pathlib import Path

import pytest

from datasette_laion import functions, site, site_metadata

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_load.py"
sys.path.insert(0, str(SCRIPT.parent))  # as when the script runs: its benchlib beside it
spec = importlib.util.spec_from_file_location("bench_load", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

DB = site.DATABASE_NAME

CATALOG = {
    "terms": {band: [f"{band}-a", f"{band}-b", f"{band}-c"] for band, _ in bench.BANDS},
    "docs": {},
    "names": ["Thomas Kinkade", 'Dwayne "The Rock" Johnson', "Spider-Man", "Georgia O'Keeffe"],
    "hosts": ["i.pinimg.com", "cdn.shopify.com", "example.org"],
    "urls": ["https://i.pinimg.com/a.jpg", "https://example.org/x?y=1&z=2"],
    "counts": {"images": 12_096_835, "domain": 288_261, "registered_domain": 266_393},
}


@pytest.mark.parametrize("values,p,expected", [
    ([], 50, None),
    ([7], 50, 7),
    ([7], 99, 7),
    ([3, 1, 2], 50, 2),
    (list(range(1, 101)), 50, 51),  # index round(49.5) = 50 (half to even), as the other bench scripts
    (list(range(1, 101)), 95, 95),
    (list(range(1, 101)), 99, 99),
    (list(range(1, 101)), 100, 100),
    (list(range(1, 101)), 0, 1),
    ([5.0, 1.0, 300.0, 2.0], 95, 300.0),
])
def test_pct(values, p, expected):
    assert bench.pct(values, p) == expected


def test_pct_does_not_sort_in_place():
    values = [3, 1, 2]
    bench.pct(values, 50)
    assert values == [3, 1, 2]


@pytest.mark.parametrize("text,expected", [
    ("512M", 512 * 2**20), ("512m", 512 * 2**20), ("512MiB", 512 * 2**20), ("1G", 2**30),
    ("64k", 64 * 1024), ("1000", 1000), ("1.5G", int(1.5 * 2**30)),
])
def test_parse_size(text, expected):
    assert bench.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1M", "12T"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError):
        bench.parse_size(text)


@pytest.mark.parametrize("url,expected", [
    ("http://127.0.0.1:8001", True),
    ("http://127.5.6.7/", True),
    ("http://localhost:8001/x", True),
    ("http://[::1]:8001/", True),
    ("http://10.0.0.1:8001", False),
    ("http://example.com", False),
    ("http://0.0.0.0:8001", False),
    ("http://127.0.0.1.example.com/", False),
])
def test_is_loopback(url, expected):
    assert bench.is_loopback(url) is expected


def test_with_param_adds_and_replaces():
    assert bench.with_param(f"/{DB}/images?_search=dog", "_next", "8") == f"/{DB}/images?_search=dog&_next=8"
    assert (bench.with_param(f"/{DB}/images?_search=dog&_next=1&_size=10", "_next", "6.5,42")
            == f"/{DB}/images?_search=dog&_size=10&_next=6.5%2C42")
    assert bench.with_param(f"/{DB}/images", "_next", "3") == f"/{DB}/images?_next=3"
    # quoted phrases and spaces survive the round trip
    assert bench.with_param(f"/{DB}/images?_search=%22a%20b%22", "_next", "1") == \
        f"/{DB}/images?_search=%22a%20b%22&_next=1"


@pytest.mark.parametrize("path,expected", [
    (f"/{DB}/images?_search=dog", f"/{DB}/images.json?_search=dog"),
    (f"/{DB}/images.json?_search=dog", f"/{DB}/images.json?_search=dog"),
    (f"/{DB}/images?_search=a.json", f"/{DB}/images.json?_search=a.json"),
])
def test_json_twin(path, expected):
    assert bench.json_twin(path) == expected


@pytest.mark.parametrize("status,error,expected", [
    (200, None, None), (204, None, None), (302, None, None),
    (400, None, "400"), (404, None, "404"), (500, None, "500"), (503, None, "503"),
    (None, "timeout", "timeout"), (None, "ConnectError", "ConnectError"),
])
def test_outcome(status, error, expected):
    assert bench.outcome(status, error) == expected


def test_log_uniform_id_in_range_and_skewed():
    rng = random.Random(1)
    ids = [bench.log_uniform_id(rng, 288_261) for _ in range(10_000)]
    assert min(ids) >= 1 and max(ids) <= 288_261
    # log-uniform: about as many in 1..100 as in 100..10,000
    assert 0.3 < sum(i <= 100 for i in ids) / len(ids) < 0.5
    assert bench.log_uniform_id(rng, 1) == 1


def test_plain_metadata_has_no_plugin_functions(db_path):
    ours = site_metadata.for_file(db_path, DB)
    meta, dropped = bench.plain_metadata(ours)
    assert dropped == []
    queries = meta["databases"][DB]["queries"]
    assert set(queries) == set(ours["databases"][DB]["queries"]) and "image_by_url" in queries
    for name, query in queries.items():
        assert not bench.PLUGIN_FUNCTIONS.search(query["sql"]), name
    assert ":url_hash" in queries["image_by_url"]["sql"]
    assert "plugins" not in meta and "tables" not in meta["databases"][DB]


def test_plain_metadata_phrase_sql_matches_fts_phrase():
    import sqlite3

    replacement = dict(bench.PLAIN_SQL)["fts_phrase(:name)"]
    conn = sqlite3.connect(":memory:")
    for name in ['Dwayne "The Rock" Johnson', "Georgia O'Keeffe", "plain"]:
        assert conn.execute(f"select {replacement}", {"name": name}).fetchone()[0] == functions.fts_phrase(name)


def test_plain_metadata_drops_what_it_cannot_replace():
    meta = {"databases": {DB: {"queries": {
        "ok": {"sql": "select 1"},
        "needs_plugin": {"sql": "select registered_domain(:u)"},
    }}}}
    plain, dropped = bench.plain_metadata(meta)
    assert dropped == ["needs_plugin"]
    assert list(plain["databases"][DB]["queries"]) == ["ok"]


def test_build_mix_is_deterministic_and_seeded():
    one, two = bench.build_mix(CATALOG, 3, size=500), bench.build_mix(CATALOG, 3, size=500)
    assert one == two
    assert bench.build_mix(CATALOG, 4, size=500) != one
    assert len(one) == 500


def test_build_mix_follows_the_weights():
    mix = bench.build_mix(CATALOG, 0, size=20_000)
    total = sum(w for _, w, _ in bench.KINDS)
    shares = {kind: share for kind, share, *_ in bench.describe_mix(mix)}
    assert set(shares) == {k for k, _, _ in bench.KINDS}
    for kind, weight, _ in bench.KINDS:
        assert shares[kind] == pytest.approx(100 * weight / total, abs=1.0), kind
    assert abs(sum(shares.values()) - 100) < 1e-6


def test_build_mix_requests_are_valid_paths():
    mix = bench.build_mix(CATALOG, 0, size=3_000)
    for req in mix:
        assert req.path.startswith("/") and " " not in req.path and '"' not in req.path
        assert req.plain is None or (req.plain.startswith("/") and " " not in req.plain)
        if req.follow:
            assert req.kind == "search page 2" and "_search=" in req.path
    # every frequency band is searched
    bands = {req.group for req in mix if req.kind == "search html"}
    assert bands == {band for band, _ in bench.BANDS}
    # page 2 only for terms that have one
    assert {req.group for req in mix if req.follow} <= set(bench.PAGED_BANDS)
    # row ids within the table
    for req in mix:
        if req.kind == "row images":
            assert 1 <= int(req.path.rsplit("/", 1)[1]) <= CATALOG["counts"]["images"]


def test_build_mix_plain_equivalents():
    mix = bench.build_mix(CATALOG, 0, size=3_000)
    by_kind = {}
    for req in mix:
        by_kind.setdefault(req.kind, []).append(req)
    assert all(r.plain is None for r in by_kind["laion stats"] + by_kind["laion mywork"])
    assert all(r.plain == r.path for r in by_kind["search html"] + by_kind["table counts"])
    for req in by_kind["canned lookup"]:
        if req.group == "image_by_url":
            assert req.plain.startswith(req.path + "&url_hash=")
        else:
            assert "https%3A" not in req.plain  # plain looks up the host itself
    described = {kind: plain for kind, _, _, plain, _ in bench.describe_mix(mix)}
    assert described["laion stats"] == "none"
    assert described["canned lookup"] == "equivalent"
    assert described["home"] == "same"


def test_image_by_url_hash_is_the_plugins():
    mix = bench.build_mix(CATALOG, 0, size=3_000)
    from urllib.parse import parse_qs, urlsplit

    for req in mix:
        if req.group == "image_by_url":
            args = parse_qs(urlsplit(req.plain).query)
            assert int(args["url_hash"][0]) == functions.url_hash(args["url"][0])


def test_summarize_and_by_key():
    records = [("home", "", None, float(ms), ms <= 25) for ms in range(1, 101)]
    records += [("search html", "top", "500", 900.0, False), ("search html", "top", "timeout", 30_000.0, False),
                ("search html", "~5", None, 5.0, False)]
    result = bench.summarize(records, 10.0)
    assert result["requests"] == 103
    assert result["rps"] == pytest.approx(10.3)
    assert result["errors"] == 2
    assert result["error_breakdown"] == {"500": 1, "timeout": 1}
    assert result["max"] == 30_000.0
    assert result["p50"] == 51.0  # 103 values: index 51 of 1..5, 5, 6, ...
    assert result["cached"] == pytest.approx(100 * 25 / 103)
    kinds = bench.by_key(records, lambda r: r[0])
    assert kinds["home"]["requests"] == 100 and kinds["home"]["errors"] == 0
    assert kinds["home"]["cached"] == 25.0 and kinds["search html"]["cached"] == 0.0
    assert kinds["search html"]["error_breakdown"] == {"500": 1, "timeout": 1}
    assert bench.summarize([], 0)["p95"] is None


def test_verdicts():
    ours = {"errors": 0, "p95": 250.0, "memory": {"peak_rss_mb": 300.0}}
    capped = {"errors": 0, "server_exit": None, "cgroup": {"limit_mb": 512.0}}
    assert [v for _, _, v in bench.verdicts(ours, capped)] == ["PASS"] * 4
    slow = {**ours, "p95": 301.0, "memory": {"peak_rss_mb": 513.0}}
    assert [v for _, _, v in bench.verdicts(slow)] == ["PASS", "FAIL", "FAIL"]
    killed = {**capped, "server_exit": "exited by itself with code -9"}
    assert bench.verdicts(None, killed)[0][2] == "FAIL"
    assert bench.verdicts(None, None) == []


def test_tail_kinds():
    records = ([("home", "", None, 1.0, True)] * 95 + [("search html", "top", None, 500.0, False)] * 4
               + [("home", "", None, 900.0, False)])
    assert bench.tail_kinds(records) == {"search html": 80.0, "home": 20.0}
    assert bench.tail_kinds([]) == {}


def test_the_script_runs_against_our_server(built, tmp_path):
    """The whole script, briefly, on the test database: it starts our server,
    sends the mix, and prints its report with the targets."""
    import json
    import subprocess

    out = tmp_path / "load.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(built.path), "--inspect-file", str(built.inspect_path), "--servers", "ours",
         "--duration", "3", "--warmup", "1", "--clients", "4", "--json-out", str(out)],
        capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "answered from the page cache (x-laion-cache: hit): ours " in run.stdout
    assert "ours: 0 errors" in run.stdout and "per kind of request" in run.stdout
    result = json.loads(out.read_text())["results"]["ours"]
    assert result["requests"] > 0 and result["errors"] == 0, result["error_breakdown"]
    assert result["kinds"]["home"]["cached"] > 0  # the home page, once rendered, comes from the cache
    assert result["kinds"]["row images"]["cached"] == 0  # row pages are not kept


def test_search_terms_are_asked_by_popularity():
    """Within a band, the first term is asked most often (1/rank), every term
    sometimes; and the mix outlasts a run (no replays)."""
    import collections

    rng = random.Random(0)
    drawn = collections.Counter(bench._search(rng, CATALOG, ["~5"])[1] for _ in range(6_000))
    assert drawn["~5-a"] > drawn["~5-b"] > drawn["~5-c"] > 0
    assert drawn["~5-a"] / drawn["~5-c"] == pytest.approx(3, rel=0.15)
    assert bench.MIX_SIZE >= 500 * 120  # 120 s at 500 req/s
