"""Reading LAION-Aesthetics parquet files: find them, check them, stream them.

Every file is checked (readable, every required column present with a usable
type) before the build writes anything. Batches come out normalised to the
SQLite columns of ``images``, whatever variant of the schema the file uses:

* LAION-Aesthetics v2 (``AESTHETIC_SCORE``, WIDTH/HEIGHT as double);
* LAION-Aesthetics v1 (``aesthetic``, WIDTH/HEIGHT as int32);
* copies with extra columns (``x_nn10``, ``y_nn10``, ...), kept as lower-cased
  extra columns.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


class SourceError(Exception):
    """An input that cannot be built from; the message names the file."""


# SQLite column -> (accepted source names, matched ignoring case; kind).
# Order is the column order of the images table.
REQUIRED_COLUMNS = {
    "url": (("URL",), "string"),
    "text": (("TEXT",), "string"),
    "width": (("WIDTH",), "number"),
    "height": (("HEIGHT",), "number"),
    "similarity": (("similarity",), "number"),
    "punsafe": (("punsafe",), "number"),
    "pwatermark": (("pwatermark",), "number"),
    "aesthetic": (("AESTHETIC_SCORE", "aesthetic"), "number"),  # v2, v1
    "hash": (("hash",), "id"),
}
# Kept when present, NULL when not: a pandas leftover that not every copy has.
OPTIONAL_COLUMNS = {
    "__index_level_0__": (("__index_level_0__",), "integer"),
}
CORE_COLUMNS = list(REQUIRED_COLUMNS) + list(OPTIONAL_COLUMNS)
# Columns the build adds; an extra source column may not take these names.
RESERVED_COLUMNS = {"rowid", "domain_id"}

KIND_DESCRIPTIONS = {
    "string": "a string",
    "number": "a number (integer or floating point)",
    "integer": "an integer",
    "id": "an integer or a string",
}


def _kind_accepts(kind, arrow_type):
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_null(arrow_type):
        return True  # an all-NULL column
    is_string = pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
    is_int = pa.types.is_integer(arrow_type)
    is_number = is_int or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type)
    return {
        "string": is_string,
        "number": is_number,
        "integer": is_int,
        "id": is_int or is_string,
    }[kind]


def _sqlite_type(arrow_type):
    """The SQLite column type an extra column is stored as."""
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_integer(arrow_type) or pa.types.is_boolean(arrow_type):
        return "INTEGER"
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "REAL"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "BLOB"
    return "TEXT"


@dataclass
class SourceFile:
    path: Path
    num_rows: int
    num_bytes: int
    row_group_rows: list
    # SQLite column -> the column's name in this file
    columns: dict
    # lower-cased extra column -> (name in this file, SQLite type)
    extras: dict = field(default_factory=dict)


def find_parquet_files(inputs):
    """Expand INPUT arguments: files as given, directories to their
    ``*.parquet`` files in name order."""
    paths = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.parquet") if p.is_file())
            if not found:
                raise SourceError(f"{path}: directory holds no *.parquet files")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise SourceError(f"{path}: no such file or directory")
    if not paths:
        raise SourceError("no input files given")
    seen = set()
    for path in paths:
        key = path.resolve()
        if key in seen:
            raise SourceError(f"{path}: given twice; each file can only be loaded once")
        seen.add(key)
    return paths


PARQUET_MAGIC = b"PAR1"
FETCH_AGAIN = "fetch the file again"


def _check_magic(path):
    """A parquet file starts and ends with PAR1 (the footer, which says where
    everything is, comes last): the cheap first test of a damaged download."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fp:
            head = fp.read(4)
            fp.seek(max(0, size - 4))
            tail = fp.read(4)
    except OSError as ex:
        raise SourceError(f"{path}: cannot read ({ex.strerror or ex})") from None
    if size == 0:
        raise SourceError(f"{path}: empty file (0 bytes), not parquet; {FETCH_AGAIN}")
    if tail == b"PARE":
        raise SourceError(f"{path}: encrypted parquet file; decrypt it first")
    if head != PARQUET_MAGIC and tail != PARQUET_MAGIC:
        raise SourceError(
            f"{path}: not a parquet file (it neither starts nor ends with {PARQUET_MAGIC.decode()}); check that it is the right file"
        )
    if tail != PARQUET_MAGIC:
        raise SourceError(
            f"{path}: truncated parquet file: it starts as parquet but its end (the footer) is missing, "
            f"as after an interrupted download ({size:,} bytes); {FETCH_AGAIN}"
        )
    if head != PARQUET_MAGIC:
        raise SourceError(f"{path}: damaged parquet file: it does not start with {PARQUET_MAGIC.decode()}; {FETCH_AGAIN}")


def open_source(path):
    """Check one parquet file and describe how its columns map to ours."""
    path = Path(path)
    _check_magic(path)
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        num_rows = parquet.metadata.num_rows
        row_group_rows = [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)]
    except Exception as ex:  # pyarrow raises several kinds for a bad file
        detail = str(ex).strip().replace("\n", " ")
        raise SourceError(f"{path}: corrupt parquet footer, cannot read the file ({detail}); {FETCH_AGAIN}") from None
    by_lower = {}
    for name in schema.names:
        lower = name.lower()
        if lower in by_lower:
            if by_lower[lower] == name:
                raise SourceError(f"{path}: column {name!r} appears twice")
            raise SourceError(
                f"{path}: columns {by_lower[lower]!r} and {name!r} differ only in case"
            )
        by_lower[lower] = name
    columns = {}
    for column, (accepted, kind) in {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}.items():
        present = [by_lower[a.lower()] for a in accepted if a.lower() in by_lower]
        if not present:
            if column in REQUIRED_COLUMNS:
                wanted = " or ".join(repr(a) for a in accepted)
                raise SourceError(
                    f"{path}: missing required column {wanted} (for images.{column})"
                )
            continue
        if len(present) > 1:
            raise SourceError(f"{path}: both {present[0]!r} and {present[1]!r} present")
        source_name = present[0]
        arrow_type = schema.field(source_name).type
        if not _kind_accepts(kind, arrow_type):
            raise SourceError(
                f"{path}: column {source_name!r} has type {arrow_type}, "
                f"expected {KIND_DESCRIPTIONS[kind]}"
            )
        columns[column] = source_name
    used = set(columns.values())
    extras = {}
    for name in schema.names:
        if name in used:
            continue
        lower = name.lower()
        if lower in CORE_COLUMNS or lower in RESERVED_COLUMNS:
            raise SourceError(
                f"{path}: extra column {name!r} clashes with the images column {lower!r}"
            )
        if "]" in name:  # the build quotes column names as [name]
            raise SourceError(f"{path}: extra column {name!r}: a column name cannot contain ']'")
        extras[lower] = (name, _sqlite_type(schema.field(name).type))
    return SourceFile(
        path=path,
        num_rows=num_rows,
        num_bytes=path.stat().st_size,
        row_group_rows=row_group_rows,
        columns=columns,
        extras=extras,
    )


def open_sources(inputs):
    """Find and check every input file; nothing is read beyond the footers.
    Files without rows are fine among others, but inputs that hold no row at
    all are refused: they would replace a database with an empty one."""
    sources = [open_source(path) for path in find_parquet_files(inputs)]
    if not any(source.num_rows for source in sources):
        names = ", ".join(str(s.path) for s in sources[:3]) + (f" and {len(sources) - 3} more" if len(sources) > 3 else "")
        raise SourceError(
            f"{names}: no rows to build from ({len(sources)} parquet file{'s' if len(sources) > 1 else ''}, "
            "0 rows); give the files that hold the data"
        )
    return sources


def merged_extras(sources):
    """Extra columns over all files, in first-seen order: name -> SQLite type."""
    extras = {}
    for source in sources:
        for lower, (_, sqlite_type) in source.extras.items():
            extras.setdefault(lower, sqlite_type)
    return extras


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
    try:
        # pre_buffer (the default) reads every requested row group's column
        # chunks ahead: a whole file in memory. Without it, one row group.
        parquet = pq.ParquetFile(source.path, pre_buffer=False)
        yield from parquet.iter_batches(batch_size=batch_size, columns=wanted, row_groups=row_groups)
    except (OSError, pa.ArrowException) as ex:
        detail = str(ex).strip().replace("\n", " ")
        raise SourceError(
            f"{source.path}: read failed ({detail}): the file is damaged or changed during the build; {FETCH_AGAIN}"
        ) from None
