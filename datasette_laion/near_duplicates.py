"""Near-duplicates among the kept rows: two images whose embeddings have a
cosine of THRESHOLD or more (clip-retrieval's rule) are the same picture,
resized, re-encoded or lightly edited.

Found by the build, once: the rows of each inverted list of the index (the
vectors nearest one list centre; the whole database when it has no index)
are compared with each other exactly, a block at a time, on the float16
vectors, read a list at a time. Two near-duplicates are nearer each other than almost anything
else, so they fall in the same list; a pair split across two lists by a
centre's boundary is missed (the count is a lower bound). Pairs join into
clusters (connected components): the copies of one picture.

Written to the database: ``near_duplicates`` (rowid, cluster: the lowest
rowid of its cluster, count: the row's near-duplicates), for the rows that
have any, and build_info's ``near_duplicate_*`` figures.
"""
import numpy as np

THRESHOLD = 0.94
BLOCK = 2048  # rows compared at a time against their whole list ...
SCORE_CELLS = 1 << 25  # ... or fewer, so that a block's scores take at most 128 MB

CREATE_TABLE = """
create table near_duplicates (
    rowid integer primary key,
    cluster integer not null,  -- the lowest rowid of its cluster of near-duplicates
    count integer not null     -- rows at cosine >= 0.94 with this one
)
"""
INSERT = "insert into near_duplicates (rowid, cluster, count) values (?, ?, ?)"


def find(vectors, lists=None, threshold=THRESHOLD, progress=None):
    """(count, cluster): for every row (0-based), its near-duplicates'
    number and its cluster's lowest row index. ``vectors``: the rows, read
    a list at a time (vector_build.RowReader); ``lists``: each row's inverted list, or None (compare
    all rows with each other: a small database)."""
    rows = len(vectors)
    if lists is None:
        groups = [np.arange(rows)]
    else:
        order = np.argsort(lists, kind="stable")
        cuts = np.flatnonzero(np.diff(lists[order])) + 1
        groups = np.split(order, cuts)
    firsts, seconds = [], []
    for members in groups:
        for a, b in _pairs(vectors, np.sort(members), threshold):
            firsts.append(a)
            seconds.append(b)
        if progress:
            progress(len(members))
    a = np.concatenate(firsts) if firsts else np.zeros(0, dtype=np.int64)
    b = np.concatenate(seconds) if seconds else np.zeros(0, dtype=np.int64)
    count = (np.bincount(a, minlength=rows) + np.bincount(b, minlength=rows)).astype(np.int32)
    return count, components(rows, a, b)


def _pairs(vectors, members, threshold):
    """(first rows, second rows) of the pairs at ``threshold`` or more among
    ``members``, each pair once, a block of rows at a time."""
    if len(members) < 2:
        return
    group = vectors.take(members)
    block = max(16, min(BLOCK, SCORE_CELLS // len(members)))
    for start in range(0, len(members), block):
        scores = group[start:start + block] @ group.T
        local, other = np.nonzero(scores >= threshold)
        keep = other > local + start  # each pair once, not a row with itself
        if keep.any():
            yield members[local[keep] + start], members[other[keep]]


def components(rows, a, b):
    """Each row's cluster: the lowest row joined to it through the pairs
    (a[i], b[i]); a row in no pair is its own. Minimum-label propagation
    with pointer jumping, in numpy."""
    label = np.arange(rows, dtype=np.int64)
    if not len(a):
        return label
    while True:
        low = np.minimum(label[a], label[b])
        new = label.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        np.minimum.at(new, label, new)  # a label's own row takes the lowest label it reached
        new = new[new]
        if np.array_equal(new, label):
            return label
        label = new


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
