"""``/-/laion/mywork?q=...``, "is my work in it?", and its JSON twin: a
website address, a domain or a name, answered with counts in plain words and
examples (safe mode on), and the images nearest the examples' embeddings.

The input is untrusted: it is checked here (bad input is a 400 with a
message, never a 500), only ever used as a bound SQL parameter or an FTS5
phrase (``fts_phrase``), and every output is escaped by the templates.
"""
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from datasette.utils.asgi import Response

from . import charts, functions, one_trip, render, search, similar, sites
from .compat import QueryInterrupted
from .config import plugin_config
from .pages import InputError, database_of, share, unavailable
from .views import error_response, plugin_page_url, safe_mode_threshold

EXAMPLES = 12  # images in the gallery of an answer
EXAMPLE_HOSTS = 100  # a registered domain's examples come from its largest hosts
MAX_INPUT = 2_000  # characters; room for a long image URL
COUNT_CAP = search.COUNT_CAP  # phrase counts are exact up to this, like the search
KINDS = {"auto": "anything", "site": "a website", "name": "a name"}
# C0 controls (tab, newline and carriage return are just spaces), DEL, C1.
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
HOST_RE = re.compile(r"[\w.\-:]+")  # urlsplit's hostname of something that is a host
SITE_RE = re.compile(r"[\w\-]+(?:\.[\w\-]+)+\.?(?::\d*)?(?:[/?#]\S*)?")  # example.com, a.b.co.uk/path
IPV4_RE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")

EXAMPLE_COLUMNS = "i.rowid, i.url, i.text, i.aesthetic, i.punsafe, i.domain_id"
# Examples are the best images (lowest rowid): through the domain_id index,
# or the full-text index, reading only the rows shown.
HOST_EXAMPLES = f"select {EXAMPLE_COLUMNS} from images i where i.domain_id = :id order by i.rowid limit :n"
NAME_EXAMPLES = (
    f"select {EXAMPLE_COLUMNS} from images_fts f join images i on i.rowid = f.rowid"
    " where images_fts match :q order by f.rowid limit :n"
)
NAME_COUNT = "select count(*) from (select rowid from images_fts where images_fts match :q limit :cap)"


LIKE_THESE = 24  # "images like these" under an answer (similar.py)


@dataclass
class Lookup:
    text: str  # what was asked, tidied
    kind: str  # "site" or "name": what it is looked up as
    host: str = None
    url: str = None  # a full URL, checked as an exact image URL too


def _is_url(text):
    return "://" in text or text.startswith("//")


def _host_of(text):
    """The host of a URL (http, https or protocol-relative) or of
    "example.com/path", or None if it has none (or one that is no host name)."""
    url = text if _is_url(text) else "http://" + text
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https", ""):
        return None
    host = functions.domain(url)
    if host is None or not HOST_RE.fullmatch(host) or not ("." in host or ":" in host):
        return None
    return host


def parse_lookup(raw, kind="auto"):
    """A Lookup for what a person typed, None for nothing; raises InputError."""
    if kind not in KINDS:
        raise InputError("kind: use auto, site or name")
    if len(raw) > MAX_INPUT:
        raise InputError(f"That is {len(raw):,} characters long; enter at most {MAX_INPUT:,}.")
    if CONTROL_RE.search(raw):
        raise InputError("The text contains control characters; enter a website address or a name.")
    text = " ".join(raw.split())
    if not text:
        return None
    is_url = _is_url(text)
    if kind == "site" or (kind == "auto" and is_url):
        host = _host_of(text)
        if host is None:
            raise InputError(
                f"“{_clip(text)}” is not a website address: enter one such as example.com or https://example.com/page"
            )
        return Lookup(text, "site", host, text if is_url and urlsplit(text).path not in ("", "/") else None)
    if kind == "auto" and " " not in text and SITE_RE.fullmatch(text):
        host = _host_of(text)
        if host and (IPV4_RE.fullmatch(host) or functions.registrable_domain(host)):
            return Lookup(text, "site", host)
    if not re.search(r"\w", text):
        raise InputError("Enter a website address or a name with at least one letter or digit.")
    return Lookup(text, "name")


def _clip(text, length=80):
    return text if len(text) <= length else text[: length - 1] + "…"


def host_variants(host):
    """The host as given, and in its other IDNA form (bücher.de / xn--bcher-kva.de)."""
    variants = [host]
    try:
        if not host.isascii():
            variants.append(host.encode("idna").decode("ascii"))
        elif "xn--" in host:
            variants.append(host.encode("ascii").decode("idna"))
    except (UnicodeError, ValueError):
        pass
    return variants


def _rows(db, query, params):
    result = db.execute(query, params)
    return [dict(zip(result.columns, row)) for row in result.rows]


def _site_answer(db, lookup):
    host = None
    for candidate in host_variants(lookup.host):
        found = _rows(db, "select id, domain, image_counts, registered_domain_id from domain where domain = :d", {"d": candidate})
        if found:
            host = found[0]
            break
    registered = None
    if host and host["registered_domain_id"]:
        registered = _rows(db, "select * from registered_domain where id = :id", {"id": host["registered_domain_id"]})
    else:
        names = {functions.registrable_domain(v) for v in host_variants(lookup.host)} - {None}
        for name in sorted(names):
            registered = _rows(db, "select * from registered_domain where registered_domain = :r", {"r": name})
            if registered:
                break
    registered = registered[0] if registered else None
    top_hosts = []
    if registered:
        top_hosts = _rows(
            db,
            "select id, domain, image_counts from domain where registered_domain_id = :id order by id limit :n",
            {"id": registered["id"], "n": EXAMPLE_HOSTS},
        )
    exact = None
    if lookup.url:
        exact = _rows(
            db, "select rowid, url from images where url_hash = :h and url = :u limit 1",
            {"h": functions.url_hash(lookup.url), "u": lookup.url},
        )
    if host:
        examples = _rows(db, HOST_EXAMPLES, {"id": host["id"], "n": EXAMPLES})
        examples_from = host["domain"]
    elif top_hosts:
        # the best few of each of its largest hosts, then the best of those
        union = " union all ".join(
            f"select * from (select {EXAMPLE_COLUMNS} from images i where i.domain_id = :h{k} order by i.rowid limit :n)"
            for k in range(len(top_hosts))
        )
        params = {f"h{k}": h["id"] for k, h in enumerate(top_hosts)}
        examples = _rows(db, f"select * from ({union}) order by rowid limit :n", {**params, "n": EXAMPLES})
        examples_from = registered["registered_domain"]
    else:
        examples, examples_from = [], None
    return host, registered, top_hosts, exact, examples, examples_from


async def mywork_page(request, datasette):
    fmt = "json" if request.url_vars.get("format") else "html"
    try:
        database, db = database_of(datasette, request)
    except InputError as ex:
        return await error_response(datasette, request, fmt, 404, "Not found", str(ex))
    if db is None:
        return await unavailable(datasette, request, fmt, database)
    raw = request.args.get("q") or ""
    kind = request.args.get("kind") or "auto"
    try:
        lookup = parse_lookup(raw, kind)
        if lookup is None and fmt == "json":
            raise InputError("q: enter a website address, a domain or a name, e.g. ?q=example.com")
        # every query of the answer in one trip to a SQL thread (one_trip.in_one_trip)
        answer = await one_trip.in_one_trip(
            datasette, db, lambda conn: _answer(datasette, conn, database, lookup)) if lookup else None
        status, error = 200, None
    except InputError as ex:
        answer, status, error = None, 400, str(ex)
    except QueryInterrupted:
        answer, status = None, 400
        error = "Counting that took longer than the time limit; try a longer name or a website."
    like = await _images_like(datasette, database, answer) if answer else []
    if fmt == "json":
        if error:
            return Response.json({"ok": False, "error": error, "status": status}, status=status)
        if like is not None:
            answer["images_like_these"] = [
                {"rowid": n.rowid, "cosine": round(n.cosine, 6), "near_duplicate": n.near_duplicate,
                 "url": n.row["url"], "text": n.row["text"],
                 "row_url": datasette.urls.row(database, "images", str(n.rowid))} for n in like]
        return Response.json(answer, default=str)
    config = plugin_config(datasette)
    threshold = safe_mode_threshold(datasette, database)
    for example in (answer or {}).get("examples", []):
        example["thumb"] = render.thumbnail(example["url"], example["text"], example["punsafe"], threshold,
                                            config["thumbnail_url"])
    total = answer["rows"] if answer else await one_trip.in_one_trip(datasette, db, _total_rows)
    html = await datasette.render_template(
        "laion_mywork.html",
        {
            "database": database,
            "q": raw[:MAX_INPUT],
            "kind": kind if kind in KINDS else "auto",
            "kinds": KINDS,
            "answer": answer,
            "error": error,
            "total": total,
            "cap": COUNT_CAP,
            "threshold": threshold,
            "percent": charts.percent,
            "site": sites.get(datasette, database),
            "several": len(sites.sites(datasette)) > 1,
            "json_url": plugin_page_url(datasette, "-/laion/mywork.json", database,
                                  **({"q": raw, "kind": kind} if answer else {})),
            "stats_url": plugin_page_url(datasette, "-/laion/stats", database),
            "page_url": datasette.urls.path("-/laion/mywork"),
            "page_query": ({"database": database} if len(sites.sites(datasette)) > 1 else {}),
            "like": similar.gallery(datasette, database, like, threshold, config["thumbnail_url"]) if like else [],
        },
        request=request,
    )
    return Response.html(html, status=status)


async def _images_like(datasette, database, answer):
    """Neighbours nearest the mean embedding of the answer's examples (not
    among them), or None when the database has no vectors file."""
    rowids = [e["rowid"] for e in answer.get("examples") or []]
    if not rowids:
        return []
    try:
        query = await similar.mean_of(datasette, database, rowids)
        if query is None:
            return []
        return await similar.neighbours(datasette, database, query=query, size=LIKE_THESE, exclude=rowids)
    except similar.Unavailable:
        return None


def _total_rows(db):
    rows = db.execute("select value from build_info where key = 'rows'").rows
    return int(rows[0][0]) if rows else 0


def _answer(datasette, db, database, lookup):
    """The answer as JSON-able data; the HTML page adds thumbnails. ``db``:
    a one_trip.Connection."""
    images = datasette.urls.table(database, "images")
    total = _total_rows(db)
    answer = {
        "ok": True, "query": lookup.text, "kind": lookup.kind, "rows": total,
        "site": None, "exact_url": None, "name": None, "examples": [], "examples_from": None,
    }
    if lookup.kind == "site":
        host, registered, top_hosts, exact, examples, examples_from = _site_answer(db, lookup)
        host_name = host["domain"] if host else lookup.host
        site = {
            "host": host_name,
            "host_images": host["image_counts"] if host else 0,
            "host_share": share(host["image_counts"], total) if host else 0,
            "domain_id": host["id"] if host else None,
            "registered_domain": registered["registered_domain"] if registered else functions.registrable_domain(lookup.host),
            "registered_domain_images": registered["image_counts"] if registered else 0,
            "registered_domain_share": share(registered["image_counts"], total) if registered else 0,
            "registered_domain_hosts": registered["hosts"] if registered else 0,
            "registered_domain_id": registered["id"] if registered else None,
            "top_hosts": [
                {**h, "url": datasette.urls.row(database, "domain", str(h["id"]))} for h in top_hosts[:5]
            ],
        }
        if host:
            query = f"?_domain={quote(host_name)}&_view=gallery"
            domain_row = datasette.urls.row(database, "domain", str(host["id"]))
            site.update({
                "gallery_url": images + query,
                "gallery_json": f"{images}.json{query}&_shape=objects",
                "domain_url": domain_row,
                "domain_json": domain_row + ".json",
            })
        if registered:
            registered_row = datasette.urls.row(database, "registered_domain", str(registered["id"]))
            hosts = f"{datasette.urls.table(database, 'domain')}?registered_domain_id={registered['id']}&_sort_desc=image_counts"
            site.update({
                "registered_domain_url": registered_row,
                "registered_domain_json": registered_row + ".json",
                "hosts_url": hosts,
                "hosts_json": hosts.replace("/domain?", "/domain.json?", 1) + "&_shape=objects",
            })
        answer["site"] = site
        if lookup.url:
            answer["exact_url"] = {
                "url": lookup.url,
                "found": bool(exact),
                "rowid": exact[0]["rowid"] if exact else None,
                "row_url": datasette.urls.row(database, "images", str(exact[0]["rowid"])) if exact else None,
            }
        answer["examples_from"] = examples_from
    else:
        phrase = functions.fts_phrase(lookup.text)
        counted = (db.execute(NAME_COUNT, {"q": phrase, "cap": COUNT_CAP + 1})).rows[0][0]
        examples = _rows(db, NAME_EXAMPLES, {"q": phrase, "n": EXAMPLES})
        search_url = functions.phrase_search_url(lambda: images)(lookup.text)
        answer["name"] = {
            "phrase": lookup.text,
            "fts_query": phrase,
            "count": min(counted, COUNT_CAP),
            "count_exact": counted <= COUNT_CAP,
            "count_text": f"{min(counted, COUNT_CAP):,}" + ("" if counted <= COUNT_CAP else "+"),
            "search_url": search_url,
            "search_json": search_url.replace(images + "?", images + ".json?", 1) + "&_shape=objects",
        }
        answer["examples_from"] = lookup.text
    labels = {}
    ids = sorted({e["domain_id"] for e in examples if e["domain_id"] is not None})
    if ids:
        placeholders = ", ".join(f":d{k}" for k in range(len(ids)))
        result = db.execute(
            f"select id, domain from domain where id in ({placeholders})", {f"d{k}": v for k, v in enumerate(ids)}
        )
        labels = dict(result.rows)
    answer["examples"] = [
        {
            **example,
            "domain": labels.get(example["domain_id"]),
            "row_url": datasette.urls.row(database, "images", str(example["rowid"])),
        }
        for example in examples
    ]
    return answer
