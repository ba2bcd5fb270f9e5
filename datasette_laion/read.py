"""Streaming a checked source file (``source.py``) as the images columns.

``normalise`` turns a record batch of any source profile into the SQLite
columns of ``images``: the core columns converted as the original CSV import
stored them (scores through their shortest decimal, sizes as integers where
whole, hashes as signed 64-bit text), then every extra column. Read errors and
unstorable values name the file and column.
"""
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .source import CORE_COLUMNS, FETCH_AGAIN, SourceError


def _decimal_float(array):
    """float32 -> float64 through the shortest decimal that round-trips the
    float32 (6.5124545, not 6.512454509735107), as the original CSV import
    stored it."""
    if pa.types.is_float32(array.type) or pa.types.is_float16(array.type):
        array = pc.cast(pc.cast(array, pa.string()), pa.float64())
    else:
        array = pc.cast(array, pa.float64())
    # SQLite stores NaN as NULL; say so here, so that sorting agrees with it.
    return pc.if_else(pc.is_nan(array), pa.scalar(None, pa.float64()), array)


def _string(array):
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return pc.cast(array, pa.string())


def _hash(array):
    """hash as text; an unsigned 64-bit column is read as the same 64 bits
    signed, as LAION's int64 (and the exclusion lists) have them."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_uint64(array.type):
        array = pc.cast(array, pa.int64(), safe=False)
    return pc.cast(array, pa.string())


def _size(array):
    """WIDTH/HEIGHT: integers where every value is whole, else float."""
    if pa.types.is_integer(array.type):
        return pc.cast(array, pa.int64())
    try:
        return pc.cast(array, pa.int64())  # safe cast: fails on 512.5 or NaN
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pc.cast(array, pa.float64())


def _extra(array, sqlite_type):
    kind = array.type
    if pa.types.is_dictionary(kind):
        array = array.dictionary_decode()
        kind = array.type
    if sqlite_type == "REAL":
        return _decimal_float(array)
    if sqlite_type == "INTEGER":  # booleans too; fails on uint64 beyond int64
        return pc.cast(array, pa.int64())
    if sqlite_type == "BLOB" or pa.types.is_string(kind):
        return array
    if pa.types.is_large_string(kind):
        return pc.cast(array, pa.string())
    if pa.types.is_nested(kind):
        return pa.array(
            [None if v is None else json.dumps(v, default=str) for v in array.to_pylist()],
            pa.string(),
        )
    try:
        return pc.cast(array, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([None if v is None else str(v) for v in array.to_pylist()], pa.string())


CONVERTERS = {
    "url": _string,
    "text": _string,
    "width": _size,
    "height": _size,
    "similarity": _decimal_float,
    "punsafe": _decimal_float,
    "pwatermark": _decimal_float,
    "aesthetic": _decimal_float,
    "hash": _hash,
    "__index_level_0__": lambda array: pc.cast(array, pa.int64()),
}


def normalise(batch, source, extras):
    """A record batch of one source file as the images columns: CORE_COLUMNS
    then ``extras`` (every extra over all files; NULL where this file lacks one)."""
    arrays, names = [], []
    for column in CORE_COLUMNS:
        if column in source.columns:
            array = batch.column(source.columns[column])
            if pa.types.is_null(array.type):
                array = pa.nulls(len(array), pa.string() if column in ("url", "text", "hash") else pa.float64())
            else:
                array = _convert(CONVERTERS[column], array, source, source.columns[column])
        else:
            array = pa.nulls(batch.num_rows, pa.int64())
        arrays.append(array)
        names.append(column)
    for lower, sqlite_type in extras.items():
        if lower in source.extras:
            name = source.extras[lower][0]
            array = _convert(lambda a, kind=sqlite_type: _extra(a, kind), batch.column(name), source, name)
        else:
            array = pa.nulls(batch.num_rows, pa.string())
        arrays.append(array)
        names.append(lower)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _convert(converter, array, source, name):
    """A value that the column's type allows but SQLite cannot store (a uint64
    beyond 2**63 - 1) is found only here, while reading: name file and column."""
    try:
        return converter(array)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as ex:
        raise SourceError(f"{source.path}: column {name!r} ({array.type}): {ex}") from None


def iter_batches(source, batch_size, columns=None, row_groups=None):
    """Stream a file's record batches (raw, un-normalised); ``columns`` picks
    SQLite columns to read, ``row_groups`` row groups. Read errors name the file."""
    wanted = None
    if columns is not None:
        wanted = [source.columns[c] for c in columns if c in source.columns]
    with _read_errors(source):
        # pre_buffer (the default) reads every requested row group's column
        # chunks ahead: a whole file in memory. Without it, one row group.
        parquet = pq.ParquetFile(source.path, pre_buffer=False)
        yield from parquet.iter_batches(batch_size=batch_size, columns=wanted, row_groups=row_groups)


class RowGroups:
    """One file, read a row group at a time: some of its images columns
    (normalised), or all of its columns in batches. The file stays open until
    ``close()``; read errors name the file, as ``iter_batches``'s do."""

    def __init__(self, source):
        self.source = source
        with self._errors():
            self.file = pq.ParquetFile(source.path, pre_buffer=False)

    def _errors(self):
        return _read_errors(self.source)

    def columns(self, group, columns):
        """images column -> its normalised values in row group ``group``."""
        names = [self.source.columns[c] for c in columns]
        with self._errors():
            table = self.file.read_row_group(group, columns=names)
        return {c: normalise_column(table, self.source, c) for c in columns}

    def batches(self, group, batch_size):
        """The raw record batches of row group ``group``, every column."""
        with self._errors():
            yield from self.file.iter_batches(batch_size=batch_size, row_groups=[group])

    def close(self):
        self.file.close()


class _read_errors:
    def __init__(self, source):
        self.source = source

    def __enter__(self):
        return self

    def __exit__(self, kind, ex, tb):
        if isinstance(ex, (OSError, pa.ArrowException)):
            detail = str(ex).strip().replace("\n", " ")
            raise SourceError(
                f"{self.source.path}: read failed ({detail}): the file is damaged or changed during the build; "
                f"{FETCH_AGAIN}"
            ) from None
        return False


def normalise_column(table, source, column):
    """One images column of a table or batch read with that column, as
    ``normalise`` gives it (float64 for the numbers the build compares)."""
    array = table.column(source.columns[column])
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_null(array.type):
        return pa.nulls(len(array), pa.float64())
    return _convert(CONVERTERS[column], array, source, source.columns[column])
