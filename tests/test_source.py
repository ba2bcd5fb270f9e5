"""Schema variants the build accepts, and inputs it refuses before writing."""
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from datasette_laion import build, sample, site
from datasette_laion.source import SourceError, find_parquet_files, open_source


def _table(rows=50, seed=3):
    # A slice of generated rows, exact v2 schema.
    import numpy as np

    world = sample._World(seed, rows)
    return sample._chunk(world, np.random.default_rng(seed), rows, False, 0)


def _write(table, path):
    pq.write_table(table, path)
    return path


def test_v2_schema_opens(tmp_path):
    source = open_source(_write(_table(), tmp_path / "a.parquet"))
    assert source.columns["aesthetic"] == "AESTHETIC_SCORE"
    assert source.num_rows == 50 and source.extras == {}


def test_v1_schema_and_extra_columns_build(tmp_path):
    table = _table()
    v1 = table.rename_columns([("aesthetic" if n == "AESTHETIC_SCORE" else n) for n in table.column_names])
    v1 = v1.set_column(2, "WIDTH", v1.column("WIDTH").cast(pa.int32()))
    v1 = v1.set_column(3, "HEIGHT", v1.column("HEIGHT").cast(pa.int32()))
    v1 = v1.append_column("x_nn10", pa.array([0.5] * len(v1), pa.float32()))
    v1 = v1.append_column("Y_NN10", pa.array([1.25] * len(v1), pa.float32()))
    _write(v1, tmp_path / "v1.parquet")
    _write(table, tmp_path / "v2.parquet")
    out = tmp_path / "out.db"
    result = build.build(out, [tmp_path / "v1.parquet", tmp_path / "v2.parquet"], progress=False)
    import sqlite3

    conn = sqlite3.connect(out)
    columns = [r[1] for r in conn.execute("pragma table_info(images)")]
    assert columns[-2:] == ["x_nn10", "y_nn10"]
    assert result.rows == 100
    assert conn.execute("select count(*), sum(x_nn10), sum(y_nn10) from images").fetchone() == (100, 25.0, 62.5)
    assert conn.execute("select typeof(width) from images limit 1").fetchone()[0] == "integer"


def _without(table, column):
    return table.drop_columns([column])


def _retyped(table, column, arrow_type):
    return table.set_column(table.column_names.index(column), column, pc.cast(table.column(column), arrow_type, safe=False))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda t: _without(t, "URL"), "missing required column 'URL' (for images.url)"),
        (lambda t: _without(t, "AESTHETIC_SCORE"), "missing required column 'AESTHETIC_SCORE' or 'aesthetic' (for images.aesthetic)"),
        (lambda t: _without(t, "punsafe"), "missing required column 'punsafe' (for images.punsafe)"),
        (lambda t: t.set_column(0, "URL", pa.array(range(len(t)))), "column 'URL' has type int64, expected a string"),
        (lambda t: t.set_column(5, "punsafe", pa.array(["x"] * len(t))), "column 'punsafe' has type string, expected a number (integer or floating point)"),
        (lambda t: t.set_column(8, "hash", pa.array([0.5] * len(t))), "column 'hash' has type double, expected an integer or a string"),
        (lambda t: t.append_column("url", pa.array(["x"] * len(t))), "columns 'URL' and 'url' differ only in case"),
        (lambda t: t.append_column("domain_id", pa.array([1] * len(t))), "extra column 'domain_id' clashes with the images column 'domain_id'"),
        (lambda t: _retyped(t, "WIDTH", pa.string()), "column 'WIDTH' has type string, expected a number (integer or floating point)"),
        (lambda t: _retyped(t, "HEIGHT", pa.bool_()), "column 'HEIGHT' has type bool, expected a number (integer or floating point)"),
        (lambda t: _retyped(t, "similarity", pa.string()), "column 'similarity' has type string, expected a number (integer or floating point)"),
        (lambda t: _retyped(t, "AESTHETIC_SCORE", pa.string()), "column 'AESTHETIC_SCORE' has type string, expected a number (integer or floating point)"),
        (lambda t: _retyped(t, "TEXT", pa.binary()), "column 'TEXT' has type binary, expected a string"),
        (lambda t: _retyped(t, "URL", pa.large_binary()), "column 'URL' has type large_binary, expected a string"),
        (lambda t: _retyped(t, "__index_level_0__", pa.float64()), "column '__index_level_0__' has type double, expected an integer"),
        (lambda t: pa.table(t.columns + [t.column("hash")], names=t.column_names + ["hash"]), "column 'hash' appears twice"),
        (lambda t: t.append_column("x[0]", pa.array([1] * len(t))), "extra column 'x[0]': a column name cannot contain ']'"),
    ],
)
def test_refused_with_file_and_column(tmp_path, change, message):
    path = _write(change(_table()), tmp_path / "bad.parquet")
    with pytest.raises(SourceError) as error:
        open_source(path)
    assert str(error.value) == f"{path}: {message}"


def test_inputs_files_and_directories(tmp_path):
    (tmp_path / "d").mkdir()
    for name in ["b.parquet", "a.parquet", "c.txt"]:
        (tmp_path / "d" / name).write_bytes(b"")
    found = find_parquet_files([tmp_path / "d"])
    assert [p.name for p in found] == ["a.parquet", "b.parquet"]
    with pytest.raises(SourceError, match="no such file or directory"):
        find_parquet_files([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="directory holds no \\*.parquet files"):
        find_parquet_files([tmp_path / "empty"])
    with pytest.raises(SourceError, match="given twice"):
        find_parquet_files([tmp_path / "d", tmp_path / "d" / "a.parquet"])


def test_bad_file_among_good_is_refused_before_writing(tmp_path, parquet_dir):
    bad = _write(_without(_table(), "TEXT"), tmp_path / "zz-bad.parquet")
    out = tmp_path / site.DATABASE_FILE
    with pytest.raises(build.BuildError, match=r"zz-bad.parquet: missing required column 'TEXT'"):
        build.build(out, [parquet_dir, bad], progress=False)
    assert list(tmp_path.iterdir()) == [bad]
