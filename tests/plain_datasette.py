"""Plain Datasette in the tests' own process: this plugin's hooks are not
called while ``plugin_unloaded()`` lasts (the oracle of test_table_api.py
and test_image_page.py)."""
import contextlib

from datasette.app import Datasette
from datasette.plugins import pm

import datasette_laion
from datasette_laion import site, site_metadata


@contextlib.contextmanager
def plugin_unloaded():
    name = pm.get_name(datasette_laion)
    pm.unregister(datasette_laion)
    try:
        yield
    finally:
        pm.register(datasette_laion, name=name)


def plain_site(built):
    """Plain Datasette serving the built database as the site does (same
    file, inspect data and settings), with the metadata the plugin would add
    (site_metadata.py) given as its own: tables' labels, FTS settings, canned
    queries. Call and use it inside ``plugin_unloaded()``."""
    import json

    name = built.path.stem
    metadata = site.metadata()
    metadata.update(site_metadata.for_file(built.path, name))
    return Datasette(immutables=[str(built.path)], inspect_data=json.loads(built.inspect_path.read_text()),
                     metadata=metadata, settings=site.settings())
