"""What a search asks for: the query string parsed once into a SearchRequest
(words as an FTS5 query, or words to search by meaning; filters, sort,
page), or a SearchError saying what cannot be honoured (HTTP 400).
``search`` runs it (``meaning_search`` a search by meaning)."""
import re
from dataclasses import dataclass, field

RESORT_CAP = 10_000  # relevance and column sorts up to this many matches
INT64_MAX = 2**63 - 1
SEARCH_COLUMNS = [
    "url", "text", "width", "height", "similarity", "punsafe", "pwatermark",
    "aesthetic", "hash", "__index_level_0__", "domain_id", "url_hash",
]
FILTER_COLUMNS = {
    "aesthetic": float, "punsafe": float, "pwatermark": float, "similarity": float,
    "width": int, "height": int, "domain_id": int,
}
OPERATORS = {"exact": "=", "gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}
SORTABLE = set(SEARCH_COLUMNS) | {"rowid"}
# _searchmode: words (FTS5, every term quoted), raw FTS5 syntax, or meaning
# (the words embedded by the CLIP text encoder: meaning_search.py)
MODES = ("default", "raw", "meaning")


class SearchError(Exception):
    """A bad request: the message is shown to the user with HTTP 400."""


def fts_query(text, mode="default"):
    """The FTS5 query for what a user typed.

    default: words are ANDed and "quoted phrases" kept together; every term is
    quoted, so no character the user types can be FTS5 syntax. An unbalanced
    quote runs to the end. raw: the text is FTS5 syntax (OR, NOT, NEAR, prefix
    ``*``, parentheses), checked when it runs.
    """
    if mode == "raw":
        return text.strip() or None
    # Control characters separate tokens anyway; NUL would cut the query short.
    text = re.sub(r"[\x00-\x1f\x7f]", " ", text)
    terms = []
    for match in re.finditer(r'"([^"]*)"?|([^\s"]+)', text):
        term = match.group(1) if match.group(1) is not None else match.group(2)
        term = term.strip()
        if term:
            terms.append('"' + term.replace('"', '""') + '"')
    return " ".join(terms) or None


@dataclass
class SearchRequest:
    text: str
    query: str  # FTS5; None for a search by meaning
    mode: str = "default"  # one of MODES
    filters: list = field(default_factory=list)  # (column, operator, value)
    sort: str = None  # column, or None for best first
    sort_desc: bool = False
    relevance: bool = False
    after: int = None  # keyset: last rowid of the previous page
    offset: int = 0  # for re-sorted results
    size: int = 50
    gallery: bool = False
    # Datasette filters the search checks row by row, as Datasette builds
    # them (its Filters, and _where fragments): [(sql, params)]
    row_checks: list = field(default_factory=list)
    # (key, value) of Datasette filters that are not in FILTER_COLUMNS
    # with OPERATORS: made into row_checks by the caller (tableapi.py)
    other_filters: list = field(default_factory=list)
    # a search by meaning's candidates, [(rowid, cosine)] nearest first:
    # found by meaning_search.prepare
    nearest: list = field(default_factory=list)

    @property
    def searching(self):
        """Whether it searches (words, or meaning), rather than browsing."""
        return bool(self.query) or self.mode == "meaning"


def _number(kind, column, raw):
    try:
        value = kind(raw)
    except ValueError:
        raise SearchError(f"{column}: {clip(raw)!r} is not a number") from None
    if kind is float and value != value:
        raise SearchError(f"{column}: {clip(raw)!r} is not a number")
    if kind is int and not -INT64_MAX <= value <= INT64_MAX:
        raise SearchError(f"{column}: {clip(raw)!r} is too large")
    return value


def clip(value, length=60):
    return value if len(value) <= length else value[: length - 1] + "…"


def parse_request(args, default_size, max_size):
    """A SearchRequest from query-string arguments (a MultiParams or dict of
    lists). Raises SearchError for anything it cannot honour."""
    def first(name, default=None):
        values = args.getlist(name) if hasattr(args, "getlist") else args.get(name, [])
        return values[0] if values else default

    text = first("_search", "") or ""
    if len(text) > 1000:
        raise SearchError("_search: at most 1,000 characters")
    mode = first("_searchmode", "default")
    if mode not in MODES:
        raise SearchError("_searchmode: use raw (FTS5 syntax: OR, NOT, NEAR, prefix*), meaning (images nearest in "
                          "meaning to the words), or leave it out")
    request = SearchRequest(text=text, query=None if mode == "meaning" else fts_query(text, mode), mode=mode)
    request.gallery = first("_view") == "gallery"
    size = first("_size")
    if size is None:
        request.size = default_size
    elif size == "max":
        request.size = max_size
    else:
        if not (size.isascii() and size.isdigit()) or not 1 <= int(size) <= max_size:
            raise SearchError(f"_size: a number from 1 to {max_size}, or max")
        request.size = int(size)
    sort, sort_desc = first("_sort"), first("_sort_desc")
    if sort and sort_desc:
        raise SearchError("use either _sort or _sort_desc, not both")
    column = sort or sort_desc
    if column == "relevance" or first("_order") == "relevance":
        request.relevance = True
    elif column:
        if column not in SORTABLE:
            raise SearchError(f"cannot sort by {clip(column)!r}: sort by one of {', '.join(sorted(SORTABLE))} or relevance")
        # best first is rowid order: these need no re-sort
        if not ((column == "rowid" and sort) or (column == "aesthetic" and sort_desc)):
            request.sort, request.sort_desc = column, bool(sort_desc)
    next_token = first("_next")
    if next_token:
        digits = next_token.removeprefix("o")
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
            raise SearchError(f"_next: {clip(next_token)!r} is not a page token from this search")
        if next_token.startswith("o"):
            # offsets page re-sorted results, which have at most RESORT_CAP rows
            request.offset = min(int(digits), RESORT_CAP + max_size)
        else:
            request.after = int(digits)
    keys = args.keys() if hasattr(args, "keys") else []
    for key in keys:
        if key.startswith("_") and "__" not in key:
            continue  # Datasette's own arguments: not filters
        column, _, op = key.rpartition("__") if "__" in key else (key, "", "exact")
        if column not in FILTER_COLUMNS or op not in OPERATORS:
            values = args.getlist(key) if hasattr(args, "getlist") else args.get(key, [])
            request.other_filters += [(key, value) for value in values]
            continue
        raw = first(key)
        if not raw.strip():
            continue  # an empty box of the search form
        request.filters.append((column, OPERATORS[op], _number(FILTER_COLUMNS[column], key, raw)))
    domain = first("_domain")
    if domain:
        request.filters.append(("_domain", "=", domain.strip().lower()))
    if mode == "meaning":
        _check_meaning(first, request)
    return request


def _check_meaning(first, request):
    """Raise SearchError for what a search by meaning cannot honour (it is
    ordered nearest first, paged by offsets)."""
    for name in ("_sort", "_sort_desc"):
        if first(name):
            raise SearchError(f"{name}: a search by meaning is ordered nearest in meaning first; leave out {name}, "
                              "or search by words to sort")
    if first("_order") == "relevance":
        raise SearchError("_order=relevance: a search by meaning is ordered by its own relevance, nearest first; "
                          "leave out _order")
    if request.after is not None:
        raise SearchError(f"_next: {clip(first('_next'))!r} is not a page token of this search by meaning")


