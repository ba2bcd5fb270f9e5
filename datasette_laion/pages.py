"""Two pages of the plugin's own, each with a JSON twin:

* ``/-/laion/stats``: the dataset at a glance, from the figures the build
  precomputed (stats.py): a handful of small-table reads, milliseconds at 12M
  rows, kept per Datasette instance once read (the database is immutable).
* ``/-/laion/mywork?q=...``: "is my work in it?": a website address, a domain
  or a name, answered with counts in plain words and examples (safe mode on).

The input of the second is untrusted: it is checked here (bad input is a 400
with a message, never a 500), only ever used as a bound SQL parameter or an
FTS5 phrase (``fts_phrase``), and every output is escaped by the templates.
"""
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from datasette.utils.asgi import Response

from . import charts, functions, metrics, one_trip, render, search, similar, sites
from .compat import QueryInterrupted
from .config import plugin_config
from .profiles import SITE_COLUMNS
from .views import error_response, plugin_page_url, safe_mode_threshold

TOP = 20  # domains and registered domains on the statistics page
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

# The build numbers domains and registered domains by image count, most first
# (ties by name): the top ones are the lowest ids, read through the primary key
# or the (registered_domain_id, id) index, with no sort of a million hosts.
TOP_DOMAINS = """
select domain.id, domain.domain, domain.image_counts, registered_domain.registered_domain
from domain left join registered_domain on registered_domain.id = domain.registered_domain_id
order by domain.id limit ?
"""
TOP_REGISTERED_DOMAINS = """
select id, registered_domain, image_counts, hosts from registered_domain
order by id limit ?
"""
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


class InputError(Exception):
    """Input the page cannot answer: shown to the user with HTTP 400."""


def _database(datasette, request):
    """(name, Database or None) of the LAION database a page is about: the
    one named by ``?database=``, else the first served (or, while none is,
    the configured one, which is not uploaded yet)."""
    asked = request.args.get("database")
    found = sites.sites(datasette)
    if asked:
        if asked not in found:
            raise InputError(f"database: {asked!r} is not one of the image databases served here "
                             f"({', '.join(found) or 'none'})")
        return asked, datasette.databases[asked]
    if found:
        name = next(iter(found))
        return name, datasette.databases[name]
    return plugin_config(datasette)["database"], None


async def _unavailable(datasette, request, fmt, name):
    message = f"The database {name} is not being served (not uploaded yet?)."
    return await error_response(datasette, request, fmt, 503, "Not available", message)


# ---------------------------------------------------------------- statistics


def _read_stats(conn):
    """Everything the statistics page shows, from small tables and indexes."""
    tables = {row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")}

    def rows(query, params=()):
        cursor = conn.execute(query, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    data = {
        "available": "stats_figures" in tables,
        "info": dict(conn.execute("select key, value from build_info")) if "build_info" in tables else {},
        "figures": dict(conn.execute("select key, value from stats_figures")) if "stats_figures" in tables else {},
        "histograms": {},
        "top_domains": rows(TOP_DOMAINS, [TOP]),
        "top_registered_domains": rows(TOP_REGISTERED_DOMAINS, [TOP]) if "registered_domain" in tables else [],
        "source_files": rows("select * from source_files order by id") if "source_files" in tables else [],
        "exclusions": rows("select * from exclusions order by id") if "exclusions" in tables else [],
    }
    if "stats_histogram" in tables:
        for metric, start, end, count in conn.execute(
            "select metric, bucket_start, bucket_end, count from stats_histogram order by id"
        ):
            data["histograms"].setdefault(metric, []).append((start, end, count))
    return data


def stats_data(raw, datasette, database, site=None):
    """The statistics as JSON-able data (the JSON page, and the HTML page's
    context before the charts are drawn)."""
    info, figures = raw["info"], raw["figures"]
    total = int(info.get("rows") or figures.get("rows") or 0)
    images = datasette.urls.table(database, "images")
    threshold_labels = {
        # best first, through the search form's browsing (guard.py, search.run_browse)
        "punsafe_over_0_5": ("punsafe > 0.5: possibly unsafe", f"{images}?punsafe__gt=0.5&_view=table"),
        "pwatermark_over_0_8": ("pwatermark > 0.8: probably watermarked", f"{images}?pwatermark__gt=0.8&_view=table"),
        "punsafe_over_0_5_and_pwatermark_over_0_8": ("both", f"{images}?punsafe__gt=0.5&pwatermark__gt=0.8&_view=table"),
        "punsafe_over_0_5_or_pwatermark_over_0_8": ("either", None),
    }
    thresholds = []
    for key, (label, url) in threshold_labels.items():
        if site is not None and not all(site.has(c) for c in ("punsafe", "pwatermark") if c in key):
            continue  # a score the source does not have
        count = figures.get(key, info.get(key))
        if count is not None:
            thresholds.append({"key": key, "label": label, "count": count, "share": _share(count, total), "url": url})
    histograms = {}
    for name, metric in metrics.METRICS.items():
        buckets = raw["histograms"].get(name)
        if buckets is None or (site is not None and name in SITE_COLUMNS and not site.has(name)):
            continue  # not counted, or a column the source does not have
        histograms[name] = {
            "title": metric.title,
            "label": metric.label,
            "log": metric.log,
            **{key: figures.get(f"{name}.{key}") for key in ("count", "missing", "min", "max", "mean")},
            "buckets": [{"start": s, "end": e, "count": c} for s, e, c in buckets],
        }
    domain_url = datasette.urls.table(database, "domain")
    registered_url = datasette.urls.table(database, "registered_domain")
    return {
        "ok": True,
        "database": database,
        "rows": total,
        "available": raw["available"],
        "figures": {
            key: info.get(key)
            for key in ("rows", "source_rows", "excluded_rows", "domains", "registered_domains",
                        "rows_without_domain", "null_captions")
        },
        "near_duplicates": _near_duplicates(info, total),
        "thresholds": thresholds,
        "histograms": histograms,
        "top_domains": [
            {**row, "share": _share(row["image_counts"], total), "url": f"{domain_url}/{row['id']}"}
            for row in raw["top_domains"]
        ],
        "top_registered_domains": [
            {**row, "share": _share(row["image_counts"], total), "url": f"{registered_url}/{row['id']}"}
            for row in raw["top_registered_domains"]
        ],
        "data_version": {
            "built_at": info.get("built_at"),
            "datasette_laion_version": info.get("datasette_laion_version"),
            "sqlite_version": info.get("sqlite_version"),
            "pyarrow_version": info.get("pyarrow_version"),
            "source_rows": info.get("source_rows"),
            "excluded_rows": info.get("excluded_rows"),
            "source_files": raw["source_files"],
            "exclusions": raw["exclusions"],
        },
    }


def _share(count, total):
    return round(count / total, 6) if total and count is not None else None


def _histogram_summary(name, entry):
    buckets = entry["buckets"]
    if not buckets:
        return f"No {entry['label']} values."
    metric = metrics.METRICS[name]
    peak = max(buckets, key=lambda b: b["count"])
    parts = [f"{entry['count'] or 0:,} images"]
    if entry.get("missing"):
        parts.append(f"{entry['missing']:,} without a value")
    if entry.get("mean") is not None:
        parts.append(f"mean {charts.number(round(entry['mean'], 3))}")
    if entry.get("min") is not None:
        parts.append(f"from {charts.number(entry['min'])} to {charts.number(entry['max'])}")
    label = charts.bucket_label(peak["start"], peak["end"], metric.integer)
    parts.append(f"the most in {label} ({peak['count']:,})")
    return "; ".join(parts) + "."


def _charts(data):
    """The charts of the HTML page: SVG, summary and table rows."""
    total = data["rows"]
    histograms = []
    for name, entry in data["histograms"].items():
        metric = metrics.METRICS[name]
        summary = _histogram_summary(name, entry)
        histograms.append({
            "name": name,
            "summary": summary,
            "svg": charts.histogram(
                f"chart-{name}", entry["title"], entry["label"],
                [(b["start"], b["end"], b["count"]) for b in entry["buckets"]],
                integer=metric.integer, markers=metric.markers, log=metric.log, total=entry["count"], summary=summary,
            ),
            "table": [
                (charts.bucket_label(b["start"], b["end"], metric.integer), b["count"], charts.percent(b["count"], entry["count"]))
                for b in entry["buckets"]
            ],
        })
    domains = data["top_domains"]
    registered = data["top_registered_domains"]
    top = {
        "domains": charts.bars(
            "chart-top-domains", f"Top {len(domains)} domains (hosts)",
            [(r["domain"], r["url"], r["image_counts"]) for r in domains], total=total,
            summary=", ".join(f"{r['domain']}: {r['image_counts']:,}" for r in domains),
        ),
        "registered": charts.bars(
            "chart-top-registered-domains", f"Top {len(registered)} registered domains",
            [(r["registered_domain"], r["url"], r["image_counts"]) for r in registered], total=total,
            summary=", ".join(f"{r['registered_domain']}: {r['image_counts']:,}" for r in registered),
        ),
    }
    return histograms, top


def _near_duplicates(info, total):
    """How much of the dataset is near-duplicate (build_info, from the
    build's embeddings), or None when it was built without them."""
    if "near_duplicate_rows" not in info:
        return None
    rows, clusters, copies = (int(info[f"near_duplicate_{k}"]) for k in ("rows", "clusters", "copies"))
    return {"threshold": float(info["near_duplicate_threshold"]), "rows": rows, "clusters": clusters,
            "copies": copies, "rows_share": _share(rows, total), "copies_share": _share(copies, total),
            "index": info.get("vectors_index")}


async def stats_page(request, datasette):
    fmt = "json" if request.url_vars.get("format") else "html"
    try:
        database, db = _database(datasette, request)
    except InputError as ex:
        return await error_response(datasette, request, fmt, 404, "Not found", str(ex))
    if db is None:
        return await _unavailable(datasette, request, fmt, database)
    kept = datasette.__dict__.setdefault("_laion_stats", {})  # database name -> (db, data, charts)
    cached = kept.get(database)
    if cached is None or cached[0] is not db:
        raw = await db.execute_fn(_read_stats)
        cached = kept[database] = (db, stats_data(raw, datasette, database, sites.get(datasette, database)), None)
    data = cached[1]
    if fmt == "json":
        return Response.json(data, default=str)
    if cached[2] is None:  # the charts, drawn once
        cached = kept[database] = (db, data, _charts(data))
    histograms, top = cached[2]
    html = await datasette.render_template(
        "laion_stats.html",
        {
            "database": database,
            "data": data,
            "histograms": histograms,
            "top": top,
            "threshold": plugin_config(datasette)["safe_mode_threshold"],
            "site": sites.get(datasette, database),
            "json_url": plugin_page_url(datasette, "-/laion/stats.json", database),
            "mywork_url": plugin_page_url(datasette, "-/laion/mywork", database),
            "number": charts.number,
            "percent": charts.percent,
        },
        request=request,
    )
    return Response.html(html)


# ---------------------------------------------------------- is my work in it?


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
        database, db = _database(datasette, request)
    except InputError as ex:
        return await error_response(datasette, request, fmt, 404, "Not found", str(ex))
    if db is None:
        return await _unavailable(datasette, request, fmt, database)
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
            "host_share": _share(host["image_counts"], total) if host else 0,
            "domain_id": host["id"] if host else None,
            "registered_domain": registered["registered_domain"] if registered else functions.registrable_domain(lookup.host),
            "registered_domain_images": registered["image_counts"] if registered else 0,
            "registered_domain_share": _share(registered["image_counts"], total) if registered else 0,
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
