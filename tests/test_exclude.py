import sqlite3

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasette_laion import build
from datasette_laion.exclude import ExclusionList
from datasette_laion.source import SourceError


@pytest.fixture(scope="module")
def rows(parquet_dir):
    return pq.read_table(parquet_dir, columns=["URL", "hash"]).to_pylist()


def test_text_csv_and_parquet_lists(tmp_path, parquet_dir, rows):
    by_url = [r["URL"] for r in rows[:5]]
    by_hash = [r["hash"] for r in rows[10:14]]
    text = tmp_path / "optout.txt"
    text.write_text("# opt-out list\n\n" + "\n".join(by_url[:3]) + "\n" + str(by_hash[0]) + "\n")
    csv_file = tmp_path / "relaion-removed.csv"
    csv_file.write_text("hash,reason\n" + "".join(f"{h},csam-filter\n" for h in by_hash[1:]))
    parquet_file = tmp_path / "more.parquet"
    pq.write_table(pa.table({"url": by_url[3:5] + ["https://not-in-the-data.example/x.jpg"]}), parquet_file)
    out = tmp_path / "out.db"
    result = build.build(out, [parquet_dir], exclude=[text, csv_file, parquet_file], progress=False)
    url_set = set(by_url)
    hash_set = set(by_hash)
    expected = sum(1 for r in rows if r["URL"] in url_set or r["hash"] in hash_set)
    assert result.excluded == expected >= 9
    assert result.rows == len(rows) - expected
    conn = sqlite3.connect(out)
    assert conn.execute(
        f"select count(*) from images where url in ({','.join('?' * len(by_url))})", by_url
    ).fetchone()[0] == 0
    assert conn.execute(
        f"select count(*) from images where hash in ({','.join('?' * len(by_hash))})", [str(h) for h in by_hash]
    ).fetchone()[0] == 0
    summary = conn.execute("select name, urls, hashes, rows_excluded from exclusions order by id").fetchall()
    assert [s[:3] for s in summary] == [("optout.txt", 3, 1), ("relaion-removed.csv", 0, 3), ("more.parquet", 3, 0)]
    assert sum(s[3] for s in summary) >= expected
    assert dict(conn.execute("select key, value from build_info").fetchall())["excluded_rows"] == expected
    # counts are of what is left
    assert conn.execute("select sum(image_counts) from domain").fetchone()[0] + conn.execute(
        "select count(*) from images where domain_id is null"
    ).fetchone()[0] == result.rows


def test_unsigned_hash_and_url_with_comma(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("18446744073709551615\nhttps://example.com/a,b.jpg\n-5\n")
    exclusion = ExclusionList.read(path)
    assert exclusion.hashes == {"-1", "-5"}
    assert exclusion.urls == {"https://example.com/a,b.jpg"}


@pytest.mark.parametrize(
    "content,message",
    [
        ("url,hash\nhttps://x.example/a.jpg,not-a-number\n", "line 2: hash 'not-a-number' is not a 64-bit integer"),
    ],
)
def test_bad_lists(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(SourceError, match=message):
        ExclusionList.read(path)


def test_missing_list_is_refused_before_building(tmp_path, parquet_dir):
    with pytest.raises(build.BuildError, match="nope.txt: exclusion list not found"):
        build.build(tmp_path / "out.db", [parquet_dir], exclude=[tmp_path / "nope.txt"], progress=False)
    assert list(tmp_path.iterdir()) == []
