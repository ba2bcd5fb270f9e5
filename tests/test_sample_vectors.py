"""The generated CLIP-like vectors (sample_vectors.py): unit length,
deterministic, clustered with a decaying spectrum, near-duplicates planted
where they are said to be."""
import numpy as np

from datasette_laion.sample_vectors import Generator, Shape

SMALL = Shape(dim=64, clusters=16, seed=3, duplicates=0.05)


def collect(generator, n, chunk=500):
    blocks, pairs = [], []
    for _, block, planted in generator.chunks(n, chunk=chunk):
        blocks.append(block)
        pairs += planted
    return np.concatenate(blocks).astype(np.float32), pairs


def test_unit_float16_and_deterministic():
    first, pairs = collect(Generator(SMALL), 2000)
    again, pairs_again = collect(Generator(SMALL), 2000)
    assert np.array_equal(first, again) and pairs == pairs_again
    assert np.allclose(np.linalg.norm(first, axis=1), 1, atol=1e-2)
    assert Generator(SMALL).chunks(10).__next__()[1].dtype == np.float16


def test_planted_near_duplicates_are_near():
    vectors, pairs = collect(Generator(SMALL), 4000)
    assert len(pairs) == 4000 * 0.05
    cosines = [vectors[c] @ vectors[o] for c, o in pairs]
    assert min(cosines) >= 0.95  # clip-retrieval's near-duplicate rule is 0.94
    assert all(o < c for c, o in pairs)


def test_clusters_and_a_decaying_spectrum():
    generator = Generator(SMALL)
    vectors, _ = collect(generator, 4000)
    rotated_back = vectors @ generator.rotation.T  # the generator's own directions
    variance = rotated_back.var(axis=0)
    assert variance[:8].sum() > 3 * variance[-8:].sum()  # most variance in the first directions
    rng = np.random.default_rng(0)
    same = generator.vectors(np.array([0, 0]), rng)
    other = generator.vectors(np.array([0, 1]), rng)
    assert same[0] @ same[1] > other[0] @ other[1]  # a cluster's vectors are nearer each other


def test_sample_rows_follow_their_topic():
    generator = Generator(Shape(dim=64, clusters=16, seed=0))
    topics = ["sea", "sea", "forest", "forest", "sea"]
    keys = [b"a" * 8, b"b" * 8, b"c" * 8, b"d" * 8, b"a" * 8]  # the last is the first image again
    v = generator.for_topics(topics, keys).astype(np.float32)
    assert v[0] @ v[1] > v[0] @ v[2]
    assert v[0] @ v[4] > 0.95


def test_sub_clusters_are_nearer_than_their_cluster():
    generator = Generator(Shape(dim=64, clusters=4, seed=2, per_subcluster=10))
    rng = np.random.default_rng(0)
    clusters = np.zeros(400, dtype=np.int64)
    subs = np.repeat(np.arange(40), 10)
    v = generator.vectors(clusters, rng, subs)
    cos = v @ v.T
    same_sub = cos[np.equal.outer(subs, subs) & ~np.eye(400, dtype=bool)].mean()
    other_sub = cos[~np.equal.outer(subs, subs)].mean()
    assert same_sub > other_sub + 0.05
