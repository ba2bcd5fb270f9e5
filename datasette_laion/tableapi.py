"""Datasette's table arguments on the search (``images?_search=...``, its
gallery and table views): each answered as Datasette's table page answers
it, or refused with a 400 (403 for a permission) that says why.

Answered: column filters (``col__op=value``: the cheap ones by search.py,
every other one as Datasette builds it, checked row by row), ``_where``
(row by row), ``_search``, ``_search_text``, ``_searchmode``, ``_sort``,
``_sort_desc``, ``_next``, ``_size``, ``_col``, ``_nocol``, ``_labels``,
``_label``, ``_nolabels``, ``_shape``, ``_json``, ``_json_infinity``,
``_nl``, ``_facet``, ``_facet_array``, ``_facet_date``, ``_facet_size``,
``_nofacet``, ``_nosuggest``, ``_nocount``, ``_timelimit``, ``_ttl``,
``_filter_column`` (the add-filter form's redirect), ``_sort_by_desc``,
``.csv`` with ``_stream``, ``_dl``, ``_header``; ``_fts_table`` and
``_fts_pk`` naming the table's own full-text index. Refused: ``_through``
(no table links to images), another ``_fts_table``, ``_search_<column>``
of a column the index does not have. Other ``_`` arguments are ignored,
as Datasette ignores them.

This module is pure: what a request asks for (``TableArgs``), and the
rows and CSV lines it gets.
"""
from dataclasses import dataclass
from typing import Optional

from .compat import CustomRow
from .search_request import SearchError

FTS_TABLE, FTS_PK, FTS_COLUMNS = "images_fts", "rowid", ("text",)
STREAM_CAP = 100_000  # rows of a streamed CSV (_stream=on); the caption search's own bound
TRUE, FALSE = ("on", "true", "1", "yes"), ("off", "false", "0", "no")


class Forbidden(Exception):
    """Not allowed for this actor: HTTP 403 with the message."""


@dataclass(frozen=True)
class TableArgs:
    columns: tuple  # the columns shown: rowid first, then _col/_nocol's choice
    labels: frozenset  # columns whose foreign keys are expanded ({"value", "label"}) in JSON and CSV
    html_labels: bool  # HTML shows labels (unless _labels=off)
    nocount: bool
    facets: bool  # facets asked for (and not turned off)
    time_limit_ms: Optional[int]
    ttl: int
    stream: bool = False
    download: bool = False
    header: bool = True
    extra_search: Optional[str] = None  # _search_text, ANDed with _search


def _boolean(value):
    """Datasette's value_as_boolean: True, False, or None for anything else."""
    value = (value or "").lower()
    return True if value in TRUE else False if value in FALSE else None


def parse(args, fmt, table_columns, foreign_keys, settings, metadata_facets=()):
    """The TableArgs of a request's arguments (a MultiParams); raises
    SearchError (400) for what the search cannot answer."""
    columns = _columns(args, table_columns)
    if args.get("_through"):
        raise SearchError("_through is not available on images: no table links to it through a foreign key")
    if args.get("_fts_table", FTS_TABLE) != FTS_TABLE or args.get("_fts_pk", FTS_PK) != FTS_PK:
        raise SearchError(f"_fts_table/_fts_pk: the images are searched through {FTS_TABLE} ({FTS_PK}) only")
    extra_search = None
    for key in args.keys():
        if key.startswith("_search_"):
            column = key[len("_search_"):]
            if column not in FTS_COLUMNS:
                raise SearchError(f"_search_{column}: the full-text index has no column {column!r}; "
                                  f"use _search or _search_{FTS_COLUMNS[0]}")
            extra_search = args.get(key) or None
            if extra_search and (args.get("_search") or "").strip():
                raise SearchError(f"_search and _search_{column} together: Datasette would search _search only "
                                  "and leave the other out; use one of them")
    limit = args.get("_timelimit")
    if limit and not (limit.isascii() and limit.isdigit()):
        raise SearchError(f"_timelimit: a number of milliseconds, not {limit[:40]!r}")
    facet_args = [k for k in args.keys() if k.startswith("_facet") and k != "_facet_size"]
    if facet_args and not settings["allow_facet"]:
        raise SearchError("_facet= is not allowed")
    stream = fmt == "csv" and bool(args.get("_stream"))
    if stream and not settings["allow_csv_stream"]:
        raise SearchError("CSV streaming is disabled")
    if stream and args.get("_next"):
        raise SearchError("_next not allowed for CSV streaming")
    labels = _labels(args, fmt, foreign_keys)
    shape = args.get("_shape", "arrays")
    nofacet = bool(args.get("_nofacet")) or fmt == "csv" or (fmt == "json" and shape in ("array", "object"))
    ttl = args.get("_ttl")
    return TableArgs(
        columns=columns,
        labels=labels,
        html_labels=_boolean(args.get("_labels")) is not False and not args.get("_nolabels"),
        nocount=bool(args.get("_nocount")) or fmt == "csv" or (fmt == "json" and shape in ("array", "object")),
        facets=not nofacet and bool(facet_args or metadata_facets),
        time_limit_ms=int(limit) if limit else None,
        ttl=int(ttl) if ttl is not None and ttl.isdigit() else settings["default_cache_ttl"],
        stream=stream,
        download=bool(args.get("_dl")),
        header=args.get("_header") != "off",
        extra_search=extra_search,
    )


def _columns(args, table_columns):
    """("rowid", ...) as Datasette's columns_to_select: _col's columns in
    their order, else all; less _nocol's."""
    columns = list(table_columns)
    if "_col" in args:
        wanted = args.getlist("_col")
        bad = [c for c in wanted if c not in table_columns]
        if bad:
            raise SearchError("_col={} - invalid columns".format(", ".join(bad)))
        columns = list(dict.fromkeys(wanted))
    if "_nocol" in args:
        unwanted = args.getlist("_nocol")
        bad = [c for c in unwanted if c not in table_columns]
        if bad:
            raise SearchError("_nocol={} - invalid columns".format(", ".join(bad)))
        columns = [c for c in columns if c not in unwanted]
    if not columns:
        raise SearchError("_col and _nocol leave no column to show")
    return ("rowid", *columns)


def _labels(args, fmt, foreign_keys):
    """The foreign-key columns expanded to {"value", "label"}: _label's,
    or all with _labels=on (the default of HTML, where labels are shown
    beside the value instead)."""
    if "_label" in args:
        return frozenset(c for c in args.getlist("_label") if c in foreign_keys)
    wanted = _boolean(args.get("_labels", ""))
    if wanted is None:
        wanted = fmt == "html"
    return frozenset(foreign_keys) if wanted else frozenset()


def rows_for(result_columns, rows, table_args, labels):
    """(columns, rows) as the page shows them: the chosen columns, and the
    expanded ones as {"value", "label"} (``labels``: {(column, value): label}).
    Rows with an expanded label are dicts, as Datasette's are then (its
    rows become objects in JSON, whatever the _shape)."""
    columns = list(table_args.columns)
    index = [result_columns.index(c) for c in columns]
    expanded = [c for c in columns if c in table_args.labels]
    any_label = bool(expanded) and any(
        (c, row[result_columns.index(c)]) in labels for row in rows for c in expanded)
    shown = []
    for row in rows:
        out = []
        for column, i in zip(columns, index):
            value = row[i]
            if column in table_args.labels and value is not None and (column, value) in labels:
                value = {"value": value, "label": labels[(column, value)]}
            out.append(value)
        shown.append(_custom_row(columns, out) if any_label else out)
    return columns, shown


def _custom_row(columns, values):
    """Datasette's row of a page with labels: a dict in JSON, values in order when iterated."""
    row = CustomRow(columns)
    for column, value in zip(columns, values):
        row[column] = value
    return row


def csv_headings(columns, expanded):
    """Datasette's CSV heading row: an expanded column is followed by <column>_label."""
    headings = []
    for column in columns:
        headings.append(column)
        if column in expanded:
            headings.append(f"{column}_label")
    return headings


def csv_row(columns, row, expanded):
    """A CSV line's cells: {"value", "label"} cells as two cells."""
    row = list(row)  # a CustomRow iterates its values
    if not expanded:
        return row
    out = []
    for column, cell in zip(columns, row):
        if column not in expanded:
            out.append(cell)
        elif cell is None:
            out.extend(("", ""))
        elif isinstance(cell, dict):
            out.extend((cell["value"], cell["label"]))
        else:
            out.extend((cell, ""))
    return out
