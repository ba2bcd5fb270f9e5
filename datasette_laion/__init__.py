"""Datasette plugin for the LAION-Aesthetics image metadata: hooks only.

Every hook acts on the LAION databases (those ``datasette laion build``
made, recognised by their ``build_info``: sites.py) and their site only;
another database, served beside them or alone, gets Datasette's own
behaviour. The work is done in the modules behind the hooks: pipeline
(the one request pipeline: search, guard, page cache), templating (the
LAION database's templates), functions (SQL functions), render (cells),
views and pages (routes), compat (Datasette's internals, in one place), and
source/build/sample/cli for the database itself.
"""
from datasette import hookimpl

from . import (
    config,
    functions,
    guard,
    image_page,
    limits,
    mywork,
    pages,
    pipeline,
    render,
    similar,
    site_metadata,
    sites,
    templating,
    views,
)
from .version import __version__  # noqa: F401


@hookimpl
def prepare_connection(conn, database, datasette):
    if sites.get(datasette, database) is None:
        return
    conn.create_function("domain", 1, functions.domain, deterministic=True)
    conn.create_function("fts_phrase", 1, functions.fts_phrase, deterministic=True)
    conn.create_function("registered_domain", 1, functions.registered_domain, deterministic=True)
    conn.create_function("url_hash", 1, functions.url_hash, deterministic=True)
    conn.create_function("search_url", 1, views.search_url_function(datasette, database), deterministic=True)
    limits.limit_connection(conn)  # no query builds a 1 GB blob


@hookimpl
def prepare_jinja2_environment(env, datasette):
    templating.install(env)  # the LAION database's table and row templates
    env.filters["laion_rows"] = render.table_rows


@hookimpl
def startup(datasette):
    async def inner():
        views.open_configured_database(datasette, config.plugin_config(datasette))
        await views.start_sites(datasette)

    return inner


@hookimpl(tryfirst=True)  # before datasette-render-image-tags, for the columns we own
def render_cell(row, value, column, table, database, datasette):
    if sites.get(datasette, database) is None:
        return None
    name_search = views.search_url_function(datasette, database) if table in render.NAME_TABLES else None
    return render.render_cell(row, value, column, table, config.plugin_config(datasette), name_search=name_search,
                              threshold=views.safe_mode_threshold(datasette, database))


@hookimpl
def extra_css_urls(database, view_name, datasette):
    if pipeline.is_laion_page(datasette, database, view_name):
        return [datasette.urls.static_plugins("datasette-laion", "laion.css")]
    return []


@hookimpl
def extra_js_urls(database, view_name, datasette):
    if pipeline.is_laion_page(datasette, database, view_name):
        return [datasette.urls.static_plugins("datasette-laion", "laion.js")]
    return []


@hookimpl
def extra_body_script(database, view_name, datasette):
    # a dataset without punsafe: the safe-mode switch says it has nothing to go on
    if pipeline.is_laion_page(datasette, database, view_name) and views.safe_mode_threshold(datasette, database) is None:
        return "window.LAION_SAFE_MODE_NOTHING = true;"
    return None


@hookimpl
def extra_template_vars(datasette, request, database, table, view_name):
    site = sites.get(datasette, database)
    if site is None:
        return {}
    if view_name == "row" and table == "images":
        return image_page.context(datasette, request, database, config.plugin_config(datasette))  # one image
    return {"laion_site": site, **guard.template_vars(datasette, request, view_name)}  # the guard's notes


@hookimpl
def get_metadata(datasette, key, database, table):
    # each LAION database's title, licence, source, descriptions and canned
    # queries, from the profile it was built with (metadata.yml still wins)
    return site_metadata.metadata(datasette, key)


@hookimpl
def asgi_wrapper(datasette):
    return pipeline.asgi_wrapper(datasette)


@hookimpl
def handle_exception(datasette, request, exception):
    # a query over the time limit on a LAION CSV page: a 400, not Datasette's 500
    return views.handle_exception(datasette, request, exception)


@hookimpl
def register_routes(datasette):
    routes = [
        (r"^/-/laion/health$", views.health),
        (r"^/-/laion/stats(?P<format>\.json)?$", pages.stats_page),
        (r"^/-/laion/mywork(?P<format>\.json)?$", mywork.mywork_page),
        (r"^/-/laion/sample-image$", views.sample_image),  # the demo's thumbnails (sample_images.py)
        (r"^/-/laion/sample-images/(?P<name>[^/]+)$", views.sample_image_by_name),
        # images like one image (an image database with a vectors file; 404 elsewhere)
        (r"^/(?P<database>[^/]+)/images/(?P<rowid>[0-9]{1,18})/similar(?P<format>\.json)?$", similar.page),
    ]
    if pipeline.site_served(datasette, checked=False):
        routes.append((r"^/$", views.home))  # the LAION site's home page; Datasette's elsewhere
    return routes


@hookimpl
def register_commands(cli):
    from .cli import laion

    cli.add_command(laion)

