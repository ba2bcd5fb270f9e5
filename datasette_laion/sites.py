"""Which served databases are LAION sites, and what each one holds.

A database is a LAION site when ``datasette laion build`` made it: it has a
``build_info`` table with the builder's version in it, whatever the file is
called. Several can be served side by side (``datasette laion serve
pd12m.db laion-aesthetic-6pls.db``), each with its own search, pages and
counts; every other database is Datasette's alone.

``build_info`` says what the source had (``site_columns``), how the rows are
stored (``order``), and where they came from (profile, licence, source). A
``Site`` answers the questions the pages ask of that: which filters, sorts,
charts and canned queries make sense, whether safe mode has anything to go
on, and what "best first" means here. It is read once per database file,
with a read-only connection of its own, so that it can be asked anywhere
(a hook, a template, the request pipeline) without a query.
"""
import json
import math
import re
import sqlite3
import weakref
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import quote

from .profiles import PROFILES, SITE_COLUMNS

BUILT_BY = "datasette_laion_version"  # the build_info key every build writes
BUILD_INFO_SQL = "select key, value from build_info"
# A build from before profiles: the 6+ files, with every site column.
LEGACY_PROFILE = "laion-aesthetics-v2"
SCORES = ("similarity", "punsafe", "pwatermark", "aesthetic")

# build_info order -> (the column rows are stored by, highest first, or None;
# what the pages call that order; what it means)
ORDERS = {
    "aesthetic desc": ("aesthetic", "best first", "highest aesthetic score first"),
    "similarity desc": ("similarity", "best first", "highest CLIP image-caption similarity first"),
    "source order": (None, "in source order", "in the order of the source's files (it has no score to rank by)"),
}


@dataclass(frozen=True)
class Site:
    """A LAION database: its name and its build_info."""

    name: str
    info: dict  # build_info: key -> value (text)

    @cached_property
    def profile(self):
        """The source's profile (profiles.py), or None for one this version
        does not know."""
        names = [n.strip() for n in self.info.get("profile", LEGACY_PROFILE).split(",")]
        return PROFILES.get(names[0])

    @cached_property
    def columns(self):
        """The site columns the source filled (the others are NULL)."""
        listed = self.info.get("site_columns")
        return frozenset(json.loads(listed)) if listed else frozenset(SITE_COLUMNS)

    def has(self, column):
        return column in self.columns

    @property
    def scores(self):
        """The score columns the source has, in table order."""
        return [c for c in SCORES if c in self.columns]

    @property
    def safe_mode(self):
        """Whether safe mode has anything to go on (an NSFW probability)."""
        return self.has("punsafe")

    @cached_property
    def _order(self):
        return ORDERS.get(self.info.get("order", "aesthetic desc"), ORDERS["source order"])

    @property
    def best_first(self):
        """The column rowids run by, highest first, or None (source order)."""
        return self._order[0]

    @property
    def order_short(self):
        """"best first", or "in source order": how the pages name the stored order."""
        return self._order[1]

    @property
    def order_meaning(self):
        """What the stored order is, said in full."""
        return self._order[2]

    @property
    def order_label(self):
        """The stored order as the pages say it: "best first (highest aesthetic score first)"."""
        short, meaning = self._order[1], self._order[2]
        return f"{short} ({meaning})" if self.best_first else meaning

    @cached_property
    def rows(self):
        try:
            return int(self.info.get("rows") or 0)
        except ValueError:
            return 0

    @cached_property
    def filter(self):
        return self.info.get("filter") or None

    @cached_property
    def title(self):
        """The dataset's name: the profile's title (build_info), with the
        threshold of an aesthetics set ("LAION-Aesthetics v2 6+"), or the
        row filter the build kept rows by."""
        base = self.info.get("profile_title") or (self.profile.title if self.profile else self.name)
        if self.best_first == "aesthetic" and base.startswith("LAION-Aesthetics"):
            threshold = self._aesthetic_threshold()
            if threshold is not None:
                return f"{base} {threshold:g}+"
        return f"{base}, {self.filter}" if self.filter else base

    def _aesthetic_threshold(self):
        """The score an aesthetics set was cut at: the filter's, else the
        lowest score rounded down to the published steps (4.5, 4.75, ..., 6, 6.25)."""
        match = re.fullmatch(r"aesthetic >= ([0-9.]+)", self.filter or "")
        try:
            if match:
                return float(match.group(1))
            low = self.info.get("aesthetic_min")
            return math.floor(float(low) * 4) / 4 if low else None
        except ValueError:
            return None

    @cached_property
    def image_page_columns(self):
        listed = self.info.get("image_page_columns")
        return json.loads(listed) if listed else []


_read = weakref.WeakKeyDictionary()  # Datasette's Database -> Site or None


def read_site(db):
    """The Site of a Datasette Database, or None when this project did not
    build it (or it is in memory). Read once per Database."""
    try:
        return _read[db]
    except KeyError:
        pass
    found = _read[db] = _read_build_info(db)
    return found


def _read_build_info(db):
    path = getattr(db, "path", None)
    if not path or getattr(db, "is_memory", False):
        return None
    return from_file(path, db.name, immutable=not db.is_mutable)


def from_file(path, name=None, immutable=True):
    """The Site of a database file (named ``name``, default its stem), or
    None when this project did not build it."""
    path = Path(path)
    if not path.is_file():
        return None
    uri = f"file:{quote(str(path.resolve()))}?mode=ro" + ("&immutable=1" if immutable else "")
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            info = dict(conn.execute(BUILD_INFO_SQL).fetchall())
        finally:
            conn.close()
    except sqlite3.Error:  # no build_info (an ordinary database), or not a database at all
        return None
    if BUILT_BY not in info:
        return None
    return Site(name=name or path.stem, info={str(k): str(v) if v is not None else "" for k, v in info.items()})


def sites(datasette):
    """{name: Site} of the served LAION databases, in Datasette's order.
    Recomputed only when the served databases change."""
    served = tuple(datasette.databases.items())
    kept = getattr(datasette, "_laion_sites", None)
    if kept is not None and kept[0] == served:
        return kept[1]
    found = {}
    for name, db in served:
        site = read_site(db)
        if site is not None:
            found[name] = site if site.name == name else Site(name=name, info=site.info)
    datasette._laion_sites = (served, found)
    return found


def get(datasette, database):
    """The Site of the database called ``database``, or None."""
    if database is None:
        return None
    return sites(datasette).get(database)


def first(datasette):
    """The first LAION site served, or None."""
    return next(iter(sites(datasette).values()), None)
