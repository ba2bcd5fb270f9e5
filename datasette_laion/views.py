"""Routes the plugin adds, and opening the configured database."""
import json
from urllib.parse import urlencode

from datasette.database import Database
from datasette.utils.asgi import Response

from . import compat, sample_images, sites, templating
from .compat import QueryInterrupted, add_inspect_data
from .config import plugin_config
from .functions import phrase_search_url, registrable_domain

# Generated pictures do not change for a URL; a day keeps a demo's gallery quick.
SAMPLE_IMAGE_CACHE = "public, max-age=86400"


def open_configured_database(datasette, config):
    """Open ``database_path`` immutable, with its inspect data, once; or note
    that it is missing, so that the site says it has not been uploaded yet."""
    path = config["database_path"]
    datasette._laion_missing = None
    if path is None:
        return
    name = config["database"]
    if name in datasette.databases:
        return  # opened by -i as well; never open it twice
    if not path.is_file():
        datasette._laion_missing = str(path)
        return
    inspect_file = config["inspect_file"]
    if inspect_file is not None and inspect_file.is_file():
        data = json.loads(inspect_file.read_text())
        entry = data.get(name) or data.get(path.stem)
        if entry:
            add_inspect_data(datasette, name, entry)
    datasette.add_database(Database(datasette, path=str(path), is_mutable=False), name=name)
    if not datasette.files and not datasette.crossdb and "_memory" in datasette.databases:
        # Datasette adds an empty in-memory database when started with no
        # files; the configured database is the site's one database.
        datasette.remove_database("_memory")


async def start_sites(datasette):
    """Once LAION databases are served (at start-up, and for one added later,
    on its first request): their templates, and the speed-ups an immutable
    site allows (compat.py). Each database once."""
    started = datasette.__dict__.setdefault("_laion_started", set())
    for name in sites.sites(datasette):
        db = datasette.databases.get(name)
        if db is None or db in started:
            continue
        started.add(db)
        registrable_domain("example.com")  # load the suffix list now, not on a request
        await templating.set_database(datasette.jinja_env, db)
        if not db.is_mutable:
            compat.keep_schema_answers(db)
            compat.refresh_schemas_once(datasette)
            compat.tune_jinja(datasette.jinja_env)


def safe_mode_threshold(datasette, database):
    """safe_mode_threshold, or None when safe mode has nothing to go on: the
    LAION database's source has no punsafe (its build_info site_columns)."""
    site = sites.get(datasette, database)
    if site is not None and not site.safe_mode:
        return None
    return plugin_config(datasette)["safe_mode_threshold"]


def search_url_function(datasette, database):
    """The SQL function search_url(name): the path of the name's phrase search
    on ``database``'s images table, base_url included."""

    def images_url():
        return datasette.urls.table(database, "images")

    return phrase_search_url(images_url)


async def error_response(datasette, request, fmt, status, title, message, links=()):
    """A 4xx/5xx with a message: JSON in Datasette's error shape, plain text
    for CSV, or Datasette's error page (with ``links``, [(label, href)], to
    what to do instead)."""
    if fmt == "json":
        return Response.json({"ok": False, "error": message, "status": status, "title": title}, status=status)
    if fmt == "csv":
        return Response.text(f"Error {status}: {title}\n{message}\n", status=status)
    html = await datasette.render_template(
        "laion_error.html" if links else "error.html",
        {"error": message, "title": title, "status": status, "links": list(links)},
        request=request,
    )
    return Response.html(html, status=status)


def handle_exception(datasette, request, exception):
    """A Response for an error that Datasette 0.65 answers with a 500 but is
    the request's doing, else None: a query of the LAION database stopped at
    the time limit on a CSV page (its CSV code lets QueryInterrupted
    through). Other databases' errors are Datasette's to answer."""
    if not isinstance(exception, QueryInterrupted):
        return None
    path = request.path
    for name in sites.sites(datasette):
        prefix = datasette.urls.database(name)
        if path == prefix or path.startswith((prefix + "/", prefix + ".")):
            break
    else:
        return None
    fmt = "json" if path.endswith(".json") else ("csv" if path.endswith(".csv") else None)
    limit = datasette.setting("sql_time_limit_ms")
    message = f"This query took longer than the time limit ({limit:,} ms) and was stopped; narrow it down."
    return error_response(datasette, request, fmt, 400, "SQL Interrupted", message)


async def home(datasette, request):
    """The LAION site's home page (the route of ``/``, registered only when
    the plugin serves a LAION site): the search box first, no database list
    (Datasette's index page lists every table of every database, ~40 SQL
    queries). Its JSON (``/.json``) is Datasette's own."""
    await datasette.ensure_permissions(request.actor, ["view-instance"])
    found = sites.sites(datasette)
    listed = [
        {"name": name, "title": site.title, "rows": site.rows, "order_label": site.order_label,
         "order_short": site.order_short, "order_meaning": site.order_meaning, "best_first": site.best_first,
         "safe_mode": site.safe_mode,
         "stats_url": plugin_page_url(datasette, "-/laion/stats", name),
         "mywork_url": plugin_page_url(datasette, "-/laion/mywork", name)}
        for name, site in found.items()
    ]
    html = await datasette.render_template(
        "laion_index.html",
        {
            "laion_sites": listed,
            "laion_database": listed[0]["name"] if listed else plugin_config(datasette)["database"],
            "laion_missing": getattr(datasette, "_laion_missing", None),
            "metadata": datasette.metadata(),
            "private": not await datasette.permission_allowed(None, "view-instance", default=True),
        },
        request=request,
        view_name="index",
    )
    return Response.html(html)


def plugin_page_url(datasette, path, database, **params):
    """The URL of one of the plugin's pages (``-/laion/stats``) about
    ``database``: with ``?database=`` when several LAION databases are served."""
    if len(sites.sites(datasette)) > 1:
        params = {"database": database, **params}
    params = {k: v for k, v in params.items() if v is not None}
    return datasette.urls.path(path) + ("?" + urlencode(params) if params else "")


async def health(datasette):
    """Cheap, always 200 while the server runs: says whether the LAION
    database is being served or not uploaded yet."""
    found = list(sites.sites(datasette))
    missing = getattr(datasette, "_laion_missing", None)
    body = {
        "ok": True,
        "database": found[0] if found else plugin_config(datasette)["database"],
        "databases": found,
        "status": "not uploaded" if missing else ("ready" if found else "absent"),
    }
    if missing:
        body["expected_at"] = missing
    return Response.json(body)


async def robots_txt(datasette):
    config = plugin_config(datasette)
    # each LAION database's paths; the configured one's even while it is not there (not uploaded yet)
    bases = [datasette.urls.database(name) for name in sites.sites(datasette)] or [
        datasette.urls.path(config["database"])]
    lines = ["User-agent: *"]
    for base in bases:
        for path in config["robots_disallow"]:
            lines.append(f"Disallow: {base}{path}")
    lines.append("Disallow: /*?*_search=")
    return Response.text("\n".join(lines) + "\n")


async def sample_image(request, datasette):
    """/-/laion/sample-image?url=URL: the generated picture of the image at
    URL (what the demo's thumbnail_url points at), or a 404, as for an image
    that is gone."""
    url = request.args.get("url")
    if not url:
        return Response.text("Give the image's URL: /-/laion/sample-image?url=...\n", status=400)
    return _sample_image_file(datasette, sample_images.image_name(url))


async def sample_image_by_name(request, datasette):
    """/-/laion/sample-images/NAME: a generated picture by its file name."""
    name = request.url_vars["name"]
    if not sample_images.NAME_PATTERN.fullmatch(name):
        return Response.text("Not the name of a sample image\n", status=404)
    return _sample_image_file(datasette, name)


def _sample_image_file(datasette, name):
    """The file ``name`` (a NAME_PATTERN name: no path) of sample_images_dir."""
    directory = plugin_config(datasette)["sample_images_dir"]
    if directory is None:
        return Response.text("No sample images on this site (sample_images_dir is not set)\n", status=404)
    try:
        body = (directory / name).read_bytes()
    except OSError:  # not there (the quarter of images that are gone), or unreadable
        return Response.text("Image no longer available\n", status=404)
    return Response(body, content_type=sample_images.CONTENT_TYPE, headers={"Cache-Control": SAMPLE_IMAGE_CACHE})
