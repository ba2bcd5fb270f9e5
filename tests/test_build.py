"""The built database, checked against figures computed independently from
the same parquet files with pyarrow and urllib."""
import hashlib
import json
import sqlite3
from collections import Counter
from urllib.parse import urlsplit

import numpy
import pyarrow.parquet as pq
import pytest

from datasette_laion import build, site
from datasette_laion.names import load_names


def _host(url):
    if url is None:
        return None
    try:
        return urlsplit(url).hostname or None
    except ValueError:
        return None


@pytest.fixture(scope="module")
def parquet(parquet_dir):
    return pq.read_table(parquet_dir).to_pylist()


def test_one_row_per_parquet_row_no_junk(db, parquet, built):
    assert db.execute("select count(*) from images").fetchone()[0] == len(parquet) == built.rows
    assert db.execute("select count(*) from images where url is null and text is null and hash is null").fetchone()[0] == 0


def test_columns_hold_the_parquet_values(db, parquet):
    rows = db.execute(
        "select url, text, width, height, similarity, punsafe, pwatermark, aesthetic, hash, __index_level_0__ from images"
    ).fetchall()
    def key(r):
        return r[8], r[9]
    got = sorted(rows, key=key)
    expected = sorted(
        (
            (p["URL"], p["TEXT"], int(p["WIDTH"]), int(p["HEIGHT"]), p["similarity"], p["punsafe"],
             p["pwatermark"], p["AESTHETIC_SCORE"], str(p["hash"]), p["__index_level_0__"])
            for p in parquet
        ),
        key=key,
    )
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g[:4] == e[:4]
        assert g[4] == e[4]  # double stays exact
        for a, b in zip(g[5:8], e[5:8]):  # float32 stored as its shortest decimal
            assert a == float(str(numpy.float32(b)))
        assert g[8:] == e[8:]
    assert db.execute("select typeof(width), typeof(hash) from images limit 1").fetchone() == ("integer", "text")


def test_rows_are_best_first(db):
    assert db.execute(
        "select count(*) from images a join images b on b.rowid = a.rowid + 1 where b.aesthetic > a.aesthetic"
    ).fetchone()[0] == 0
    first, last = db.execute("select min(rowid), max(rowid) from images").fetchone()
    assert first == 1 and last == db.execute("select count(*) from images").fetchone()[0]
    top = db.execute("select aesthetic from images where rowid = 1").fetchone()[0]
    assert top == db.execute("select max(aesthetic) from images").fetchone()[0]


def test_domain_counts(db, parquet):
    expected = Counter(_host(p["URL"]) for p in parquet)
    no_host = expected.pop(None, 0)
    got = dict(db.execute("select domain, image_counts from domain").fetchall())
    assert got == dict(expected)
    assert db.execute("select count(*) from images where domain_id is null").fetchone()[0] == no_host
    assert no_host > 0
    assert db.execute("select count(*) from domain where domain = '' or domain is null").fetchone()[0] == 0
    # ids are ranked by count
    ids = [r[0] for r in db.execute("select id from domain order by image_counts desc, domain")]
    assert ids == list(range(1, len(ids) + 1))
    assert db.execute("select domain from domain where id = 1").fetchone()[0] == "i.pinimg.com"


def test_domain_id_links_each_image_to_its_host(db):
    rows = db.execute("select url, domain.domain from images left join domain on domain.id = images.domain_id").fetchall()
    assert all(_host(url) == host for url, host in rows)


def test_names_tables(db):
    names, _ = load_names()
    fts = sqlite3.connect(":memory:")
    fts.execute("create virtual table t using fts5(text)")
    fts.executemany("insert into t(rowid, text) select ?, ?", db.execute("select rowid, text from images").fetchall())
    for table, (_, rows) in names.items():
        got = dict(db.execute(f"select name, image_counts from [{table}]").fetchall())
        assert len(got) == len(rows)
        for row in rows:
            phrase = '"' + row["name"].replace('"', '""') + '"'
            expected = fts.execute("select count(*) from t where t match ?", [phrase]).fetchone()[0]
            assert got[row["name"]] == expected, row["name"]
    kinkade = db.execute("select image_counts from artists where name = 'Thomas Kinkade'").fetchone()[0]
    assert kinkade >= 1
    rock = db.execute("""select image_counts from celebrities where name = 'Dwayne "The Rock" Johnson'""").fetchone()[0]
    assert rock >= 1  # planted in every file
    assert db.execute("select category, notes from artists where name = 'Vincent van Gogh'").fetchone()[0] == "painter"


def test_fts_index_is_consistent_with_images(db_path):
    conn = sqlite3.connect(db_path)
    # FTS5 checks its index against the content table; raises if they differ.
    conn.execute("insert into images_fts(images_fts, rank) values ('integrity-check', 1)")
    conn.close()


def test_fts_search_agrees_with_tokenized_captions(db):
    import re

    texts = db.execute("select rowid, text from images").fetchall()
    expected = {rowid for rowid, text in texts if text and "dog" in re.findall(r"\w+", text.lower())}
    got = {r[0] for r in db.execute("select rowid from images_fts where images_fts match 'dog'")}
    assert got == expected and len(got) > 100


def test_fts_is_external_content_as_sqlite_utils_makes_it(db):
    sql = db.execute("select sql from sqlite_master where name = 'images_fts'").fetchone()[0]
    assert "content=[images]" in sql and "fts5" in sql.lower()
    assert db.execute("select count(*) from images_fts_data").fetchone()[0] > 0


@pytest.mark.parametrize(
    "query,index",
    [
        ("select * from images order by aesthetic desc limit 10", "images_aesthetic"),
        ("select * from images where aesthetic >= 7 order by aesthetic desc limit 10", "images_aesthetic"),
        ("select * from images order by punsafe desc limit 10", "images_punsafe"),
        ("select * from images order by pwatermark desc limit 10", "images_pwatermark"),
        ("select * from images where domain_id = 3 limit 10", "images_domain_id"),
        ("select * from domain order by image_counts desc limit 10", "domain_image_counts"),
    ],
)
def test_sorts_and_filters_use_indexes(db, query, index):
    plan = " ".join(r[-1] for r in db.execute("explain query plan " + query))
    assert index in plan, plan


def test_inspect_file(built, db):
    data = json.loads(built.inspect_path.read_text())
    assert list(data) == ["laion-aesthetic-6pls"]
    entry = data["laion-aesthetic-6pls"]
    assert entry["hash"] == hashlib.sha256(built.path.read_bytes()).hexdigest()
    assert entry["size"] == built.path.stat().st_size
    tables = [r[0] for r in db.execute("select name from sqlite_master where type = 'table'")]
    assert sorted(entry["tables"]) == sorted(tables)
    for table in tables:
        assert entry["tables"][table]["count"] == db.execute(f"select count(*) from [{table}]").fetchone()[0], table


def test_inspect_file_is_what_datasette_inspect_writes(built, tmp_path):
    from click.testing import CliRunner
    from datasette.cli import cli

    out = tmp_path / "inspect.json"
    result = CliRunner().invoke(cli, ["inspect", str(built.path), "--inspect-file", str(out)])
    assert result.exit_code == 0, result.output
    theirs = json.loads(out.read_text())
    ours = json.loads(built.inspect_path.read_text())
    assert ours == theirs


def test_build_info_tables(db, built):
    info = dict(db.execute("select key, value from build_info").fetchall())
    assert info["rows"] == built.rows and info["excluded_rows"] == 0
    files = db.execute("select name, rows, loaded from source_files order by id").fetchall()
    assert len(files) == 3 and sum(f[1] for f in files) == built.rows
    assert all(f[0].startswith("train-0000") for f in files)


def test_no_work_files_left(built):
    leftovers = [p.name for p in built.path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert sorted(p.name for p in built.path.parent.iterdir()) == ["inspect.json", site.DATABASE_FILE]


def test_database_name():
    assert build.database_name("/x/laion-aesthetic-6pls.db") == "laion-aesthetic-6pls"


def test_registered_domains(db, parquet):
    import tldextract

    extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    expected, hosts = Counter(), {}
    for p in parquet:
        host = _host(p["URL"])
        if host is None:
            continue
        registered = extract(host).top_domain_under_public_suffix
        if registered:
            expected[registered] += 1
            hosts.setdefault(registered, set()).add(host)
    got = {r[0]: (r[1], r[2]) for r in db.execute("select registered_domain, image_counts, hosts from registered_domain")}
    assert got == {k: (v, len(hosts[k])) for k, v in expected.items()}
    assert db.execute(
        "select registered_domain from registered_domain where id = 1"
    ).fetchone()[0] == "pinimg.com"
    # every host is linked to its registrable domain
    linked = db.execute(
        "select count(*) from domain join registered_domain r on r.id = domain.registered_domain_id"
    ).fetchone()[0]
    assert linked == sum(len(h) for h in hosts.values())


def test_url_hash_finds_every_url(db):
    from datasette_laion.functions import url_hash

    rows = db.execute("select rowid, url, url_hash from images where rowid % 97 = 0").fetchall()
    for rowid, url, stored in rows:
        assert stored == url_hash(url)
        if url is not None:
            found = [r[0] for r in db.execute("select rowid from images where url_hash = ? and url = ?", [url_hash(url), url])]
            assert rowid in found
    plan = " ".join(r[-1] for r in db.execute("explain query plan select * from images where url_hash = 5 and url = 'x'"))
    assert "images_url_hash" in plan


def test_build_figures(db, parquet):
    info = dict(db.execute("select key, value from build_info").fetchall())
    assert info["punsafe_over_0_5"] == sum(1 for p in parquet if p["punsafe"] > 0.5)
    assert info["pwatermark_over_0_8"] == sum(1 for p in parquet if p["pwatermark"] > 0.8)
    assert info["null_captions"] == sum(1 for p in parquet if p["TEXT"] is None)
    assert info["rows_without_domain"] == sum(1 for p in parquet if _host(p["URL"]) is None)


def test_no_rows_left_builds_an_empty_database(tmp_path):
    """Input without rows is refused (test_faults.py); rows that are all
    excluded make an empty database."""
    from datasette_laion import sample

    [path] = sample.generate(tmp_path / "in", rows=200, files=1, seed=4)
    every_hash = tmp_path / "all.txt"
    every_hash.write_text("".join(f"{h}\n" for h in pq.read_table(path).column("hash").to_pylist()))
    result = build.build(tmp_path / "out.db", [path], exclude=[every_hash], progress=False)
    assert result.rows == 0 and result.domains == 0 and result.excluded == 200
    conn = sqlite3.connect(tmp_path / "out.db")
    assert conn.execute("select count(*) from images_fts where images_fts match 'dog'").fetchone()[0] == 0
    assert conn.execute("select max(image_counts) from artists").fetchone()[0] == 0


def test_one_worker_and_two_workers_build_the_same_rows(tmp_path, parquet_dir):
    """Row groups of one file shared between two partition workers give
    exactly the rows, rowids and domain ids of a single worker."""
    table = pq.read_table(parquet_dir)
    single = tmp_path / "single.parquet"
    pq.write_table(table, single, row_group_size=700)  # many row groups
    dumps = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}.db"
        build.build(out, [single], progress=False, workers=workers, sort_rows=3000, batch_size=500)
        conn = sqlite3.connect(out)
        dumps.append((
            conn.execute("select rowid, url, text, aesthetic, hash, domain_id, url_hash from images order by rowid").fetchall(),
            conn.execute("select * from domain order by id").fetchall(),
            conn.execute("select * from registered_domain order by id").fetchall(),
        ))
        conn.close()
    assert dumps[0] == dumps[1]
    assert len(dumps[0][0]) == table.num_rows
