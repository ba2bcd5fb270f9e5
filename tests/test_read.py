"""Reading a checked file as the images columns (read.py): the types each
column accepts and what they are stored as; values refused while reading."""
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from datasette_laion import sample
from datasette_laion.read import iter_batches, normalise
from datasette_laion.source import SourceError, merged_extras, open_source


def _table(rows=50, seed=3):
    # A slice of generated rows, exact v2 schema.
    import numpy as np

    world = sample._World(seed, rows)
    return sample._chunk(world, np.random.default_rng(seed), rows, False, 0)


def _write(table, path):
    pq.write_table(table, path)
    return path


# Types accepted besides the v2 schema's (the v1 schema's int32 sizes, and what
# other writers make of the same data), and a value each is read as.
ACCEPTED = [
    ("WIDTH", pa.int32(), "width", 512),
    ("WIDTH", pa.int64(), "width", 512),
    ("WIDTH", pa.uint16(), "width", 512),
    ("WIDTH", pa.float32(), "width", 512),
    ("HEIGHT", pa.decimal128(21, 1), "height", 768),
    ("similarity", pa.float32(), "similarity", 0.3125),
    ("AESTHETIC_SCORE", pa.float64(), "aesthetic", 6.5),
    ("AESTHETIC_SCORE", pa.float16(), "aesthetic", 6.5),
    ("AESTHETIC_SCORE", pa.dictionary(pa.int32(), pa.float32()), "aesthetic", 6.5),
    ("punsafe", pa.int8(), "punsafe", 1.0),
    ("URL", pa.large_string(), "url", "https://example.com/a.jpg"),
    ("URL", pa.dictionary(pa.int32(), pa.string()), "url", "https://example.com/a.jpg"),
    ("TEXT", pa.null(), "text", None),
    ("hash", pa.string(), "hash", "-5"),
    ("hash", pa.int32(), "hash", "-5"),
    ("__index_level_0__", pa.uint32(), "__index_level_0__", 7),
]
VALUES = {"WIDTH": 512, "HEIGHT": 768, "similarity": 0.3125, "AESTHETIC_SCORE": 6.5, "punsafe": 1,
          "URL": "https://example.com/a.jpg", "TEXT": None, "hash": -5, "__index_level_0__": 7}


@pytest.mark.parametrize("column,arrow_type,images_column,value", ACCEPTED, ids=lambda v: str(v))
def test_accepted_types(tmp_path, column, arrow_type, images_column, value):
    table = _table(rows=3)
    raw = pa.array([VALUES[column]] * 3)
    if pa.types.is_dictionary(arrow_type):
        array = pc.cast(raw, arrow_type.value_type).dictionary_encode()
    else:
        array = pc.cast(raw, arrow_type)
    path = _write(table.set_column(table.column_names.index(column), column, array), tmp_path / "a.parquet")
    source = open_source(path)
    batch = normalise(next(iter_batches(source, 10)), source, {})
    assert batch.column(images_column).to_pylist() == [value] * 3


def test_unsigned_hash_is_read_as_the_signed_64_bits(tmp_path):
    """As LAION's int64 has them, and as exclusion lists match them."""
    table = _table(rows=2)
    hashes = pa.array([2**64 - 5, 5], pa.uint64())
    path = _write(table.set_column(table.column_names.index("hash"), "hash", hashes), tmp_path / "u.parquet")
    source = open_source(path)
    batch = normalise(next(iter_batches(source, 10)), source, {})
    assert batch.column("hash").to_pylist() == ["-5", "5"]


def test_value_beyond_sqlite_integers_names_file_and_column(tmp_path):
    """Allowed by its type, refused while reading: a uint64 beyond 2**63 - 1."""
    table = _table(rows=2).append_column("x_id", pa.array([1, 2**64 - 1], pa.uint64()))
    path = _write(table, tmp_path / "big.parquet")
    source = open_source(path)
    with pytest.raises(SourceError) as error:
        normalise(next(iter_batches(source, 10)), source, merged_extras([source]))
    assert str(error.value) == (
        f"{path}: column 'x_id' (uint64): Integer value 18446744073709551615 not in range: 0 to 9223372036854775807"
    )
