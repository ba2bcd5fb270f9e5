"""What Datasette's metadata says about the LAION databases (the plugin's
``get_metadata`` hook).

Each LAION database (sites.py) gets its title, description, licence and
source from the profile it was built with (build_info), and the table
settings and canned queries of ``site_metadata.yml``, adapted to what its
source has: a canned query that needs a column the source lacks is left out,
the score columns a query lists are the ones the source has, and a column
the source does not fill is described as always empty. The instance's own
title, description, licence and source are those of the one dataset served,
or name them all when there are several.

The repository's ``metadata.yml`` (Datasette's own metadata) still wins over
all of this: Datasette merges plugins' metadata first and the local file
last, key by key.
"""
import json
from functools import lru_cache
from html import escape
from pathlib import Path

import yaml

from . import sites
from .profiles import SITE_COLUMNS

TEMPLATE_PATH = Path(__file__).parent / "site_metadata.yml"
# Not ours to answer: asked on every request, and never set by a profile.
NOT_OURS = frozenset({"plugins", "allow", "allow_sql", "permissions", "custom_units", "extra_css_urls",
                      "extra_js_urls", "facets", "sortable_columns"})
COMMON_NOTE = ("The images themselves are not stored here: thumbnails load from the sites they were found on, "
               "and many of them no longer exist.")
WITHDRAWN_NOTE = ("LAION withdrew LAION-5B and the datasets made from it in December 2023; "
                  "Re-LAION-5B (August 2024) is its cleaned successor.")


@lru_cache(maxsize=1)
def _template():
    return yaml.safe_load(TEMPLATE_PATH.read_text())


def _words(site):
    return {
        "title": site.title,
        "order": site.order_label,
        "first": "best" if site.best_first else "first",
    }


def database_metadata(site):
    """Datasette's metadata for one LAION database: {description, license,
    ..., tables, queries}."""
    template, words = _template(), _words(site)
    source_columns = json.loads(site.info.get("source_columns") or "{}")
    tables = json.loads(json.dumps(template["tables"]))  # a copy to fill in
    columns = tables["images"]["columns"]
    for column in SITE_COLUMNS:
        if column not in columns:
            continue
        if not site.has(column):
            columns[column] = f"Not in {words['title']}: always empty"
        elif source_columns.get(column) and source_columns[column] != column:
            columns[column] = f"{columns[column]} (the source's {source_columns[column]})"
    for table in tables.values():
        if "description" in table:
            table["description"] = table["description"].format(**words)
    queries = {}
    for name, query in template["queries"].items():
        if not all(site.has(c) for c in query.get("needs", ())):
            continue
        shown = "".join(f", images.{c}" for c in query.get("show", ()) if site.has(c))
        queries[name] = {
            "title": query["title"],
            "description": query["description"].format(**words),
            "sql": query["sql"].format(shown=shown),
        }
    meta = {"title": words["title"], "description": template["description"].format(**words),
            "tables": tables, "queries": queries}
    meta.update(_provenance(site))
    return meta


def _provenance(site):
    info = site.info
    found = {
        "license": info.get("licence") or (site.profile.licence if site.profile else None),
        "license_url": info.get("licence_url") or (site.profile.licence_url if site.profile else None),
        "source": (f"{site.profile.title} ({info.get('source') or site.profile.source})" if site.profile
                   else info.get("source")),
        "source_url": info.get("source_url") or (site.profile.source_url if site.profile else None),
    }
    return {k: v for k, v in found.items() if v}


def instance_metadata(found):
    """The instance's title, description and provenance: the one dataset's,
    or a list of them all."""
    if len(found) == 1:
        site = next(iter(found.values()))
        meta = {"title": f"{site.title} image search", "description_html": _description_html(site)}
        meta.update(_provenance(site))
        return meta
    items = "".join(f"<li><strong>{escape(s.title)}</strong>: {s.rows:,} images, {escape(s.order_label)}</li>"
                    for s in found.values())
    return {"title": "Image-text datasets: " + ", ".join(s.title for s in found.values()),
            "description_html": f"<p>The captions, image URLs and scores of:</p><ul>{items}</ul><p>{COMMON_NOTE}</p>"}


def _description_html(site):
    profile = site.profile
    what = escape(profile.description) + "." if profile else ""
    kept = f" Built with the filter {escape(site.filter)}." if site.filter else ""
    withdrawn = f"</p><p>{WITHDRAWN_NOTE}" if profile and profile.name.startswith("laion-aesthetics") else ""
    return (f"<p>The captions, image URLs and scores of the {site.rows:,} images in "
            f"<strong>{escape(site.title)}</strong>, stored {escape(site.order_label)}. {what}{kept} "
            f"{COMMON_NOTE}{withdrawn}</p>")


def metadata(datasette, key):
    """The get_metadata hook's answer: {} when no LAION database is served
    (or for the keys no profile sets), else the instance's and each LAION
    database's metadata, as a fresh dict (Datasette merges into it)."""
    if key in NOT_OURS:
        return {}
    found = sites.sites(datasette)
    if not found:
        return {}
    kept = getattr(datasette, "_laion_metadata", None)
    if kept is None or kept[0] is not found:
        kept = datasette._laion_metadata = (found, json.dumps(site_metadata(found)))
    return json.loads(kept[1])


def site_metadata(found):
    """The metadata the plugin adds for LAION databases ``found`` ({name:
    Site}): the instance's, and each database's."""
    answer = instance_metadata(found)
    answer["databases"] = {name: database_metadata(site) for name, site in found.items()}
    return answer


def for_file(path, name):
    """The metadata the plugin adds for the database file ``path`` served as
    ``name`` (for scripts: what plain Datasette is given to compare)."""
    found = sites.from_file(path, name)
    if found is None:
        raise ValueError(f"{path} is not a database that `datasette laion build` made")
    return site_metadata({name: found})
