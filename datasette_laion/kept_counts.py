"""Counts of recent searches, kept per immutable database and process."""
import collections

COUNTS_KEPT = 4096  # counts of recent searches kept per database and process (KeptCounts; config counts_kept)


class KeptCounts:
    """The most recently used search counts of one immutable database: a
    count is a pure function of the search and its filters there, and the
    most expensive part of a filtered search (every match checked against
    the filters), asked again for each next page."""

    def __init__(self, entries=COUNTS_KEPT):
        self.entries = entries
        self.kept = collections.OrderedDict()

    def get(self, key):
        found = self.kept.get(key)
        if found is not None:
            self.kept.move_to_end(key)
        return found

    def put(self, key, value):
        self.kept[key] = value
        self.kept.move_to_end(key)
        while len(self.kept) > self.entries:
            self.kept.popitem(last=False)


def kept_counts(database, entries=COUNTS_KEPT):
    """The KeptCounts of ``database`` (Datasette's), or None for a database
    that can change (or when none are to be kept)."""
    if database.is_mutable or not entries:
        return None
    counts = getattr(database, "_laion_counts", None)
    if counts is None:
        counts = database._laion_counts = KeptCounts(entries)
    return counts


