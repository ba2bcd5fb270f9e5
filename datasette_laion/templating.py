"""The plugin's templates, for the LAION database's pages only.

Datasette looks for a template per database and per table before its own
(``table-<db>-<table>.html``, ``_table-<db>-<table>.html``,
``row-<db>-<table>.html``: its documented custom template names, spelled
with ``to_css_class``). ``LaionTemplates`` answers those names for the
LAION databases (sites.py) with the plugin's templates; every other name,
and every name of every other database, goes to Datasette's own loader
untouched. The plugin's template directory holds only ``laion_*`` names, so
it overrides nothing of Datasette's.

A template of the same name in ``--template-dir`` still wins: the names are
asked of Datasette's loader first.
"""
import weakref

from jinja2 import BaseLoader, TemplateNotFound

from .compat import to_css_class

# Datasette's template name (with {db} and {table}) -> the plugin's template.
TABLE_TEMPLATES = {
    "table-{db}-{table}.html": "laion_table.html",  # the guard's notes and offered sorts
    "_table-{db}-{table}.html": "laion_table_rows.html",  # rows written by a Python filter
    "row-{db}-{table}.html": "laion_row.html",
}


class LaionTemplates(BaseLoader):
    def __init__(self, loader):
        self.loader = loader
        self.names = {}

    def set_database(self, database, tables):
        """Answer the template names of ``database``'s ``tables`` too."""
        db = to_css_class(database)
        self.names.update({
            pattern.format(db=db, table=to_css_class(table)): template
            for table in tables
            for pattern, template in TABLE_TEMPLATES.items()
        })
        if "images" in tables:  # the page of one image (image_page.py)
            self.names[f"row-{db}-images.html"] = "laion_image.html"

    def get_source(self, environment, template):
        try:
            return self.loader.get_source(environment, template)
        except TemplateNotFound:
            ours = self.names.get(template)
            if ours is None:
                raise
            return self.loader.get_source(environment, ours)

    def list_templates(self):
        return self.loader.list_templates()


_installed = weakref.WeakKeyDictionary()  # Jinja Environment -> its LaionTemplates


def install(env):
    """Put a LaionTemplates in front of ``env``'s loader (once)."""
    if env not in _installed:
        env.loader = _installed[env] = LaionTemplates(env.loader)


async def set_database(env, db):
    """Answer the template names of ``db``'s tables (Datasette's Database)."""
    if env in _installed:
        _installed[env].set_database(db.name, await db.table_names())
