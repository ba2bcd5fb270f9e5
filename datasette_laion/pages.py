"""``/-/laion/stats`` and its JSON twin: the dataset at a glance, from the
figures the build precomputed (stats.py): a handful of small-table reads,
milliseconds at 12M rows, kept per Datasette instance once read (the
database is immutable). Also what the plugin's own pages share: which
database a page is about (``database_of``), and the answer when it is not
served. The other page, "is my work in it?", is ``mywork.py``.
"""

from datasette.utils.asgi import Response

from . import charts, metrics, sites
from .config import plugin_config
from .profiles import SITE_COLUMNS
from .views import error_response, plugin_page_url

TOP = 20  # domains and registered domains on the statistics page
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
class InputError(Exception):
    """Input the page cannot answer: shown to the user with HTTP 400."""


def database_of(datasette, request):
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


async def unavailable(datasette, request, fmt, name):
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
            thresholds.append({"key": key, "label": label, "count": count, "share": share(count, total), "url": url})
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
            {**row, "share": share(row["image_counts"], total), "url": f"{domain_url}/{row['id']}"}
            for row in raw["top_domains"]
        ],
        "top_registered_domains": [
            {**row, "share": share(row["image_counts"], total), "url": f"{registered_url}/{row['id']}"}
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


def share(count, total):
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
            "copies": copies, "rows_share": share(rows, total), "copies_share": share(copies, total),
            "index": info.get("vectors_index")}


async def stats_page(request, datasette):
    fmt = "json" if request.url_vars.get("format") else "html"
    try:
        database, db = database_of(datasette, request)
    except InputError as ex:
        return await error_response(datasette, request, fmt, 404, "Not found", str(ex))
    if db is None:
        return await unavailable(datasette, request, fmt, database)
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
