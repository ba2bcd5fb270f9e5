"""The generated CLIP-like vectors (sample_vectors.py): unit length,
deterministic, clustered with a decaying spectrum, near-duplicates planted
where they are said to be."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from datasette_laion import cli, sample, sample_images
from datasette_laion.sample_vectors import PLANTED_FILE, Generator, Shape, write_embeddings
from datasette_laion.source import open_source

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


# The sample's embeddings: sample_vectors.write_embeddings, `sample --embeddings`.

@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """(parquet paths, npy paths, planted pairs) of a two-file sample."""
    directory = tmp_path_factory.mktemp("embedded")
    paths = sample.generate(directory / "parquet", rows=3000, files=2, seed=5)
    written, planted = write_embeddings(paths, directory / "embeddings", Shape(seed=5))
    return paths, written, planted


def _captions_and_urls(path):
    source = open_source(path)
    table = pq.read_table(path, columns=[source.columns["text"], source.columns["url"]])
    return table.column(0).to_pylist(), table.column(1).to_pylist()


def test_one_npy_per_parquet_file_row_for_row(embedded):
    paths, written, _ = embedded
    assert [p.name for p in written] == ["img_emb_0000.npy", "img_emb_0001.npy"]
    for path, npy in zip(paths, written):
        vectors = np.load(npy)
        assert vectors.dtype == np.float16
        assert vectors.shape == (pq.ParquetFile(path).metadata.num_rows, 768)
        assert np.allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1, atol=1e-2)
    assert not list(written[0].parent.glob("*.partial"))


def test_rows_of_a_topic_are_near_each_other(embedded):
    paths, written, _ = embedded
    captions, _ = _captions_and_urls(paths[0])
    topics = np.array([sample_images.topic(c) for c in captions])
    assert len(set(topics)) == len(sample_images.PAINTERS)  # all of them, null captions as "art"
    vectors = np.load(written[0]).astype(np.float32)
    cosine = vectors @ vectors.T
    same = np.equal.outer(topics, topics)
    np.fill_diagonal(same, False)
    other = ~np.equal.outer(topics, topics)
    assert cosine[same].mean() > cosine[other].mean() + 0.4
    for name in sample_images.PAINTERS:  # each topic, not only on average
        mine = topics == name
        assert cosine[np.ix_(mine, mine)].mean() > cosine[np.ix_(mine, ~mine)].mean() + 0.3


def test_the_same_url_twice_is_a_near_duplicate(embedded):
    paths, written, _ = embedded
    first, pairs = {}, 0
    for path, npy in zip(paths, written):
        vectors = np.load(npy).astype(np.float32)
        for row, url in enumerate(_captions_and_urls(path)[1]):
            if not url:
                continue  # no URL: an image of its own
            if url in first:
                assert first[url] @ vectors[row] >= 0.95, url
                pairs += 1
            else:
                first[url] = vectors[row]
    assert pairs >= len(sample.AWKWARD_URLS) - 1  # the awkward URLs are in every file


def test_planted_near_duplicates_are_listed_and_near(embedded):
    paths, written, planted = embedded
    assert json.loads((written[0].parent / PLANTED_FILE).read_text()) == planted
    vectors = [np.load(npy).astype(np.float32) for npy in written]
    for f, path in enumerate(paths):
        mine = [p for p in planted if p[0] == f]
        assert len(mine) == round(pq.ParquetFile(path).metadata.num_rows * 0.02)
        topics = [sample_images.topic(c) for c in _captions_and_urls(path)[0]]
        for file, row, original_file, original in mine:
            assert original_file == file and original < row
            assert vectors[file][row] @ vectors[file][original] >= 0.95
            assert topics[row] == topics[original]  # the pictures look alike too
    # and they stand out: a copy's nearest other row is its original (or another copy of it)
    v = vectors[0]
    file, row, _, original = planted[0]
    cosine = v @ v[row]
    cosine[row] = -1
    assert cosine[original] >= np.sort(cosine)[-3]


def test_embeddings_are_deterministic(embedded, tmp_path):
    paths, written, planted = embedded
    again, planted_again = write_embeddings(paths, tmp_path / "again", Shape(seed=5))
    assert planted_again == planted
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in written]
    other, _ = write_embeddings(paths, tmp_path / "other", Shape(seed=6))
    assert other[0].read_bytes() != written[0].read_bytes()


@pytest.mark.parametrize("profile", ["pd12m", "datacomp-1b", "cc12m"])
def test_embeddings_of_other_profiles(tmp_path, profile):
    paths = sample.generate(tmp_path / "parquet", rows=1200, files=2, seed=1, profile=profile)
    written, planted = write_embeddings(paths, tmp_path / "embeddings", Shape(seed=1))
    captions, _ = _captions_and_urls(paths[1])
    topics = np.array([sample_images.topic(c) for c in captions])
    assert len(set(topics)) > 4  # the profile's caption column was read
    vectors = np.load(written[1]).astype(np.float32)
    assert vectors.shape == (600, 768) and len(planted) == 2 * 12
    cosine = vectors @ vectors.T
    assert cosine[np.equal.outer(topics, topics)].mean() > cosine[~np.equal.outer(topics, topics)].mean() + 0.4


def test_files_without_rows_get_empty_arrays(tmp_path):
    paths = sample.generate(tmp_path / "parquet", rows=2, files=3, seed=1)
    written, planted = write_embeddings(paths, tmp_path / "embeddings", Shape(seed=1))
    assert [np.load(p).shape for p in written] == [(1, 768), (1, 768), (0, 768)]
    assert planted == []


def test_topics_keep_their_cluster_from_call_to_call():
    generator = Generator(Shape(dim=64, clusters=16, seed=0))
    names = sorted(sample_images.PAINTERS)
    alone = generator.for_topics(["sea"], [b"k" * 8], names=names)
    among = generator.for_topics(["art", "sea"], [b"j" * 8, b"k" * 8], names=names)
    assert np.array_equal(alone[0], among[1])


def test_sample_command_writes_embeddings(tmp_path):
    result = CliRunner().invoke(cli.laion, ["sample", str(tmp_path / "parquet"), "--rows", "500", "--files", "2",
                                            "--embeddings", str(tmp_path / "embeddings")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "embeddings").iterdir()) == [
        "img_emb_0000.npy", "img_emb_0001.npy", PLANTED_FILE]
    assert "500 embeddings in" in result.output and "10 planted near-duplicates" in result.output
    assert "--embeddings DIRECTORY" in CliRunner().invoke(cli.laion, ["sample", "--help"]).output
