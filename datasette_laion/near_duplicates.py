"""Near-duplicates among the kept rows: two images whose embeddings have a
cosine of THRESHOLD or more (clip-retrieval's rule) are the same picture,
resized, re-encoded or lightly edited.

Found by the build, once: the rows of each inverted list of the index (the
vectors nearest one list centre; the whole database when it has no index)
are compared with each other exactly, on the float16 vectors read a list at
a time: a block of rows against the rows after it (each pair once, half the
products). Two near-duplicates are nearer each other than almost anything
else, so they fall in the same list; a pair split across two lists by a
centre's boundary is missed (the count is a lower bound). Pairs join into
clusters (connected components): the copies of one picture.

Memory does not grow with the number of pairs: one picture copied 6,000
times is 18M pairs, so each block's pairs are folded into the list's
counts and clusters at once (a spanning forest of the list's rows stands
for the pairs seen so far) and dropped. Clusters never cross lists, since
pairs do not.

Written to the database: ``near_duplicates`` (rowid, cluster: the lowest
rowid of its cluster, count: the row's near-duplicates), for the rows that
have any, and build_info's ``near_duplicate_*`` figures.
"""
import numpy as np

THRESHOLD = 0.94
BLOCK = 2048  # rows compared at a time with a chunk of their list's rows ...
SCORE_CELLS = 1 << 23  # ... or fewer, so that their scores take at most 32 MB
COLUMN_ROWS = 16_384  # a list's rows as float32 at a time (48 MB at 768-d)
PAIRS_HELD = 1 << 22  # pairs gathered (64 MB) before they are folded into the clusters

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
    a list at a time (vector_build.RowReader); ``lists``: each row's
    inverted list, or None (compare all rows with each other: a small
    database)."""
    rows = len(vectors)
    count = np.zeros(rows, dtype=np.int32)
    cluster = np.arange(rows, dtype=np.int64)
    if lists is None:
        groups = [np.arange(rows)]
    else:
        order = np.argsort(lists, kind="stable")
        cuts = np.flatnonzero(np.diff(lists[order])) + 1
        groups = np.split(order, cuts)
        del order
    for members in groups:
        members = np.sort(members)
        if len(members) > 1:
            here, lowest = _within(vectors.take(members, np.float16), threshold)
            count[members] = here
            cluster[members] = members[lowest]
        if progress:
            progress(len(members))
    return count, cluster


def _within(group, threshold):
    """(count, lowest): for each row of ``group`` (float16 unit vectors),
    how many others are at ``threshold`` or more, and the lowest row of its
    cluster. A block of rows is compared with the rows from its first on, a
    column chunk at a time; the pairs found are folded in whenever
    PAIRS_HELD have gathered."""
    rows = len(group)
    count = np.zeros(rows, dtype=np.int64)
    lowest = np.arange(rows, dtype=np.int64)
    whole = group.astype(np.float32) if rows <= COLUMN_ROWS else None
    block = max(16, min(BLOCK, SCORE_CELLS // min(rows, COLUMN_ROWS)))
    held, kept = [], 0
    for start in range(0, rows, block):
        left = group[start:start + block].astype(np.float32)
        for at in range(start, rows, COLUMN_ROWS):
            right = whole[at:at + COLUMN_ROWS] if whole is not None else group[at:at + COLUMN_ROWS].astype(np.float32)
            first, second = np.nonzero(left @ right.T >= threshold)
            first, second = first + start, second + at
            keep = second > first  # each pair once, not a row with itself
            if keep.any():
                held.append((first[keep], second[keep]))
                kept += int(keep.sum())
            if kept >= PAIRS_HELD:
                count, lowest = _fold(count, lowest, held)
                held, kept = [], 0
    return _fold(count, lowest, held) if held else (count, lowest)


def _fold(count, lowest, held):
    """``count`` and ``lowest`` with the pairs ``held`` added: the clusters
    so far are a spanning forest (each row joined to its cluster's lowest),
    so the new components come from that forest and the new pairs alone."""
    rows = len(count)
    first = np.concatenate([f for f, _ in held])
    second = np.concatenate([s for _, s in held])
    count = count + np.bincount(first, minlength=rows) + np.bincount(second, minlength=rows)
    forest = np.flatnonzero(lowest != np.arange(rows))
    return count, components(rows, np.concatenate([first, forest]), np.concatenate([second, lowest[forest]]))


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
