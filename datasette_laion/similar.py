"""Images like this one: the nearest rows by image embedding (the vectors
file beside a LAION database, vector_index.py), their near-duplicates, and
the pages that show them.

* ``/<db>/images/<rowid>/similar`` and ``.json``: the ``_size`` (default 24,
  at most 100) nearest images, with Datasette's ``_shape`` choices;
* the image page's "similar images" and "near-duplicates" (image_page.py);
* "images like these" under an answer of "is my work in it?" (mywork.py).

The vectors file is opened once per process, on first use, and only if its
build id is the database's (``vectors_build_id`` in build_info). A database
without one answers 404 on these pages, saying so.
"""
import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasette.utils.asgi import Response

from . import compat, render, sites
from .near_duplicates import THRESHOLD
from .vector_index import Vectors

DEFAULT_SIZE = 24
MAX_SIZE = 100
ROWS_SQL = """
select images.rowid, images.url, images.text, images.aesthetic, images.punsafe, images.width, images.height,
       domain.domain, coalesce(near_duplicates.count, 0) as near_duplicates
from images
left join domain on domain.id = images.domain_id
left join near_duplicates on near_duplicates.rowid = images.rowid
where images.rowid in ({marks})
"""
COUNT_SQL = "select count from near_duplicates where rowid = :rowid"
COLUMNS = ["rowid", "cosine", "near_duplicate", "url", "text", "aesthetic", "punsafe", "width", "height", "domain",
           "near_duplicates"]

_lock = threading.Lock()


class Unavailable(Exception):
    """No similar images here: the reason, for a 404."""


@dataclass(frozen=True)
class Neighbour:
    rowid: int
    cosine: float
    row: dict

    @property
    def near_duplicate(self):
        return self.cosine >= THRESHOLD


def vectors_for(datasette, database):
    """The open Vectors of a LAION database (kept per process), or raise
    Unavailable. Blocking: call in a thread."""
    kept = datasette.__dict__.setdefault("_laion_vectors", {})
    db = datasette.databases.get(database)
    with _lock:
        found = kept.get(database)
        if found is not None and found[0] is db:
            if isinstance(found[1], Exception):
                raise found[1]
            return found[1]
        try:
            value = _open(db, sites.get(datasette, database))
        except Unavailable as ex:
            value = ex
        kept[database] = (db, value)
    if isinstance(value, Exception):
        raise value
    return value


def _open(db, site):
    if site is None or db is None or not db.path:
        raise Unavailable("Similar images are offered for the image databases of this site only.")
    build_id = site.info.get("vectors_build_id")
    if not build_id:
        raise Unavailable(f"{site.title} was built without image embeddings (datasette laion build --embeddings), "
                          "so it has no similar images.")
    path = Path(db.path).with_suffix(".vectors")
    if not path.is_file():
        raise Unavailable(f"The vectors file of {site.title} ({path.name}) is not here: similar images are "
                          "not available until it is uploaded beside the database.")
    try:
        vectors = Vectors(str(path))
    except (OSError, ValueError) as ex:
        raise Unavailable(f"The vectors file {path.name} cannot be read: {ex}") from None
    if vectors.header.build_id != build_id:
        raise Unavailable(f"The vectors file {path.name} belongs to another build of the database; "
                          "upload the one built with it.")
    return vectors


async def neighbours(datasette, database, rowid=None, query=None, size=DEFAULT_SIZE, exclude=()):
    """[Neighbour] nearest the row ``rowid`` (or the unit vector ``query``),
    highest cosine first, with their rows; raises Unavailable."""

    def nearest():
        vectors = vectors_for(datasette, database)
        if rowid is not None:
            if not 1 <= rowid <= vectors.header.rows:
                raise LookupError(rowid)
            return vectors.nearest(vectors.vector(rowid), size, exclude={rowid, *exclude})
        return vectors.nearest(query, size, exclude=set(exclude))

    found = await asyncio.get_running_loop().run_in_executor(None, nearest)
    if not found:
        return []
    db = datasette.get_database(database)
    marks = ", ".join("?" for _ in found)
    result = await db.execute(ROWS_SQL.format(marks=marks), [r for r, _ in found])
    rows = {row["rowid"]: dict(row) for row in result.rows}
    return [Neighbour(r, float(s), rows[r]) for r, s in found if r in rows]


async def mean_of(datasette, database, rowids):
    """The unit mean vector of the rows ``rowids`` (None when none has one)."""

    def mean():
        vectors = vectors_for(datasette, database)
        block = np.stack([vectors.vector(r) for r in rowids if 1 <= r <= vectors.header.rows] or [np.zeros(1)])
        total = block.sum(axis=0)
        norm = np.linalg.norm(total)
        return total / norm if norm else None

    return await asyncio.get_running_loop().run_in_executor(None, mean)


def gallery(datasette, database, found, threshold, template):
    """Template items of Neighbours: thumbnails (with safe mode) and links."""
    images_url = datasette.urls.table(database, "images")
    return [
        {"rowid": n.rowid, "row_url": f"{images_url}/{n.rowid}", "text": n.row["text"], "cosine": n.cosine,
         "near_duplicate": n.near_duplicate, "domain": n.row["domain"],
         "thumb": render.thumbnail(n.row["url"], n.row["text"], n.row["punsafe"], threshold, template)}
        for n in found
    ]


async def page(request, datasette):
    """/<db>/images/<rowid>/similar(.json)."""
    from .config import plugin_config
    from .views import error_response, safe_mode_threshold

    database, fmt = request.url_vars["database"], "json" if request.url_vars.get("format") else "html"
    if sites.get(datasette, database) is None:
        return await error_response(datasette, request, fmt, 404, "Not found", f"{database} is not an image database")
    await datasette.ensure_permissions(request.actor, [("view-table", (database, "images")),
                                                      ("view-database", database), "view-instance"])
    rowid = int(request.url_vars["rowid"])
    try:
        size = int(request.args.get("_size") or DEFAULT_SIZE)
        if not 1 <= size <= MAX_SIZE:
            raise ValueError
    except ValueError:
        return await error_response(datasette, request, fmt, 400, "Invalid _size",
                                    f"_size must be a whole number from 1 to {MAX_SIZE}")
    try:
        found = await neighbours(datasette, database, rowid=rowid, size=size)
    except Unavailable as ex:
        return await error_response(datasette, request, fmt, 404, "No similar images", str(ex))
    except LookupError:
        return await error_response(datasette, request, fmt, 404, "Not found", f"No image {rowid} in {database}")
    db = datasette.get_database(database)
    count = (await db.execute(COUNT_SQL, {"rowid": rowid})).rows
    near = count[0][0] if count else 0
    if fmt == "json":
        rows = [[n.rowid, round(n.cosine, 6), n.near_duplicate, *(n.row[c] for c in COLUMNS[3:])] for n in found]
        data = {"ok": True, "database": database, "table": "images", "rowid": rowid, "near_duplicates": near,
                "near_duplicate_threshold": THRESHOLD, "columns": COLUMNS, "rows": rows,
                "truncated": False, "filtered_table_rows_count": len(rows)}
        return compat.json_response(request.args, data)
    config = plugin_config(datasette)
    threshold = safe_mode_threshold(datasette, database)
    html = await datasette.render_template(
        "laion_similar.html",
        {"database": database, "rowid": rowid, "near_duplicates": near, "threshold_cosine": THRESHOLD,
         "items": gallery(datasette, database, found, threshold, config["thumbnail_url"]),
         "row_url": datasette.urls.row(database, "images", str(rowid)),
         "json_url": datasette.urls.row(database, "images", str(rowid)) + "/similar.json",
         "safe_threshold": threshold},
        request=request,
    )
    return Response.html(html)
