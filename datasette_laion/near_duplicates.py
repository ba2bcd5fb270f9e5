"""Near-duplicates among the kept rows: two images whose embeddings have a
cosine of THRESHOLD or more (clip-retrieval's rule) are the same picture,
resized, re-encoded or lightly edited.

Found by the build, once: the rows of each inverted list of the index (the
vectors nearest one list centre; the whole database when it has no index)
are compared with each other exactly, a block at a time, on the float16
vectors. Two near-duplicates are nearer each other than almost anything
else, so they fall in the same list; a pair split across two lists by a
centre's boundary is missed (the count is a lower bound). Pairs join into
clusters (union-find): the copies of one picture.

Written to the database: ``near_duplicates`` (rowid, cluster: the lowest
rowid of its cluster, count: the row's near-duplicates), for the rows that
have any, and build_info's ``near_duplicate_*`` figures.
"""
import numpy as np

THRESHOLD = 0.94
BLOCK = 2048  # rows compared at a time against their whole list

CREATE_TABLE = """
create table near_duplicates (
    rowid integer primary key,
    cluster integer not null,  -- the lowest rowid of its cluster of near-duplicates
    count integer not null     -- rows at cosine >= 0.94 with this one
)
"""
INSERT = "insert into near_duplicates (rowid, cluster, count) values (?, ?, ?)"


class Clusters:
    """Union-find over row indexes (0-based), the lowest index the root."""

    def __init__(self, rows):
        self.parent = np.arange(rows, dtype=np.int64)

    def find(self, i):
        parent = self.parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def join(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            low, high = (ra, rb) if ra < rb else (rb, ra)
            self.parent[high] = low


def find(vectors, lists=None, threshold=THRESHOLD, progress=None):
    """(count, cluster): for every row (0-based), its near-duplicates'
    number and its cluster's lowest row index. ``vectors``: float16 rows
    (memory-mapped); ``lists``: each row's inverted list, or None (compare
    all rows with each other: a small database)."""
    rows = len(vectors)
    count = np.zeros(rows, dtype=np.int32)
    clusters = Clusters(rows)
    if lists is None:
        groups = [np.arange(rows)]
    else:
        order = np.argsort(lists, kind="stable")
        cuts = np.flatnonzero(np.diff(lists[order])) + 1
        groups = np.split(order, cuts)
    for members in groups:
        _compare(vectors, np.sort(members), threshold, count, clusters)
        if progress:
            progress(len(members))
    roots = np.array([clusters.find(i) for i in range(rows)], dtype=np.int64) if rows else np.zeros(0, np.int64)
    return count, roots


def _compare(vectors, members, threshold, count, clusters):
    if len(members) < 2:
        return
    group = np.asarray(vectors[members], dtype=np.float32)
    for start in range(0, len(members), BLOCK):
        scores = group[start:start + BLOCK] @ group.T
        local, other = np.nonzero(scores >= threshold)
        keep = other > local + start  # each pair once, not a row with itself
        for a, b in zip(members[local[keep] + start].tolist(), members[other[keep]].tolist()):
            count[a] += 1
            count[b] += 1
            clusters.join(a, b)


def table_rows(count, roots):
    """(rowid, cluster rowid, count) of the rows with near-duplicates."""
    have = np.flatnonzero(count)
    return zip((have + 1).tolist(), (roots[have] + 1).tolist(), count[have].tolist())


def figures(count, roots):
    """build_info figures: rows with a near-duplicate, clusters, and the
    copies beyond each cluster's first (what deduplication would remove)."""
    have = np.flatnonzero(count)
    clusters = len(np.unique(roots[have])) if len(have) else 0
    return {
        "near_duplicate_threshold": THRESHOLD,
        "near_duplicate_rows": int(len(have)),
        "near_duplicate_clusters": int(clusters),
        "near_duplicate_copies": int(len(have) - clusters),
    }
