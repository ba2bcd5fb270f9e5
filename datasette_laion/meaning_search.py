"""Search by meaning: ``images?_search=TEXT&_searchmode=meaning``.

The words are embedded by the CLIP text encoder (meaning.py) and the
CANDIDATES images nearest to them are taken from the vectors file
(vector_index.py, as "similar images" does: similar.vectors_for). The page
is then the same search page, in the same request pipeline (search_view.py):
the candidates, nearest first, with the search's filters (the score boxes,
``_domain``, Datasette's column filters and ``_where``) checked on them,
paged by offsets, with facets over them. Each row has its ``cosine``.

What cannot be combined is refused with a 400 that says why
(search_request.py): another order than nearest first, a page token of a
words search. So is a search by meaning where it cannot run: without the
clip extra, on a database built without embeddings, with a text encoder
whose vectors are not the dimension of the stored ones, with no words.

``prepare`` (in a thread: vectors, encoder, nearest rows) runs before the
trip to a SQL thread; ``run`` and ``facet_source`` run in it.
"""
import asyncio
import json
from pathlib import Path

from . import meaning, search, similar, sites
from .config import plugin_config
from .search_request import SEARCH_COLUMNS, SearchError

CANDIDATES = 1_000  # the nearest images a search by meaning shows, filters and pages included
COLUMNS = ["rowid", "cosine", *SEARCH_COLUMNS]  # as the similar images page has them
ORDER = "nearest in meaning"
NOT_HERE = "Search by meaning is not available here"

# The candidates (:nearest, a JSON array of rowids, nearest first) that pass
# the filters ({filters}: " and ..." conditions on images aliased i), in
# that order; a page of them.
ROWS_SQL = """
select {select}
from json_each(:nearest) n join images i on i.rowid = n.value
where 1{filters}
order by n.key
limit {limit} offset {offset}
"""

# The rows Datasette's facets count: every candidate that passes the filters.
FACET_SQL = "select i.rowid as rowid, {columns} from json_each(:nearest) n join images i on i.rowid = n.value where 1{filters}"


def offered(datasette, database):
    """Whether the search form offers search by meaning on ``database``: the
    clip extra is installed and the database was built with embeddings whose
    file is beside it."""
    site = sites.get(datasette, database)
    db = datasette.databases.get(database)
    if site is None or db is None or not db.path or not site.info.get("vectors_build_id"):
        return False
    return meaning.available() and Path(db.path).with_suffix(".vectors").is_file()


def missing(datasette, database):
    """What search by meaning lacks on ``database``: [reason], none when it can run."""
    reasons = []
    if not meaning.available():
        reasons.append(f"it needs the text encoder: {meaning.INSTALL} on the server")
    site = sites.get(datasette, database)
    if site is not None and not site.info.get("vectors_build_id"):
        reasons.append(f"{site.title} was built without --embeddings, so it has no image vectors to search")
    return reasons


async def prepare(datasette, database, request):
    """Check a search by meaning and find its candidates: sets
    ``request.nearest`` ([(rowid, cosine)], nearest first). Raises
    SearchError (400) for what the request or the site lacks, and
    meaning.LoadError when the encoder cannot be loaded."""
    text = request.text.strip()
    if not text:
        raise SearchError("_searchmode=meaning: give the words to search by meaning in _search")
    reasons = missing(datasette, database)
    if reasons:
        raise SearchError(f"{NOT_HERE}: " + "; ".join(reasons) + ".")
    settings = meaning.settings_from(plugin_config(datasette))

    def nearest():
        try:
            vectors = similar.vectors_for(datasette, database)
        except similar.Unavailable as ex:
            raise SearchError(f"{NOT_HERE}: {ex}") from None
        encoder = meaning.encoder(settings)
        if encoder.dim != vectors.header.dim:
            raise SearchError(
                f"{NOT_HERE}: the text encoder ({settings.describe()}) makes {encoder.dim}-d vectors but the image "
                f"vectors of {database} are {vectors.header.dim}-d; set clip_model and clip_pretrained to the model "
                f"that made them ({meaning.DEFAULT_MODEL}, {meaning.DEFAULT_PRETRAINED} for LAION's)")
        return vectors.nearest(encoder.embed(text), CANDIDATES)

    request.nearest = await asyncio.get_running_loop().run_in_executor(None, nearest)


def run(db, request):
    """A page of a search by meaning: a search.SearchResult of COLUMNS.
    ``db``: a one_trip.Connection; ``request.nearest`` set by ``prepare``."""
    where, _, params, _, _ = search._conditions(db, request, sorted_best_first=False)
    params["nearest"] = json.dumps([rowid for rowid, _ in request.nearest])
    sql = ROWS_SQL.format(
        select="i.rowid as rowid, " + ", ".join(f"i.[{c}]" for c in SEARCH_COLUMNS),
        filters="".join(f" and {w}" for w in where), limit=request.size + 1, offset=request.offset)
    cosine = dict(request.nearest)
    rows = [(row[0], round(cosine[row[0]], 6), *row[1:]) for row in db.execute(sql, params).rows]
    next_token = None
    if len(rows) > request.size:
        rows = rows[: request.size]
        next_token = f"o{request.offset + request.size}"
    notes = [f"The {len(request.nearest):,} images nearest in meaning to the words, nearest first"
             + (", less those the filters leave out." if where else ".")]
    return search.SearchResult(rows=rows, columns=COLUMNS, count=None, count_exact=False, next_token=next_token,
                               notes=notes, sql=sql.strip(), params=params, order=ORDER)


def facet_source(db, request):
    """(sql, params, exact) of the rows Datasette's facets count: every candidate that passes the filters."""
    where, _, params, _, _ = search._conditions(db, request, sorted_best_first=False)
    params["nearest"] = json.dumps([rowid for rowid, _ in request.nearest])
    sql = FACET_SQL.format(columns=", ".join(f"i.[{c}]" for c in SEARCH_COLUMNS),
                           filters="".join(f" and {w}" for w in where))
    return sql, params, True
