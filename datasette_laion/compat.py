"""Every use of Datasette's internals, in one place.

Datasette 0.65 documents its plugin hooks, ``Datasette``, ``Database``,
``Request``/``Response`` and a few ``datasette.utils`` functions; anything
else it may change in any release. What the plugin takes from beyond that
line lives here, and each item has a test in ``tests/test_compat.py`` that
fails loudly (not silently slower, not silently wrong) when the installed
Datasette stops working the way it is used here:

1. undocumented helpers: ``Filters`` (its filter operators), ``urlsafe_components``
   (page tokens), ``sqlite_timelimit``, ``to_css_class`` (how template names
   are spelled), ``MultiParams``, ``CustomRow``, ``Results`` and
   ``QueryInterrupted`` (what ``Database.execute`` gives and raises);
2. ``datasette serve``'s own pieces, for ``datasette laion serve`` (one
   server per worker process, built exactly as the command builds it);
3. speed-ups for the immutable LAION database, which Datasette would
   otherwise ask the same questions of on every page: its schema answers
   kept (``keep_schema_answers``), the stored spelling of table names kept
   (``NAME_SPELLING_SQL``), the domain row pages' link counts read from the
   build's figures (``LINK_COUNTS``), the per-request schema refresh skipped
   (``refresh_schemas_once``), Jinja's per-render template checks off
   (``tune_jinja``);
4. the inspect data and cached table counts of a database;
5. the parts of the table page that the search reuses to answer Datasette's
   table arguments as the table page does (tableapi.py): its filters, the
   add-filter redirect, its JSON renderer, its facet classes, its response
   headers, and the actor of a request (the router's hooks).

Nothing here applies to another database: the callers pass the LAION one.
"""
import copy

from datasette.database import QueryInterrupted, Results
from datasette.filters import Filters
from datasette.utils import CustomRow, MultiParams, sqlite_timelimit, to_css_class, urlsafe_components
from jinja2 import BaseLoader, TemplateNotFound

# Datasette's filter operators (``col__op=value``), as its table view reads them.
FILTER_LOOKUPS = frozenset(key for key, _, _ in Filters([]).lookups())
# Re-exported: the one place the plugin takes these from.
__all__ = ["FILTER_LOOKUPS", "CustomRow", "MultiParams", "QueryInterrupted", "Results", "sqlite_timelimit", "to_css_class", "urlsafe_components"]


# ------------------------------------------------------ datasette serve's pieces


def serve_context(args):
    """`datasette serve` ARGS parsed by its own click command (raises
    click's usage errors, as `datasette serve` would)."""
    from datasette.cli import serve as serve_command

    return serve_command.make_context("datasette serve", list(args))


def serve_instance(args):
    """The Datasette instance `datasette serve ARGS` builds, not started:
    the command's own option parsing and set-up (its hidden
    ``return_instance`` parameter)."""
    from datasette.cli import serve as serve_command

    ctx = serve_context(args)
    with ctx:
        return ctx.invoke(serve_command.callback, **ctx.params, return_instance=True)


def run_datasette_serve(args):
    """`datasette serve ARGS`, as it is."""
    from datasette.cli import cli as datasette_cli

    datasette_cli.main(args=["serve", *args], prog_name="datasette", standalone_mode=True)


async def check_databases(datasette):
    """`datasette serve`'s checks of every database before it serves them."""
    from datasette.cli import check_databases as check

    await check(datasette)


def run_sync(coroutine_function):
    from datasette.cli import run_sync as run

    return run(coroutine_function)


# ------------------------------------------------- inspect data, table counts


def add_inspect_data(datasette, name, entry):
    """Give ``datasette`` the inspect data (``-i``/``--inspect-file``) of
    one more database, as `datasette serve --inspect-file` would."""
    datasette.inspect_data = {**(datasette.inspect_data or {}), name: entry}


def table_counts_known(db):
    """{table: rows} of an immutable database from its inspect data, or None."""
    return db.cached_table_counts if not db.is_mutable else None


# ------------------------------------------ schema answers of the LAION database

# The schema questions Datasette asks of a database on every table, row and
# database page, each a trip to the SQL threads (where it waits behind the
# searches): answered once for the immutable LAION database and kept.
SCHEMA_METHODS = (
    "attached_databases", "table_exists", "table_names", "table_columns", "table_column_details",
    "primary_keys", "fts_table", "label_column_for_table", "foreign_keys_for_table", "hidden_table_names",
    "view_names", "get_all_foreign_keys", "get_table_definition", "get_view_definition",
)
SCHEMA_ANSWERS_KEPT = 1_000  # per method: table names come from URLs

# Datasette 0.65.5 looks up the stored spelling of a table's name in
# sqlite_master on every view-table permission check (several per page).
NAME_SPELLING_SQL = "select name from sqlite_master where type in ('table', 'view') and name = ? collate nocase"

# The row page of a domain (or registered domain) counts the rows that link
# to it: Datasette asks SQLite, which reads the whole range of the
# images.domain_id index (1.3M entries, 50 ms, for the biggest host). The
# build stored those counts: domain.image_counts is the number of images
# with that domain_id, registered_domain.hosts that of its domain rows.
LINK_COUNTS = {
    "select (select count(*) from images where domain_id=:id)":
        "select coalesce((select image_counts from domain where id = :id), 0)",
    "select (select count(*) from domain where registered_domain_id=:id)":
        "select coalesce((select hosts from registered_domain where id = :id), 0)",
}
BUILT_HERE_SQL = "select 1 from sqlite_master where type = 'table' and name = 'build_info'"
KEPT_MARK = "_laion_schema_kept"


def keep_schema_answers(db):
    """Keep the answers of ``db``'s schema methods and of its table-name
    look-ups (``db`` is immutable); each caller gets its own copy. Instance
    attributes that call the class's methods when they must ask. Returns
    the names of the methods it wraps (a test checks that Datasette still
    has every one)."""
    if db.is_mutable or getattr(db, KEPT_MARK, False):
        return ()
    wrapped = tuple(name for name in SCHEMA_METHODS if hasattr(type(db), name))
    for name in wrapped:
        setattr(db, name, _remembered(db, name))
    db.execute = _known_queries(db)
    setattr(db, KEPT_MARK, True)
    return wrapped


def _remembered(db, name):
    answers = {}

    async def remembered(*args, **kwargs):
        key = (args, tuple(sorted(kwargs.items())))
        try:
            answer = answers[key]
        except KeyError:
            answer = await getattr(type(db), name)(db, *args, **kwargs)
            if len(answers) < SCHEMA_ANSWERS_KEPT:
                answers[key] = answer
        return copy.deepcopy(answer)

    remembered.__name__ = name
    return remembered


def _known_queries(db):
    """``db.execute``, with the table-name look-ups kept, and the counts of
    LINK_COUNTS read from the build's columns (in a database this project
    built: one with its build_info table)."""
    spellings = {}  # (name,) -> Results, which its callers only read
    built_here = []

    async def execute(sql, params=None, **kwargs):
        if not kwargs and isinstance(params, dict) and sql in LINK_COUNTS:
            if not built_here:
                built_here.append(bool((await type(db).execute(db, BUILT_HERE_SQL)).rows))
            if built_here[0]:
                return await type(db).execute(db, LINK_COUNTS[sql], params)
        if kwargs or not isinstance(params, tuple) or " ".join(sql.split()) != NAME_SPELLING_SQL:
            return await type(db).execute(db, sql, params, **kwargs)
        try:
            return spellings[params]
        except KeyError:
            results = await type(db).execute(db, sql, params)
            if len(spellings) < SCHEMA_ANSWERS_KEPT:
                spellings[params] = results
            return results

    return execute


def refresh_schemas_once(datasette):
    """Replace ``datasette.refresh_schemas`` (run by Datasette before every
    page) by one that runs it while any database can change, or when the set
    of databases has changed since it last ran, and skips it otherwise.
    Installed only while the LAION database is served."""
    if getattr(datasette, "_laion_refresh_once", False):
        return
    refresh_schemas = datasette.refresh_schemas
    refreshed_for = None

    async def refresh():
        nonlocal refreshed_for
        databases = tuple(datasette.databases.items())
        if databases == refreshed_for:
            return
        await refresh_schemas()
        if all(not db.is_mutable for name, db in databases if name != "_internal"):
            refreshed_for = databases

    datasette.refresh_schemas = refresh
    datasette._laion_refresh_once = True


# ---------------------------------------------------------------------- Jinja

MISSES_KEPT = 10_000  # template names remembered as missing


def tune_jinja(env):
    """Jinja's ``auto_reload`` off (it stats every template file on every
    render) and template misses remembered (Datasette looks up
    ``table-<db>-<table>.html`` and the like on every page): for a site
    whose template files do not change while it runs."""
    env.auto_reload = False
    if not isinstance(env.loader, RememberMisses):
        env.loader = RememberMisses(env.loader)


class RememberMisses(BaseLoader):
    """A template loader that asks ``loader`` once per missing name."""

    def __init__(self, loader):
        self.loader = loader
        self.missing = set()

    def _miss(self, name):
        if len(self.missing) < MISSES_KEPT:
            self.missing.add(name)

    def get_source(self, environment, template):
        if template in self.missing:
            raise TemplateNotFound(template)
        try:
            return self.loader.get_source(environment, template)
        except TemplateNotFound:
            self._miss(template)
            raise

    def load(self, environment, name, globals=None):
        if name in self.missing:
            raise TemplateNotFound(name)
        try:
            return self.loader.load(environment, name, globals)
        except TemplateNotFound:
            self._miss(name)
            raise

    def list_templates(self):
        return self.loader.list_templates()


# ------------------------------------------- Datasette's table API, for the search

def filter_clauses(pairs, table):
    """(SQL conditions, params) of Datasette filter arguments (``col__op=
    value`` pairs), exactly as its table view builds them; params are named
    p0, p1, ..."""
    from datasette.filters import Filters

    return Filters(sorted(pairs)).build_where_clauses(table)


def filters_redirect(args):
    """The arguments to redirect to for the "add filter" form's
    ``_filter_column``/``_filter_op``/``_filter_value`` (as Datasette's table
    view does), or None."""
    from datasette.utils import filters_should_redirect

    return filters_should_redirect(args) or None


def json_response(args, data):
    """Datasette's JSON renderer on a table page's data: ``_shape``, ``_nl``,
    ``_json``, ``_json_infinity`` and the ``Link`` header, as a table page
    has them."""
    from datasette.renderer import json_renderer

    return json_renderer(args, data, "table")


async def facet_results(datasette, request, database, table, sql, params, metadata):
    """(facet_results, facets_timed_out) of Datasette's facet classes
    (``_facet``, ``_facet_array``, ``_facet_date``, metadata facets) over
    the rows of ``sql``: the same keys, values, labels and toggle URLs as on
    a table page."""
    import itertools

    from datasette.plugins import pm

    results, timed_out = {}, []
    for facet_class in itertools.chain.from_iterable(pm.hook.register_facet_classes()):
        facet = facet_class(datasette, request, database, sql=sql, table=table, params=params,
                            metadata=metadata, row_count=None)
        instance_results, instance_timed_out = await facet.facet_results()
        for info in instance_results:
            key, n = info["name"], 1
            while key in results:
                n += 1
                key = f"{info['name']}_{n}"
            results[key] = info
        timed_out.extend(instance_timed_out)
    return results, timed_out


async def actor_from_request(datasette, request):
    """The actor of a request that Datasette's router has not seen (the
    search is answered before it): the ``actor_from_request`` hooks, as the
    router asks them."""
    from datasette.plugins import pm
    from datasette.utils import await_me_maybe

    for actor in pm.hook.actor_from_request(datasette=datasette, request=request):
        actor = await await_me_maybe(actor)
        if actor:
            return actor
    return None


def set_response_headers(datasette, response, ttl):
    """The headers Datasette's table page adds: Cache-Control from ``_ttl``
    (or default_cache_ttl) on a 200, Referrer-Policy, and CORS when on."""
    if datasette.cache_headers and response.status == 200:
        response.headers["Cache-Control"] = "no-cache" if int(ttl) == 0 else f"max-age={int(ttl)}"
    response.headers["Referrer-Policy"] = "no-referrer"
    if datasette.cors:
        from datasette.utils import add_cors_headers

        add_cors_headers(response.headers)
    return response
