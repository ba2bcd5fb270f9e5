"""Datasette plugin for the LAION-Aesthetics image metadata: hooks only.

The work is done in the modules behind them: functions (SQL functions),
render (cells), views (routes), config, and source/build/sample/cli for the
database itself.
"""
from datasette import hookimpl

from . import config, fastpaths, functions, guard, pages, render, search_view, views
from .version import __version__  # noqa: F401


@hookimpl
def prepare_connection(conn, datasette):
    conn.create_function("domain", 1, functions.domain, deterministic=True)
    conn.create_function("fts_phrase", 1, functions.fts_phrase, deterministic=True)
    conn.create_function("registered_domain", 1, functions.registered_domain, deterministic=True)
    conn.create_function("url_hash", 1, functions.url_hash, deterministic=True)
    conn.create_function("search_url", 1, views.search_url_function(datasette), deterministic=True)
    guard.limit_connection(conn)  # no query builds a 1 GB blob


@hookimpl
def startup(datasette):
    views.open_configured_database(datasette, config.plugin_config(datasette))
    functions.registrable_domain("example.com")  # load the suffix list now, not on a request
    fastpaths.tune(datasette)  # immutable: no template or schema re-reads per request


@hookimpl(tryfirst=True)  # before datasette-render-image-tags, for the columns we own
def render_cell(row, value, column, table, datasette):
    return render.render_cell(row, value, column, table, config.plugin_config(datasette))


@hookimpl
def prepare_jinja2_environment(env, datasette):
    env.filters["laion_rows"] = render.table_rows


@hookimpl
def extra_css_urls(datasette):
    return [datasette.urls.static_plugins("datasette-laion", "laion.css")]


@hookimpl
def extra_js_urls(datasette):
    return [datasette.urls.static_plugins("datasette-laion", "laion.js")]


@hookimpl
def extra_template_vars(datasette, request, view_name):
    return {
        "laion_database": config.plugin_config(datasette)["database"],
        "laion_missing": getattr(datasette, "_laion_missing", None),
        **guard.template_vars(datasette, request, view_name),  # what a guarded table's page offers
    }


@hookimpl
def asgi_wrapper(datasette):
    # Searches of the images table: fast for every word (search_view.py);
    # every other request is checked by the guard first (guard.py).
    # Inside them, the home and database pages, kept once rendered (fastpaths.py).
    return fastpaths.asgi_wrapper(datasette, search_view.asgi_wrapper(datasette))


@hookimpl
def handle_exception(datasette, request, exception):
    # a query over the time limit on a CSV page: a 400, not Datasette's 500
    return views.handle_exception(datasette, request, exception)


@hookimpl
def register_routes():
    return [
        (r"^/(?P<format>)$", fastpaths.home),  # the home page, without IndexView's ~40 queries
        (r"^/robots\.txt$", views.robots_txt),
        (r"^/-/laion/health$", views.health),
        (r"^/-/laion/stats(?P<format>\.json)?$", pages.stats_page),
        (r"^/-/laion/mywork(?P<format>\.json)?$", pages.mywork_page),
        (r"^/-/laion/sample-image$", views.sample_image),  # the demo's thumbnails (sample_images.py)
        (r"^/-/laion/sample-images/(?P<name>[^/]+)$", views.sample_image_by_name),
    ]


@hookimpl
def register_commands(cli):
    from .cli import laion

    cli.add_command(laion)
