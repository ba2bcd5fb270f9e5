import hashlib
from collections import Counter
from urllib.parse import urlsplit

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from datasette_laion import sample


def test_exact_schema_and_file_names(parquet_dir):
    files = sorted(parquet_dir.glob("*.parquet"))
    import re

    assert len(files) == 3
    for i, f in enumerate(files):
        assert re.fullmatch(rf"train-0000{i}-of-00003-[0-9a-f]{{16}}\.parquet", f.name), f.name
    for f in files:
        assert pq.read_schema(f).remove_metadata() == sample.SCHEMA


def test_deterministic_for_a_seed(tmp_path):
    a = sample.generate(tmp_path / "a", rows=3000, files=2, seed=11)
    b = sample.generate(tmp_path / "b", rows=3000, files=2, seed=11)
    c = sample.generate(tmp_path / "c", rows=3000, files=2, seed=12)
    digest = lambda paths: [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]  # noqa: E731
    assert [p.name for p in a] == [p.name for p in b]
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)
    assert sum(pq.read_metadata(p).num_rows for p in a) == 3000


def test_every_awkward_row_in_every_file(parquet_dir):
    for path in parquet_dir.glob("*.parquet"):
        table = pq.read_table(path)
        urls = set(table.column("URL").to_pylist())
        captions = table.column("TEXT").to_pylist()
        for url, what in sample.AWKWARD_URLS:
            assert url in urls, (path.name, what)
        for caption, what in sample.AWKWARD_CAPTIONS:
            assert caption in captions, (path.name, what)


def test_realistic_figures(tmp_path):
    table = pq.read_table(sample.generate(tmp_path, rows=60_000, files=1, seed=1)[0])
    n = table.num_rows
    hosts = Counter()
    for url in table.column("URL").to_pylist():
        try:
            hosts[urlsplit(url).hostname] += 1
        except ValueError:
            pass
    top = hosts.most_common(100)
    assert top[0][0] == "i.pinimg.com" and 0.07 < top[0][1] / n < 0.10
    assert 0.38 < sum(c for _, c in top) / n < 0.56  # ~47% in the real data
    lengths = pc.utf8_length(table.column("TEXT"))
    assert 55 < pc.mean(lengths).as_py() < 80  # ~67 characters in the real data
    assert 0.02 < pc.mean(pc.cast(pc.greater(table["punsafe"], 0.5), "int8")).as_py() < 0.04
    assert 0.045 < pc.mean(pc.cast(pc.greater(table["pwatermark"], 0.8), "int8")).as_py() < 0.075
    assert pc.min(table["AESTHETIC_SCORE"]).as_py() >= 6.0
    assert table.column("TEXT").null_count > 0
    lower = pc.utf8_lower(table.column("TEXT"))
    share = lambda word: pc.mean(pc.cast(pc.match_substring_regex(lower, rf"\b{word}\b"), "int8")).as_py()  # noqa: E731
    assert share("the") > 0.5  # the very common word
    assert 0.08 < share("dog") < 0.18  # "dog": 1.4M of 12M
    assert pc.sum(pc.cast(pc.match_substring(table.column("TEXT"), "Thomas Kinkade"), "int8")).as_py() >= 1


@pytest.mark.parametrize("rows,files", [(0, 1), (2, 3)])
def test_fewer_rows_than_files(tmp_path, rows, files):
    """Every file is written, with the schema; some hold no rows."""
    paths = sample.generate(tmp_path, rows=rows, files=files, seed=1)
    assert len(paths) == files
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in paths) == rows
