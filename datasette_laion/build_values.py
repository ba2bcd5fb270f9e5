"""The values the build's steps hand each other (build.py): what the check
found (``Plan``), what the partition pass kept (``Loaded``), the ranked
domains (``Domains``), and what a build returns (``BuildResult``); and the
paths of a database's companions. Values only: no step's work is done here.
"""
import dataclasses
from pathlib import Path

from .source import merged_extras, source_profiles


@dataclasses.dataclass
class BuildResult:
    path: Path
    inspect_path: Path
    database_name: str
    rows: int
    source_rows: int
    domains: int
    registered_domains: int
    rows_without_domain: int
    excluded: int
    exclusions: list
    names: dict
    size: int
    timings: dict
    notes: list
    profile: str = None  # the source profile(s) the files were read as
    filter: str = None  # the row filter ("aesthetic >= 6"), None: every row
    filtered: int = 0  # rows the filter left out
    vectors: Path = None  # the vectors file written beside the database (--embeddings)
    vector_facts: dict = None  # its build_info facts: index, near-duplicates


def vectors_path(path):
    """The vectors file of a database: NAME.vectors beside NAME.db."""
    return Path(path).with_suffix(".vectors")


def database_name(path):
    """The name Datasette gives a database file: its file name without suffix."""
    return Path(path).stem


@dataclasses.dataclass
class Plan:
    """What the check found; nothing is written yet."""

    sources: list
    conditions: tuple  # rowfilter.Condition
    names: dict
    exclusions: object  # exclude.Exclusions (each list counts the rows it removes)
    notes: list
    embeddings: list = ()  # embeddings.EmbeddingFile, one per source file (--embeddings)

    def __post_init__(self):
        self.profiles = source_profiles(self.sources)
        self.best_first = self.profiles[0].best_first  # the same for all (open_sources)
        self.extras = merged_extras(self.sources)
        self.source_rows = sum(s.num_rows for s in self.sources)


@dataclasses.dataclass
class Loaded:
    """What the partition pass kept, and the buckets it spilled: [(parts, first rowid)]."""

    per_source: list
    excluded: int
    filtered: int
    null_text: int
    stats: dict
    buckets: list

    @property
    def rows(self):
        return sum(self.per_source)


@dataclasses.dataclass
class Domains:
    """The domain tables' rows, ranked, and each partition worker's ids -> final ids."""

    rows: list
    registered_rows: list
    remaps: list
    without_domain: int

    def __post_init__(self):
        self.count, self.registered_count = len(self.rows), len(self.registered_rows)
