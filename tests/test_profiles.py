"""Source profiles: every profile is sampled, found from its files' columns,
built by the project's build code and served; refusals; row filters.

Expected values come from the parquet files, read with pyarrow and plain
Python, not through the build's own conversions."""
import json
import sqlite3

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from datasette_laion import build, profiles, sample, sample_profiles, site
from datasette_laion.cli import laion
from datasette_laion.profiles import PROFILES, SITE_COLUMNS
from datasette_laion.read import RowGroups
from datasette_laion.source import open_source

ROWS = 2_400
SEARCH = "dog"  # in about 12% of generated captions


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """profile name -> (parquet paths, BuildResult): sampled and built once,
    with a small sort buffer so that the build's score buckets are used."""
    cache = {}

    def get(name):
        if name not in cache:
            directory = tmp_path_factory.mktemp(name)
            paths = sample.generate(directory / "parquet", rows=ROWS, files=2, seed=13, profile=name)
            (directory / "db").mkdir()
            result = build.build(directory / "db" / site.DATABASE_FILE, [directory / "parquet"], progress=False,
                                 workers=1, sort_rows=1_000, batch_size=500)
            cache[name] = paths, result
        return cache[name]

    return get


def _connect(result):
    return sqlite3.connect(f"file:{result.path}?immutable=1", uri=True)


def _stored(value, arrow_type):
    """A parquet value as the database stores it (float32: its shortest decimal)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if pa.types.is_float32(arrow_type):
        return float(str(np.float32(value)))
    if pa.types.is_list(arrow_type):
        return json.dumps(value)
    return value


# ---------------------------------------------------------------------------
# The registry

@pytest.mark.parametrize("name", PROFILES)
def test_profile_is_declared_whole(name):
    profile = PROFILES[name]
    assert profile.name == name == name.lower()
    assert {"url", "text"} <= set(profile.mapped), "the build needs a URL and a caption"
    assert profile.best_first in (None, *profile.mapped)
    sites = [c.site for c in profile.columns if c.site]
    assert len(sites) == len(set(sites)) and set(sites) <= set(SITE_COLUMNS)
    extras = {c.name.lower() for c in profile.extras}
    assert set(profile.shown) <= extras
    assert not extras & (set(SITE_COLUMNS) | {"rowid", "domain_id", "url_hash"})
    assert all(c.type in sample_profiles.ARROW_TYPES for c in profile.columns)
    assert profile.title and profile.source and profile.licence and profile.licence_url.startswith("https://")
    assert profile.rows > 1_000_000


def test_profiles_command_lists_every_profile():
    result = CliRunner().invoke(laion, ["profiles"])
    assert result.exit_code == 0
    for profile in PROFILES.values():
        assert f"{profile.name}: {profile.title}\n  source:     {profile.source} (" in result.output
    assert "  maps:       url, text <- caption, width, height, hash\n" in result.output  # PD12M
    assert "  NULL:       similarity, punsafe, pwatermark, aesthetic, __index_level_0__\n" in result.output
    assert "aesthetic <- aesthetic_score_laion_v2" in result.output


# ---------------------------------------------------------------------------
# Every profile: sampled, found, built, served

@pytest.mark.parametrize("name", PROFILES)
def test_sample_writes_the_profiles_schema_and_is_found(name, built):
    paths, _ = built(name)
    profile = PROFILES[name]
    for path in paths:
        schema = pq.read_schema(path).remove_metadata()
        if name == profiles.DEFAULT:
            assert schema == sample.SCHEMA
        else:
            assert schema.names == [c.name for c in profile.columns if c.name != "__index_level_0__"]
            assert schema == sample_profiles.schema(profile)
        assert open_source(path).profile is profile
    urls = pq.read_table(paths, columns=[profile.mapped["url"].name]).column(0).to_pylist()
    for url, what in sample.AWKWARD_URLS:
        assert url in urls, what


@pytest.mark.parametrize("name", PROFILES)
def test_built_database_holds_the_profiles_columns(name, built):
    paths, result = built(name)
    profile = PROFILES[name]
    table = pa.concat_tables(pq.read_table(p) for p in paths)
    conn = _connect(result)
    assert result.rows == table.num_rows == conn.execute("select count(*) from images").fetchone()[0]
    assert result.profile == name and result.filter is None
    info = dict(conn.execute("select key, value from build_info"))
    present = [site for site, column in profile.mapped.items() if column.name in table.column_names]
    assert info["profile"] == name and info["profile_title"] == profile.title
    assert info["licence"] == profile.licence and info["source_url"] == profile.source_url
    assert json.loads(info["site_columns"]) == present
    assert json.loads(info["source_columns"]) == {site: profile.mapped[site].name for site in present}
    extras = [c for c in table.column_names if c not in {profile.mapped[s].name for s in present}]
    assert json.loads(info["extra_columns"]) == [c.lower() for c in extras]
    assert json.loads(info["image_page_columns"]) == list(profile.shown)
    assert info["order"] == (f"{profile.best_first} desc" if profile.best_first else "source order")
    assert info["filter"] is None and info["filtered_rows"] == 0
    # Columns: the site's, NULL where the source has none, then the extras.
    columns = [r[1] for r in conn.execute("pragma table_info(images)")]
    assert columns == list(SITE_COLUMNS) + ["domain_id", "url_hash"] + [c.lower() for c in extras]
    for site_column in SITE_COLUMNS:
        filled = conn.execute(f"select count([{site_column}]) from images").fetchone()[0]
        if site_column not in present:
            assert filled == 0, site_column
    # Every mapped and extra column holds the parquet values.
    for site_column, source_name in [(s, profile.mapped[s].name) for s in present] + [(c.lower(), c) for c in extras]:
        arrow_type = table.schema.field(source_name).type
        expected = [_stored(v, arrow_type) for v in table.column(source_name).to_pylist()]
        if site_column == "hash":
            expected = [None if v is None else str(v) for v in expected]
        got = [r[0] for r in conn.execute(f"select [{site_column}] from images")]
        key = lambda v: (v is None, (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)))  # noqa: E731
        assert sorted(got, key=key) == sorted(expected, key=key), site_column


@pytest.mark.parametrize("name", PROFILES)
def test_rows_are_stored_best_first_or_in_source_order(name, built):
    paths, result = built(name)
    profile = PROFILES[name]
    conn = _connect(result)
    if profile.best_first:
        values = [r[0] for r in conn.execute(f"select {profile.best_first} from images order by rowid")]
        present = [v for v in values if v is not None]
        assert present == sorted(present, reverse=True)
        assert values[: len(present)] == present  # NULL last
    else:
        url = profile.mapped["url"].name
        expected = [u for p in paths for u in pq.read_table(p, columns=[url]).column(0).to_pylist()]
        assert [r[0] for r in conn.execute("select url from images order by rowid")] == expected


@pytest.mark.asyncio
@pytest.mark.parametrize("name", PROFILES)
async def test_site_serves_each_profiles_database(name, built):
    _, result = built(name)
    ds = site.make_datasette(result.path, result.inspect_path)
    db = "/" + result.database_name
    response = await ds.client.get(f"{db}/images.json?_search={SEARCH}&_shape=array&_size=20")
    assert response.status_code == 200, response.text
    rows = response.json()
    assert rows and all(SEARCH in r["text"].lower() for r in rows)
    expected = _connect(result).execute(
        "select count(*) from images_fts where images_fts match ?", [SEARCH]).fetchone()[0]
    counted = (await ds.client.get(f"{db}/images.json?_search={SEARCH}&_size=1")).json()
    assert counted["filtered_table_rows_count"] == expected
    for path in ["/", f"{db}/images?_search={SEARCH}", f"{db}/images?_search={SEARCH}&_view=gallery",
                 f"{db}/images", f"{db}/images/1", f"{db}/domain?_sort_desc=image_counts", "/-/laion/stats"]:
        assert (await ds.client.get(path)).status_code == 200, path


# ---------------------------------------------------------------------------
# Refusals, through the CLI: exit code and the exact message

def run_build(out, *args):
    result = CliRunner().invoke(laion, ["build", str(out), *map(str, args)])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr


def refused(message):
    return f"Error: {message}\nNothing was written: fix the problem and run the build again.\n"


def _sampled(tmp_path, name, rows=300, **options):
    return sample.generate(tmp_path / name, rows=rows, files=1, seed=2, profile=name, **options)[0]


@pytest.mark.parametrize(
    "name,dropped,message",
    [
        ("pd12m", "license", "missing required column 'license' (kept as images.license) of profile pd12m, "
                             "the nearest to this file's columns; `datasette laion profiles` lists each profile's columns"),
        ("coyo-700m", "text", "missing required column 'text' (for images.text) of profile coyo-700m, "
                              "the nearest to this file's columns; `datasette laion profiles` lists each profile's columns"),
        ("laion-aesthetics-v2", "TEXT", "missing required column 'TEXT' (for images.text)"),
        ("laion-aesthetics-v1", "aesthetic", "missing required column 'AESTHETIC_SCORE' or 'aesthetic' (for images.aesthetic)"),
    ],
)
def test_missing_required_column_is_refused(tmp_path, name, dropped, message):
    path = tmp_path / "bad.parquet"
    pq.write_table(pq.read_table(_sampled(tmp_path, name)).drop_columns([dropped]), path)
    out = tmp_path / site.DATABASE_FILE
    assert run_build(out, path) == (1, refused(f"{path}: {message}"))
    assert not out.exists()


def test_optional_column_may_be_missing(tmp_path):
    """PD12M's source column came in a later release."""
    path = tmp_path / "older.parquet"
    pq.write_table(pq.read_table(_sampled(tmp_path, "pd12m")).drop_columns(["source"]), path)
    source = open_source(path)
    assert source.profile.name == "pd12m" and "source" not in source.extras


def test_wrong_type_is_refused_naming_found_and_expected(tmp_path):
    table = pq.read_table(_sampled(tmp_path, "datacomp-1b"))
    path = tmp_path / "bad.parquet"
    pq.write_table(table.set_column(table.column_names.index("face_bboxes"), "face_bboxes",
                                    pa.array(["[]"] * table.num_rows)), path)
    assert run_build(tmp_path / site.DATABASE_FILE, path) == (
        1, refused(f"{path}: column 'face_bboxes' has type string, expected a list"))


def test_forced_profile_on_another_schema_is_refused(tmp_path):
    path = _sampled(tmp_path, "laion-aesthetics-v2")
    assert run_build(tmp_path / site.DATABASE_FILE, path, "--profile", "pd12m") == (1, refused(
        f"{path}: missing required column 'id' (kept as images.id) of profile pd12m, given by --profile; "
        "this file's columns are those of profile laion-aesthetics-v2"))
    code, stderr = run_build(tmp_path / site.DATABASE_FILE, path, "--profile", "nope")
    assert code == 2 and "Invalid value for '--profile': 'nope' is not one of 'laion-aesthetics-v2'," in stderr


def test_forced_profile_that_fits_is_used(tmp_path):
    """v1 and v2 files share every column but the score's: forcing v1 on a
    v1 file is what finding it gives."""
    path = _sampled(tmp_path, "laion-aesthetics-v1")
    out = tmp_path / site.DATABASE_FILE
    assert run_build(out, path, "--profile", "laion-aesthetics-v1", "--silent") == (0, "")
    assert sqlite3.connect(out).execute("select value from build_info where key = 'profile'").fetchone() == (
        "laion-aesthetics-v1",)


@pytest.mark.parametrize(
    "name,option,column",
    [("pd12m", "--min-aesthetic", "aesthetic"), ("cc12m", "--max-punsafe", "punsafe"),
     ("datacomp-1b", "--min-aesthetic", "aesthetic")],
)
def test_filter_on_a_column_the_profile_lacks_is_refused(tmp_path, name, option, column):
    path = _sampled(tmp_path, name)
    profile = PROFILES[name]
    assert run_build(tmp_path / site.DATABASE_FILE, path, option, "6") == (1, refused(
        f"{option} 6: {path} is of profile {name} ({profile.title}), which has no {column} column; "
        f"leave {option} out"))


def test_files_of_different_profiles_are_refused_together(tmp_path):
    first, second = _sampled(tmp_path, "laion-aesthetics-v2"), _sampled(tmp_path, "pd12m")
    assert run_build(tmp_path / site.DATABASE_FILE, first, second) == (1, refused(
        f"{second}: a file of profile pd12m, but {first} is of profile laion-aesthetics-v2; "
        "build each source into a database of its own"))


# ---------------------------------------------------------------------------
# Row filters

def _stored_scores(path, column):
    """The column's values as the database stores them, by plain Python."""
    return np.array([np.nan if v is None else float(str(np.float32(v)))
                     for v in pq.read_table(path, columns=[column]).column(0).to_pylist()])


def test_min_aesthetic_keeps_exactly_the_rows_at_or_over_it(tmp_path):
    """A 4.5+ source (a tenth of its rows score 6 or more), filtered at 6
    and at punsafe <= 0.5, with an exclusion list: the kept rows are exactly
    those pyarrow and Python pick out."""
    [path] = sample.generate(tmp_path / "in", rows=6_000, files=1, seed=5, aesthetic_from=4.5)
    table = pq.read_table(path)
    aesthetic, punsafe = _stored_scores(path, "AESTHETIC_SCORE"), _stored_scores(path, "punsafe")
    hashes = np.array(table.column("hash").to_pylist())
    wanted = (aesthetic >= 6) & (punsafe <= 0.5)
    assert 0.05 < (aesthetic >= 6).mean() < 0.15
    excluded_hash = int(hashes[wanted][0])
    exclude = tmp_path / "optout.txt"
    exclude.write_text(f"{excluded_hash}\n")
    out = tmp_path / site.DATABASE_FILE
    code, stderr = run_build(out, path, "--min-aesthetic", 6, "--max-punsafe", "0.5", "--exclude", exclude,
                             "--batch-size", 700)
    assert code == 0, stderr
    kept = int(wanted.sum())
    assert (f"  images:      {kept - 1:,} rows from 6,000 parquet rows\n"
            f"  filter:      aesthetic >= 6 and punsafe <= 0.5: {6_000 - kept:,} rows left out, {kept:,} kept\n"
            "  excluded:    1 rows\n") in stderr
    conn = sqlite3.connect(out)
    stored = conn.execute("select hash, aesthetic, punsafe from images").fetchall()
    assert sorted(int(h) for h, _, _ in stored) == sorted(int(h) for h in hashes[wanted] if h != excluded_hash)
    assert all(a >= 6 and p <= 0.5 for _, a, p in stored)
    info = dict(conn.execute("select key, value from build_info"))
    assert (info["filter"], info["filtered_rows"], info["source_rows"], info["rows"], info["excluded_rows"]) == (
        "aesthetic >= 6 and punsafe <= 0.5", 6_000 - kept, 6_000, kept - 1, 1)
    assert conn.execute("select loaded from source_files").fetchone() == (kept - 1,)
    # the figures of the statistics page are those of the rows kept
    assert conn.execute("select value from stats_figures where key = 'aesthetic.count'").fetchone() == (kept - 1,)
    assert conn.execute("select min(aesthetic) >= 6 from images").fetchone() == (1,)


def test_min_similarity_keeps_exactly_the_rows_at_or_over_it(tmp_path):
    """A DataComp source (no aesthetic score; stored by CLIP similarity)
    filtered at similarity >= the median: exactly the rows pyarrow picks out,
    and the site names the filter in the dataset's title."""
    [path] = sample.generate(tmp_path / "in", rows=3_000, files=1, seed=6, profile="datacomp-1b")
    similarity = _stored_scores(path, "clip_b32_similarity_score")
    threshold = float(np.nanmedian(similarity))
    uids = pq.read_table(path).column("uid").to_pylist()
    wanted = {str(u) for u, s in zip(uids, similarity) if s >= threshold}
    out = tmp_path / "datacomp.db"
    code, stderr = run_build(out, path, "--min-similarity", threshold)
    assert code == 0, stderr
    conn = sqlite3.connect(out)
    stored = conn.execute("select hash, similarity from images order by rowid").fetchall()
    assert {h for h, _ in stored} == wanted
    assert all(s >= threshold for _, s in stored)
    assert [s for _, s in stored] == sorted((s for _, s in stored), reverse=True)  # best first: similarity
    info = dict(conn.execute("select key, value from build_info"))
    assert info["filter"].startswith("similarity >= ") and int(info["filtered_rows"]) == 3_000 - len(wanted)
    from datasette_laion import sites
    assert sites.from_file(out).title == f"DataComp-1B, {info['filter']}"
    code, stderr = run_build(tmp_path / "pd12m.db", sample.generate(tmp_path / "pd", rows=500, profile="pd12m")[0],
                             "--min-similarity", 0.3)
    assert code != 0 and "has no similarity column; leave --min-similarity out" in stderr


@pytest.fixture
def sorted_file(tmp_path):
    """1,000 rows in 10 row groups, sorted by aesthetic score (from 4.5):
    the first row groups hold no row scoring 6 or more, the last ones do."""
    [path] = sample.generate(tmp_path / "in", rows=1_000, files=1, seed=8, aesthetic_from=4.5)
    table = pq.read_table(path)
    table = table.take(pc.sort_indices(table, sort_keys=[("AESTHETIC_SCORE", "ascending")]))
    out = tmp_path / "sorted.parquet"
    pq.write_table(table, out, row_group_size=100)
    return out


def _matching_groups(path, threshold):
    scores = pq.ParquetFile(path)
    return [g for g in range(scores.num_row_groups)
            if any(float(str(np.float32(v))) >= threshold
                   for v in scores.read_row_group(g, columns=["AESTHETIC_SCORE"]).column(0).to_pylist())]


def test_row_groups_without_matches_are_not_decoded(tmp_path, sorted_file, monkeypatch):
    """Their other columns are not read: the build asks for every column of
    the matching row groups only."""
    matching = _matching_groups(sorted_file, 6)
    assert 0 < len(matching) < 10
    decoded = []
    batches = RowGroups.batches

    def counting(self, group, batch_size):
        decoded.append(group)
        return batches(self, group, batch_size)

    monkeypatch.setattr(RowGroups, "batches", counting)
    result = build.build(tmp_path / "out.db", [sorted_file], progress=False, workers=1, sort_rows=150,
                         min_aesthetic=6)
    assert decoded == matching
    assert result.rows == int((_stored_scores(sorted_file, "AESTHETIC_SCORE") >= 6).sum())


def test_damaged_row_group_without_matches_is_never_read(tmp_path, sorted_file):
    """The captions of row group 0 (no match) damaged: the build without a
    filter fails on them; with one it never reads them, and succeeds."""
    assert 0 not in _matching_groups(sorted_file, 6)
    group = pq.read_metadata(sorted_file).row_group(0)
    text = group.column(pq.read_schema(sorted_file).names.index("TEXT"))
    start = min(text.data_page_offset, text.dictionary_page_offset or text.data_page_offset)
    data = bytearray(sorted_file.read_bytes())
    data[start : start + 64] = b"\xff" * 64
    damaged = tmp_path / "damaged.parquet"
    damaged.write_bytes(bytes(data))
    code, stderr = run_build(tmp_path / "a.db", damaged, "--silent")
    assert code == 1 and stderr.startswith(f"Error: {damaged}: read failed ("), stderr
    code, stderr = run_build(tmp_path / "b.db", damaged, "--silent", "--min-aesthetic", 6)
    assert (code, stderr) == (0, "")
    rows = sqlite3.connect(tmp_path / "b.db").execute("select count(*) from images").fetchone()[0]
    assert rows == int((_stored_scores(sorted_file, "AESTHETIC_SCORE") >= 6).sum())


def test_sample_command_writes_a_profiles_files(tmp_path):
    result = CliRunner().invoke(laion, ["sample", str(tmp_path), "--profile", "coyo-700m", "--rows", "300",
                                        "--files", "2", "--silent"])
    assert result.exit_code == 0, result.output
    paths = result.output.split()
    assert len(paths) == 2
    assert pq.read_schema(paths[0]).remove_metadata() == sample_profiles.schema(PROFILES["coyo-700m"])
    scores = pq.read_table(paths, columns=["aesthetic_score_laion_v2"]).column(0)
    assert 4.0 < pc.mean(scores).as_py() < 6.0  # COYO's spread, not LAION-Aesthetics' 6+


def test_aesthetic_from_writes_a_larger_set(tmp_path):
    [path] = sample.generate(tmp_path, rows=20_000, files=1, seed=4, aesthetic_from=4.75)
    scores = pq.read_table(path, columns=["AESTHETIC_SCORE"]).column(0)
    assert pc.min(scores).as_py() >= 4.75
    assert 0.08 < pc.mean(pc.cast(pc.greater_equal(scores, 6.0), pa.int8())).as_py() < 0.12
