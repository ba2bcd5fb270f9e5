"""Reading image-text parquet files: find them, check them, stream them.

Every file is checked (readable, its source profile found from its columns,
every required column present with a usable type) before the build writes
anything; ``read.py`` streams them, normalised to the SQLite columns of
``images``, whatever source the file comes from (``profiles.py``: LAION-Aesthetics v2 and
v1, Re-LAION, PD12M, COYO-700M, DataComp-1B, CC12M); columns a profile does
not map, listed or not (such as the ``x_nn10``, ``y_nn10``, ... of a copy), are
kept as lower-cased extra columns.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import profiles
from .profiles import SITE_COLUMNS


class SourceError(Exception):
    """An input that cannot be built from; the message names the file."""


# The images columns every source fills (NULL where its profile maps none),
# in table order, and the kind of source column each accepts.
CORE_COLUMNS = list(SITE_COLUMNS)
# Columns the build adds; an extra source column may not take these names.
RESERVED_COLUMNS = {"rowid", "domain_id", "url_hash"}

KIND_DESCRIPTIONS = {
    "string": "a string",
    "number": "a number (integer or floating point)",
    "integer": "an integer",
    "id": "an integer or a string",
    "list": "a list",
    "any": "any type",
}


def column_kind(column):
    """The kind of source column a profile's Column accepts."""
    if column.site:
        return SITE_COLUMNS[column.site]
    if column.type == "string":
        return "string"
    if column.type.startswith(("int", "uint", "float")):
        return "number"  # an integer column may come as float (pandas NaN)
    if column.type.startswith("list"):
        return "list"
    return "any"


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
        "list": pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)
        or pa.types.is_fixed_size_list(arrow_type),
        "any": True,
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
    profile: profiles.Profile = None


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


def open_source(path, profile=None):
    """Check one parquet file and describe how its columns map to ours.
    ``profile`` (a profiles.Profile) forces one; by default it is found from
    the file's columns (``find_profile``)."""
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
    profile = find_profile(path, by_lower, profile)
    columns = {}
    for column in profile.columns:
        source_name = by_lower.get(column.name.lower())
        if source_name is None:
            continue  # optional (find_profile checked the required ones)
        arrow_type = schema.field(source_name).type
        kind = column_kind(column)
        if not _kind_accepts(kind, arrow_type):
            raise SourceError(
                f"{path}: column {source_name!r} has type {arrow_type}, "
                f"expected {KIND_DESCRIPTIONS[kind]}"
            )
        if column.site:
            columns[column.site] = source_name
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
        profile=profile,
    )


def _missing(profile, by_lower):
    return [c for c in profile.required if c.name.lower() not in by_lower]


def find_profile(path, by_lower, forced=None):
    """The profile of a file whose columns are ``by_lower`` (lower-cased name
    -> name): ``forced`` if given, else the profile whose required columns are
    all there, the most specific (most required columns) of several, the first
    listed of equals. Missing columns are refused, naming the nearest profile."""
    if forced is not None:
        missing = _missing(forced, by_lower)
        if missing:
            matching = [p for p in profiles.PROFILES.values() if not _missing(p, by_lower)]
            hint = (f"this file's columns are those of profile {matching[0].name}" if matching
                    else "`datasette laion profiles` lists each profile's columns")
            raise SourceError(
                f"{path}: missing required column {missing[0].name!r} ({_role(missing[0])}) of profile "
                f"{forced.name}, given by --profile; {hint}"
            )
        return forced
    matching = [p for p in profiles.PROFILES.values() if not _missing(p, by_lower)]
    if matching:
        return max(matching, key=lambda p: len(p.required))  # max() keeps the first of equals
    fewest = min(len(_missing(p, by_lower)) for p in profiles.PROFILES.values())
    nearest = [p for p in profiles.PROFILES.values() if len(_missing(p, by_lower)) == fewest]
    first = _missing(nearest[0], by_lower)[0]
    # Equally near profiles that miss the same images column: name each one's.
    names = [first.name]
    for other in nearest[1:]:
        column = other.mapped.get(first.site) if first.site else None
        if column is not None and column in _missing(other, by_lower) and column.name not in names:
            names.append(column.name)
    message = f"{path}: missing required column {' or '.join(repr(n) for n in names)} ({_role(first)})"
    if nearest[0].name != profiles.DEFAULT:
        message += (f" of profile {nearest[0].name}, the nearest to this file's columns; "
                    "`datasette laion profiles` lists each profile's columns")
    raise SourceError(message)


def _role(column):
    return f"for images.{column.site}" if column.site else f"kept as images.{column.name.lower()}"


def open_sources(inputs, profile=None):
    """Find and check every input file; nothing is read beyond the footers.
    ``profile``: a profile's name, forced on every file. Files without rows
    are fine among others, but inputs that hold no row at all are refused:
    they would replace a database with an empty one. Files of profiles that
    fill different images columns, or order them differently, are refused
    together (the LAION-Aesthetics v1 and v2 variants build together)."""
    forced = None
    if profile is not None:
        try:
            forced = profiles.get(profile)
        except KeyError as ex:
            raise SourceError(ex.args[0]) from None
    sources = [open_source(path, forced) for path in find_parquet_files(inputs)]
    if not any(source.num_rows for source in sources):
        names = ", ".join(str(s.path) for s in sources[:3]) + (f" and {len(sources) - 3} more" if len(sources) > 3 else "")
        raise SourceError(
            f"{names}: no rows to build from ({len(sources)} parquet file{'s' if len(sources) > 1 else ''}, "
            "0 rows); give the files that hold the data"
        )
    first = sources[0]
    for source in sources[1:]:
        if _shape(source.profile) != _shape(first.profile):
            raise SourceError(
                f"{source.path}: a file of profile {source.profile.name}, but {first.path} is of profile "
                f"{first.profile.name}; build each source into a database of its own"
            )
    return sources


def _shape(profile):
    required = frozenset(site for site, column in profile.mapped.items() if not column.optional)
    return required, profile.best_first


def source_profiles(sources):
    """The profiles of the files, each once, in file order."""
    return list({source.profile.name: source.profile for source in sources}.values())


def source_info(sources, extras):
    """build_info rows about the source: its profile(s), licence, which
    images columns it fills (the others are NULL) and from which of its
    columns, and its extra columns (JSON lists and objects)."""
    found = source_profiles(sources)
    first = found[0]
    filled = {}
    for source in sources:
        for column, name in source.columns.items():
            filled.setdefault(column, name)
    return {
        "profile": ", ".join(p.name for p in found),
        "profile_title": first.title,
        "source": first.source,
        "source_url": first.source_url,
        "licence": first.licence,
        "licence_url": first.licence_url,
        "site_columns": json.dumps([c for c in CORE_COLUMNS if c in filled]),
        "source_columns": json.dumps({c: filled[c] for c in CORE_COLUMNS if c in filled}),
        "extra_columns": json.dumps(list(extras)),
        "image_page_columns": json.dumps([c for p in found for c in p.shown if c in extras]),
    }


def merged_extras(sources):
    """Extra columns over all files, in first-seen order: name -> SQLite type."""
    extras = {}
    for source in sources:
        for lower, (_, sqlite_type) in source.extras.items():
            extras.setdefault(lower, sqlite_type)
    return extras
