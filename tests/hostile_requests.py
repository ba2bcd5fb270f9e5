"""Hostile requests to the site, as Hypothesis strategies, and what every
answer must be. Shared by tests/test_hostile.py (in-process, on the sample
database) and scripts/fuzz_site.py (over HTTP, against a running server).

A request is a path with its query string. Strategies draw routes (home,
plugin pages, the database page with SQL, every table as HTML, JSON and CSV,
row pages, canned queries, searches in both modes and the gallery) and fill
them with the parameters the site has, given values that are plausible or
hostile: FTS5 syntax junk, huge values, unicode, control characters,
percent-encoded junk.

The property (``problems``): every answer is 2xx, 3xx or 4xx, a 4xx carries a
readable message, and none takes longer than the SQL time limit plus a margin.
"""
import json
import re
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from hypothesis import strategies as st

# --------------------------------------------------------------- the site


@dataclass(frozen=True)
class Site:
    """What the strategies need to know: the database, its tables with their
    columns, its canned queries with their parameters."""

    database: str
    tables: tuple  # ((name, (column, ...)), ...)
    queries: tuple  # ((name, (parameter, ...)), ...)

    @classmethod
    def from_database_json(cls, data):
        """From the JSON of the database page (/<database>.json)."""
        tables = tuple((t["name"], tuple(t["columns"])) for t in data["tables"])
        queries = tuple(
            (q["name"], tuple(dict.fromkeys(re.findall(r"(?<!:):(\w+)", q.get("sql") or ""))))
            for q in data.get("queries", [])
        )
        return cls(data["database"], tables, queries)

    def columns(self, table):
        return dict(self.tables).get(table, ())


# --------------------------------------------------------------- values

FTS_JUNK = [
    '"', '""', '"unbalanced', "'", "*", "^", "^dog", "dog*", "*dog", "NEAR(", "NEAR(dog cat", "NEAR(dog cat, -1)",
    "NEAR(dog, 99999999999)", "dog NEAR/3 cat", "text:", "text:dog", "nosuchcolumn:dog", "{text}: dog", "- dog",
    "AND", "OR", "NOT", "dog AND", "OR dog", "NOT NOT", "dog OR OR cat", "(", ")", "(dog", "dog)", "((((((((((dog",
    "a:b:c", "+", "-", "dog + cat", "\\", "\\\"", "%", "_", "[", "]", "{", "}", "dog\"cat", "rank:", "images_fts:x",
    "the", "a*", "t*", "x" * 1001,
]
HUGE = [
    "x" * 10_000, "1e308", "-1e308", "1e309", "-1", "0", "-0", "2147483648", str(2**63), str(2**63 - 1), str(-(2**63)),
    str(2**64), "9" * 40, "0.0000000000001", "nan", "inf", "-inf", "NaN", "1_000", "0x10", "１２", "٣",
]
UNICODE = [
    "🐶", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\U0010ffff", "مرحبا", "\u202eevil\u202c", "e\u0301\u0301\u0301", "日本語", "\ufeff", "\u200b",
    "İ", "ß", "ﬁ", "\u0000", "\ud7ff", "Ω", "a\u0300" * 50,
]
CONTROL = ["\x00", "\r\n", "\x1b[31m", "\x07", "\t", "\x7f", "\x85", "line\nbreak", "a\x00b", "\r"]
MARKUP = [
    '<script>alert("x")</script>', '"><img src=x onerror=alert(1)>', "javascript:alert(1)", "' onerror='alert(2)",
    "</textarea><script>alert(3)</script>", "{{7*7}}", "${7*7}", "<svg onload=alert(4)>",
]
SQLISH = [
    "'", "' or 1=1 --", "1; drop table images", "rowid", "[rowid]", '"', "`", "1)", "(select 1)", "null", "NULL",
    "$null", "~", "~ZZ", "~2C", ",", ",,", "1,2", "1,", ",1", "abc,1", "$null,5", "6.5,12", "o5", "o-1", "o99999999999999999999",
]
SPECIAL_VALUES = ["", " ", "max", "on", "off", "1", "0", "true", "array", "object", "objects", "arrays", "arrayfirst",
                  "gallery", "table", "raw", "default", "escaped", "relevance"]

hostile_text = st.one_of(
    st.sampled_from(FTS_JUNK + HUGE + UNICODE + CONTROL + MARKUP + SQLISH + SPECIAL_VALUES),
    st.text(max_size=20),
    st.text(alphabet="\"'*^:()-+<>&%\\;,~$_[]{} NEAROTAD0123456789", max_size=16),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)

# --------------------------------------------------------------- parameters

TABLE_PARAMETERS = [
    "_search", "_searchmode", "_sort", "_sort_desc", "_size", "_next", "_facet", "_facet_array", "_facet_date",
    "_facet_size", "_where", "_col", "_nocol", "_through", "_json", "_labels", "_label", "_shape", "_timelimit",
    "_stream", "_dl", "_trace", "_nl", "_nocount", "_nofacet", "_nosuggest", "_ttl", "_view", "_domain", "_order",
    "_search_text", "_fts_table", "_fts_pk", "_filter_column", "_filter_op", "_filter_value", "_sort_by_desc",
    "_header", "_context", "_extra",
]
LOOKUPS = [
    "exact", "not", "contains", "endswith", "startswith", "gt", "gte", "lt", "lte", "like", "notlike", "glob", "in",
    "notin", "arraycontains", "arraynotcontains", "date", "isnull", "notnull", "isblank", "notblank", "nope", "",
]
SEARCH_FILTERS = ["aesthetic__gte", "aesthetic__gt", "aesthetic__lt", "punsafe__lte", "punsafe__lt", "pwatermark__lte",
                  "domain_id", "width__gt", "similarity__gte", "text__contains", "_domain"]


def column_values(columns):
    return st.one_of(st.sampled_from(list(columns) + ["rowid"]) if columns else st.just("rowid"), hostile_text)


def _json_values(columns):
    column = column_values(columns)
    return st.one_of(
        st.builds(lambda c: json.dumps({"simple": c}), column),
        st.builds(lambda c: json.dumps({"column": c}), column),
        st.builds(lambda t, c, v: json.dumps({"table": t, "column": c, "value": v}), column, column, hostile_text),
        st.builds(lambda vs: json.dumps(vs), st.lists(st.one_of(hostile_text, st.integers(), st.none()), max_size=4)),
        st.sampled_from(["{", "[", "{}", "[]", '{"simple": 1}', "[{}]", '{"table": null}', "[1, [2]]", "[" * 200]),
    )


def table_parameter(columns):
    """A (name, value) pair for a table page."""
    name = st.one_of(
        st.sampled_from(TABLE_PARAMETERS),
        st.builds(lambda c, op: f"{c}__{op}" if op else c, column_values(columns), st.sampled_from(LOOKUPS)),
        hostile_text,
    )
    value = st.one_of(column_values(columns), hostile_text, _json_values(columns))
    return st.tuples(name, value)


def _encode(pairs):
    return urlencode(pairs, quote_via=quote)


RAW_QUERY_JUNK = ["%", "%zz", "%FF%FE", "a=%00", "&&==&", "_sort=%C0%AF", "_search=%E2%80%AE", "=", "_size=%2B1",
                  "_next=%2C%2C", "_sort=rowid&_sort=url", "_search=a&_search=b", "_facet=a&" * 8 + "x=1"]


def query_string(pairs_strategy):
    return st.one_of(
        pairs_strategy.map(_encode),
        st.tuples(pairs_strategy.map(_encode), st.sampled_from(RAW_QUERY_JUNK)).map(lambda p: "&".join(x for x in p if x)),
    )


def _with_query(path, qs):
    return f"{path}?{qs}" if qs else path


# --------------------------------------------------------------- routes


@st.composite
def table_requests(draw, site):
    """Every table, as HTML, JSON and CSV, with table parameters."""
    table = draw(st.sampled_from([t for t, _ in site.tables]))
    fmt = draw(st.sampled_from(["", ".json", ".csv"]))
    qs = draw(query_string(st.lists(table_parameter(site.columns(table)), max_size=4)))
    return _with_query(f"/{site.database}/{quote(table)}{fmt}", qs)


def search_requests(site, table="images"):
    """Searches in both modes, the gallery, with filters, sorts, sizes and page tokens."""
    columns = site.columns(table)
    text = st.one_of(st.sampled_from(FTS_JUNK), hostile_text, st.sampled_from(["dog", "the dog", '"black dog"', "lemur"]))
    extra = st.one_of(
        st.tuples(st.sampled_from(SEARCH_FILTERS), st.one_of(hostile_text, st.sampled_from(["7", "0.5", "1", "i.pinimg.com"]))),
        st.tuples(st.sampled_from(["_sort", "_sort_desc"]), column_values(columns)),
        st.tuples(st.sampled_from(["_size", "_next", "_shape", "_nl", "_order", "_view"]), hostile_text),
        table_parameter(columns),
    )
    pairs = st.builds(
        lambda t, mode, view, more: [("_search", t)] + ([("_searchmode", mode)] if mode else [])
        + ([("_view", view)] if view else []) + more,
        text,
        st.sampled_from([None, "raw", "default", "escaped", "RAW"]),
        st.sampled_from([None, "gallery", "table", "nope"]),
        st.lists(extra, max_size=3),
    )
    return st.builds(
        lambda fmt, qs: _with_query(f"/{site.database}/{table}{fmt}", qs),
        st.sampled_from(["", ".json"]),
        query_string(pairs),
    )


def browse_requests(site, table="images"):
    """The gallery and the search form's table view with filters and no words."""
    extra = st.tuples(st.sampled_from(SEARCH_FILTERS + ["_next", "_size", "_search"]),
                      st.one_of(hostile_text, st.sampled_from(["7", "6.5", "0.5", "0.9", "1", ""])))
    pairs = st.builds(lambda view, more: [("_view", view)] + more, st.sampled_from(["gallery", "table"]),
                      st.lists(extra, max_size=4))
    return st.builds(lambda fmt, qs: _with_query(f"/{site.database}/{table}{fmt}", qs),
                     st.sampled_from(["", ".json"]), query_string(pairs))


@st.composite
def query_requests(draw, site):
    """Every canned query, with its parameters (and others) fuzzed."""
    name, params = draw(st.sampled_from(site.queries))
    fmt = draw(st.sampled_from(["", ".json", ".csv"]))
    pairs = [(p, draw(hostile_text)) for p in params if draw(st.booleans())]
    pairs += draw(st.lists(st.tuples(st.sampled_from(["_shape", "_timelimit", "_json", "_nl", "_size", "_hide_sql", "sql",
                                                       "_next", "_facet"]), hostile_text), max_size=2))
    return _with_query(f"/{site.database}/{quote(name)}{fmt}", draw(query_string(st.just(pairs))))


SQL_TEMPLATES = [
    "select * from images where text like {v}", "select count(*) from images where url = {v}",
    "select * from images_fts where images_fts match {v}", "select {v}", "select * from domain where domain = {v} limit 5",
    "select fts_phrase({v}), domain({v}), registered_domain({v}), url_hash({v}), search_url({v})",
    "select * from images order by {c} limit 3", "select {c} from images limit 2", "{v}",
]
SQL_JUNK = [
    "", " ", "select", "select * from nope", "pragma table_info(images)", "attach database ':memory:' as x",
    "select randomblob(1000000000)", "select zeroblob(1000000000)", "select printf('%.*c', 1000000000, 'x')",
    "select replace(hex(zeroblob(100000)), '0', hex(zeroblob(100000)))",
    "with recursive c(x) as (select 1 union all select x + 1 from c) select count(*) from c",
    "select group_concat(text) from images", "select * from images, images", "select :x, :y", "select ?",
    "select 1; select 2", "vacuum", "delete from images", "select load_extension('x')", "select sqlite_version()",
]


def sql_requests(site):
    """The SQL editor: arbitrary SQL, with parameters and options."""
    columns = site.columns("images") or ("rowid",)
    sql = st.one_of(
        st.sampled_from(SQL_JUNK),
        st.builds(lambda t, v, c: t.format(v="'" + v.replace("'", "''") + "'", c=c), st.sampled_from(SQL_TEMPLATES),
                  hostile_text, column_values(columns)),
        hostile_text,
    )
    pairs = st.builds(
        lambda s, more: [("sql", s)] + more, sql,
        st.lists(st.tuples(st.sampled_from(["_timelimit", "_shape", "_json", "_nl", "x", "y", "_hide_sql", "_size"]),
                           hostile_text), max_size=3),
    )
    return st.builds(lambda fmt, qs: _with_query(f"/{site.database}{fmt}", qs), st.sampled_from(["", ".json", ".csv"]),
                     query_string(pairs))


def row_requests(site):
    """Row pages, with real and junk ids."""
    ident = st.one_of(st.integers(min_value=-3, max_value=20_000).map(str), hostile_text.map(lambda v: quote(v, safe="")),
                      st.sampled_from(["1,2", "~2C", "1.json", "%2F", "0", "-0", "1e3", "~ZZ"]))
    return st.builds(
        lambda table, i, fmt, qs: _with_query(f"/{site.database}/{quote(table)}/{i}{fmt}", qs),
        st.sampled_from([t for t, _ in site.tables]), ident, st.sampled_from(["", ".json", ".csv"]),
        query_string(st.lists(st.tuples(st.sampled_from(["_shape", "_json", "_labels", "_col"]), hostile_text), max_size=2)),
    )


def page_requests(site):
    """The home page, the plugin's pages, Datasette's own, with junk parameters."""
    paths = ["/", "/.json", "/-/laion/health", "/robots.txt", "/-/laion/stats", "/-/laion/stats.json",
             "/-/laion/mywork", "/-/laion/mywork.json", f"/{site.database}", f"/{site.database}.json",
             "/-/versions.json", "/-/plugins.json", "/-/settings.json", "/-/metadata.json", "/-/databases.json",
             "/-/actor.json", "/-/allow-debug", "/-/messages", "/-/patterns", "/-/threads.json", "/favicon.ico",
             f"/{site.database}/nope", "/nope", "/-/static/app.css", "/-/static-plugins/datasette-laion/laion.js"]
    pairs = st.lists(st.one_of(
        st.tuples(st.sampled_from(["q", "kind", "actor", "allow", "_shape", "_search"]), hostile_text),
        st.tuples(st.just("kind"), st.sampled_from(["auto", "site", "name", "nope"])),
        st.tuples(st.just("q"), st.sampled_from(["example.com", "https://i.pinimg.com/x.jpg", "Thomas Kinkade", "http://[::1",
                                                 "bücher.example", "xn--", "a" * 2001, "//", "1.2.3.4", "localhost"])),
    ), max_size=3)
    return st.builds(_with_query, st.sampled_from(paths), query_string(pairs))


def requests(site):
    """Any of the above."""
    kinds = [table_requests(site), search_requests(site), browse_requests(site), sql_requests(site),
             row_requests(site), page_requests(site)]
    return st.one_of(*kinds, *([query_requests(site)] if site.queries else []))


# --------------------------------------------------------------- the property


def problems(path, status, content_type, body, elapsed, time_limit_s, margin_s=1.0):
    """What is wrong with an answer (empty when nothing): a 5xx, a 4xx
    without a readable message, or too slow."""
    found = []
    if status >= 500:
        found.append(f"HTTP {status}")
    if elapsed > time_limit_s + margin_s:
        found.append(f"took {elapsed:.2f}s (limit {time_limit_s}s + {margin_s}s)")
    if 400 <= status < 500 and not readable_message(content_type, body):
        found.append(f"HTTP {status} without a readable message: {body[:200]!r}")
    if "Traceback (most recent call last)" in body:
        found.append("a traceback in the body")
    return found


def readable_message(content_type, body):
    content_type = content_type or ""
    if "json" in content_type:
        try:
            data = json.loads(body)
        except ValueError:
            return False
        return isinstance(data, dict) and isinstance(data.get("error"), str) and bool(data["error"].strip())
    if "html" in content_type:
        # Datasette's error page, or a page of the plugin with its error notice
        text = re.sub(r"<script.*?</script>|<style.*?</style>|<[^>]+>", " ", body, flags=re.DOTALL)
        words = " ".join(text.split())
        # (error.html's <h1>, the SQL editor's message-error, the plugin's laion-error)
        return bool(re.search(r"<h1>|class=\"message-error\"|class=\"laion-notice laion-error\"", body)) and len(words) > 20
    return bool(body.strip())
