"""Plain Datasette in the tests' own process: this plugin's hooks are not
called while ``plugin_unloaded()`` lasts (the oracle of test_table_api.py
and test_image_page.py)."""
import contextlib

from datasette.plugins import pm

import datasette_laion


@contextlib.contextmanager
def plugin_unloaded():
    name = pm.get_name(datasette_laion)
    pm.unregister(datasette_laion)
    try:
        yield
    finally:
        pm.register(datasette_laion, name=name)
