"""The page of one image: the row page of the LAION ``images`` table.

Datasette's row page (its HTML table of the row, its JSON unchanged) with,
above it, what a visitor lands there for: the image large (safe mode
applies), the caption in full, each score with its meaning and where it sits
in the dataset, the size, the host and registered domain linked to their
pages, the curated names found in the caption linked to their searches, the
best images from the same host, and links to the JSON and the exact-URL
look-up. Everything comes from one trip to a SQL thread (``read``), plus
the names and histograms, read once per process (the database is
immutable). Nothing from the data reaches the page unescaped: the template
escapes it, and the thumbnails are render.thumbnail's.
"""
import json
import math
import re
import unicodedata
from urllib.parse import urlencode

from datasette.utils import tilde_decode

from . import one_trip, render, similar, sites
from .views import safe_mode_threshold, search_url_function

MORE_FROM_HOST = 12
NAME_TABLES = {"artists": "artist", "celebrities": "celebrity", "characters": "character"}  # render.NAME_TABLES
SCORES = ("aesthetic", "similarity", "punsafe", "pwatermark")

ROW_SQL = "select rowid, * from images where rowid = :rowid"
HOST_SQL = """
select domain.id, domain.domain, domain.image_counts, registered_domain.id as registered_domain_id,
       registered_domain.registered_domain, registered_domain.image_counts as registered_domain_images
from domain left join registered_domain on registered_domain.id = domain.registered_domain_id
where domain.id = :id
"""
# The best images of the host (rows are stored best first): its index in rowid order.
MORE_SQL = "select rowid, url, text, aesthetic, punsafe from images where domain_id = :id and rowid != :rowid order by rowid limit :n"
BUILD_INFO_SQL = "select key, value from build_info where key in ('rows', 'image_page_columns')"
HISTOGRAM_SQL = "select metric, bucket_start, bucket_end, count from stats_histogram order by id"
NAMES_SQL = "select name, image_counts from [{table}]"
TABLES_SQL = "select name from sqlite_master where type = 'table'"


def words(text):
    """A text's words as the full-text index sees them (unicode61: lower
    case, no diacritics, letters and digits only)."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return re.findall(r"[^\W_]+", text)


class Names:
    """The curated names, found in a caption as whole phrases."""

    def __init__(self, rows):  # rows: (table, name, image_counts)
        self.by_words = {}
        for table, name, count in rows:
            key = tuple(words(name))
            if key:
                self.by_words.setdefault(key, (table, name, count))
        self.longest = max((len(k) for k in self.by_words), default=0)

    def found_in(self, caption):
        tokens = words(caption or "")
        found = {}
        for start in range(len(tokens)):
            for length in range(1, min(self.longest, len(tokens) - start) + 1):
                entry = self.by_words.get(tuple(tokens[start:start + length]))
                if entry:
                    found[entry[1]] = entry
        return list(found.values())


def _per_database(db, conn):
    """(names, histograms, total) of ``db``, read once per process."""
    kept = getattr(db, "_laion_image_page", None)
    if kept is None:
        tables = {row[0] for row in conn.execute(TABLES_SQL).rows}
        names = Names([
            (table, name, count)
            for table in NAME_TABLES if table in tables
            for name, count in conn.execute(NAMES_SQL.format(table=table)).rows
        ])
        histograms = {}
        if "stats_histogram" in tables:
            for metric, start, end, count in conn.execute(HISTOGRAM_SQL).rows:
                histograms.setdefault(metric, []).append((start, end, count))
        info = dict(conn.execute(BUILD_INFO_SQL).rows) if "build_info" in tables else {}
        shown = json.loads(info["image_page_columns"]) if info.get("image_page_columns") else []
        kept = (names, histograms, int(info["rows"]) if info.get("rows") else None, shown)
        if not db.is_mutable:
            db._laion_image_page = kept
    return kept


def share_below(buckets, value):
    """The share of the values in ``buckets`` ((start, end, count)) below
    ``value``, interpolated within its bucket; None without buckets."""
    total = sum(count for _, _, count in buckets)
    if not total or value is None:
        return None
    below = 0.0
    for start, end, count in buckets:  # the under- and overflow buckets have no start or no end
        low = -math.inf if start is None else start
        high = math.inf if end is None else end
        if value >= high:
            below += count
        elif value > low:
            inside = (value - low) / (high - low) if math.isfinite(low) and math.isfinite(high) and high > low else 0.5
            below += count * inside
    return below / total


def read(conn, rowid):
    """Everything the page shows beyond the row itself (``conn``: a
    one_trip.Connection), or None when there is no such row."""
    rows = conn.execute(ROW_SQL, {"rowid": rowid})
    if not rows.rows:
        return None
    row = dict(zip(rows.columns, rows.rows[0]))
    names, histograms, total, shown = _per_database(conn.database, conn)
    host = None
    more = []
    if row.get("domain_id") is not None:
        found = conn.execute(HOST_SQL, {"id": row["domain_id"]})
        host = dict(zip(found.columns, found.rows[0])) if found.rows else None
        more_rows = conn.execute(MORE_SQL, {"id": row["domain_id"], "rowid": rowid, "n": MORE_FROM_HOST})
        more = [dict(zip(more_rows.columns, r)) for r in more_rows.rows]
    return {"row": row, "host": host, "more": more, "names": names.found_in(row.get("text")),
            "histograms": histograms, "total": total, "best_first": one_trip.stored_best_first(conn),
            "shown": shown}


def _standing(name, value, found):
    """Where a score sits in the dataset, in words, or None. Rows stored
    best first: an image's aesthetic rank is its rowid."""
    if not isinstance(value, (int, float)):
        return None
    rowid, total = found["row"]["rowid"], found["total"]
    if name == "aesthetic" and found["best_first"] and total:
        share = rowid / total * 100
        return f"top {share:.2g}%" if share < 1 else f"top {share:.0f}%"
    below = share_below(found["histograms"].get(name, []), value)
    if below is None:
        return None
    return f"higher than {below:.0%} of the images"


async def context(datasette, request, database, config):
    """The template variables of an image's page, or {} (not an image)."""
    raw = (request.url_vars or {}).get("pks")
    try:
        rowid = int(tilde_decode(raw)) if raw is not None else None
    except ValueError:
        return {}
    if rowid is None:
        return {}
    db = datasette.get_database(database)
    found = await one_trip.in_one_trip(datasette, db, lambda conn: read(conn, rowid))
    if found is None:
        return {}
    row, host = found["row"], found["host"]
    threshold, template = safe_mode_threshold(datasette, database), config["thumbnail_url"]
    descriptions = (datasette.table_metadata(database, "images") or {}).get("columns") or {}
    images_url = datasette.urls.table(database, "images")
    search_url = search_url_function(datasette, database)
    site = sites.get(datasette, database)
    scores = [
        {"name": name, "value": row.get(name), "shown": render.rounded(row.get(name)),
         "meaning": descriptions.get(name), "standing": _standing(name, row.get(name), found)}
        # the scores the source has (build_info site_columns; all of them in an older build)
        for name in SCORES if name in row and site.has(name)
    ]
    extras = [
        {"name": name, "value": row.get(name), "url": render.safe_image_url(row.get(name)),
         "meaning": descriptions.get(name)}
        for name in found["shown"] if name in row and row.get(name) is not None
    ]
    page = {
        "rowid": rowid,
        "image": render.thumbnail(row.get("url"), row.get("text"), row.get("punsafe"), threshold, template),
        "url": render.safe_image_url(row.get("url")),
        "raw_url": row.get("url"),
        "caption": row.get("text"),
        "scores": scores,
        "extras": extras,  # the source's own columns worth showing (its profile's)
        "width": row.get("width"),
        "height": row.get("height"),
        "names": [
            {"name": name, "kind": NAME_TABLES[table], "count": count, "url": search_url(name)}
            for table, name, count in found["names"]
        ],
        "more": [
            {"rowid": r["rowid"], "row_url": f"{images_url}/{r['rowid']}", "text": r["text"], "aesthetic": r["aesthetic"],
             "thumb": render.thumbnail(r["url"], r["text"], r["punsafe"], threshold, template)}
            for r in found["more"]
        ],
        "json_url": datasette.urls.row(database, "images", str(rowid)) + ".json",
        "lookup_url": datasette.urls.table(database, "image_by_url") + "?" + urlencode({"url": row.get("url") or ""}),
    }
    if host:
        page["host"] = {
            "domain": host["domain"], "images": host["image_counts"],
            "url": datasette.urls.row(database, "domain", str(host["id"])),
            "gallery_url": images_url + "?" + urlencode({"_domain": host["domain"], "_view": "gallery"}),
        }
        if host["registered_domain_id"] is not None:
            page["registered_domain"] = {
                "name": host["registered_domain"], "images": host["registered_domain_images"],
                "url": datasette.urls.row(database, "registered_domain", str(host["registered_domain_id"])),
            }
    page["similar"] = await _similar(datasette, database, rowid, threshold, template)
    return {"laion_image": page}


async def _similar(datasette, database, rowid, threshold, template):
    """The image's 24 nearest images and its near-duplicates, or None with
    the reason when the database has no vectors file."""
    try:
        found = await similar.neighbours(datasette, database, rowid=rowid)
    except (similar.Unavailable, LookupError) as ex:
        return {"items": None, "reason": str(ex) if isinstance(ex, similar.Unavailable) else None}
    db = datasette.get_database(database)
    count = (await db.execute(similar.COUNT_SQL, {"rowid": rowid})).rows
    items = similar.gallery(datasette, database, found, threshold, template)
    return {
        "items": items,
        "near_duplicates": count[0][0] if count else 0,
        "near_items": [item for item in items if item["near_duplicate"]],
        "threshold": similar.THRESHOLD,
        "url": datasette.urls.row(database, "images", str(rowid)) + "/similar",
    }

