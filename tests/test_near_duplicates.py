"""near_duplicates.py: the pairs at cosine >= 0.94 within each inverted
list, their counts and clusters, checked against brute force and a plain
union-find, with blocks, column chunks and folds small enough that every
path runs (a cluster of hundreds of copies spans many of each)."""
import numpy as np
import pytest

from datasette_laion import near_duplicates, vector_build, vector_index


def _union_find(n, a, b):
    parent = list(range(n))

    def root(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist()):
        rx, ry = root(x), root(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    return [root(i) for i in range(n)]


def test_components_match_union_find():
    """components: each row's lowest connected row, as a plain union-find
    gives it, on random graphs."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, m = int(rng.integers(2, 60)), int(rng.integers(0, 80))
        a, b = rng.integers(0, n, m), rng.integers(0, n, m)
        assert near_duplicates.components(n, a, b).tolist() == _union_find(n, a, b)


def _vectors(tmp_path, rows=1_500, dim=32, seed=1):
    """Unit float16 rows with near-duplicates: a picture copied 400 times,
    chains (each copy near the one before, not all near the first) and
    pairs, at random rows; written as a vectors file's rows."""
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(rows, dim))
    order = rng.permutation(rows)
    big, chains, pairs = order[:400], order[400:460].reshape(6, 10), order[460:520].reshape(30, 2)
    data[big] = data[big[0]] + rng.normal(scale=0.05, size=(len(big), dim))
    for chain in chains:
        for before, row in zip(chain[:-1], chain[1:]):
            data[row] = data[before] + rng.normal(scale=0.25, size=dim)
    for first, second in pairs:
        data[second] = data[first] + rng.normal(scale=0.1, size=dim)
    data = (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float16)
    path = tmp_path / "rows.f16"
    path.write_bytes(b"\0" * vector_index.HEADER_SPACE + data.tobytes())
    return path, data


def _truth(data, lists):
    unit = data.astype(np.float32)
    close = unit @ unit.T >= near_duplicates.THRESHOLD
    np.fill_diagonal(close, False)
    if lists is not None:
        close &= lists[:, None] == lists[None, :]
    a, b = np.nonzero(np.triu(close))
    return close.sum(axis=1), _union_find(len(data), a, b)


@pytest.mark.parametrize("small", [False, True])
@pytest.mark.parametrize("listed", [False, True])
def test_find_equals_brute_force(tmp_path, monkeypatch, small, listed):
    """Counts and clusters equal brute force's within each list (or over all
    rows), whether the list fits one block or takes many blocks, column
    chunks and folds; the big cluster's 79,800 pairs are never held at once
    when PAIRS_HELD is small."""
    path, data = _vectors(tmp_path)
    lists = np.random.default_rng(2).integers(0, 3, len(data)).astype(np.int32) if listed else None
    if small:
        monkeypatch.setattr(near_duplicates, "BLOCK", 64)
        monkeypatch.setattr(near_duplicates, "SCORE_CELLS", 64 * 100)
        monkeypatch.setattr(near_duplicates, "COLUMN_ROWS", 100)
        monkeypatch.setattr(near_duplicates, "PAIRS_HELD", 500)
        folds = []
        real_fold = near_duplicates._fold
        monkeypatch.setattr(near_duplicates, "_fold", lambda *a: folds.append(1) or real_fold(*a))
    seen = []
    with vector_build.RowReader(path, len(data), data.shape[1]) as reader:
        count, cluster = near_duplicates.find(reader, lists, progress=seen.append)
    want_count, want_cluster = _truth(data, lists)
    assert (want_count > 0).sum() >= 400  # the data has what the test is about
    assert count.tolist() == want_count.tolist()
    assert cluster.tolist() == want_cluster
    assert sum(seen) == len(data)
    if small:
        assert len(folds) > 10


def test_no_pairs_no_clusters(tmp_path):
    data = np.eye(8, dtype=np.float16)
    path = tmp_path / "rows.f16"
    path.write_bytes(b"\0" * vector_index.HEADER_SPACE + data.tobytes())
    with vector_build.RowReader(path, 8, 8) as reader:
        count, cluster = near_duplicates.find(reader, np.zeros(8, dtype=np.int32))
    assert count.tolist() == [0] * 8 and cluster.tolist() == list(range(8))
    assert list(near_duplicates.table_rows(count, cluster)) == []
    assert near_duplicates.figures(count, cluster)["near_duplicate_clusters"] == 0
