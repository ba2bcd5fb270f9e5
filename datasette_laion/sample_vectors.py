"""Generated image embeddings with the structure real CLIP embeddings have,
for the sample (`datasette laion sample --embeddings`) and the vector
benchmark (scripts/bench_vectors.py).

Isotropic noise is the easy case for a nearest-neighbour index and says
nothing about real data. These vectors have:

* clusters: every vector belongs to one of ``clusters`` centres, picked with
  Zipf-like popularity (a few big topics, a long tail);
* sub-clusters: within a cluster, vectors gather around one of its
  sub-centres (``per_subcluster`` vectors each on average: the same object or
  scene photographed many times), so an image's nearest neighbours are
  nearer than the rest of its topic, as in real data (``subclusters=False``:
  none, every vector of a cluster equally far from the others);
* a decaying spectrum: centre and spread both have standard deviation
  ``(i + 1) ** -decay`` along the i-th of ``dim`` directions, so most of the
  variance lies in the first few hundred; the directions are a random
  rotation, not the axes (an index may not lean on axis-aligned variance);
* planted near-duplicates: ``duplicates`` of the vectors are another one
  plus a little noise (cosine >= 0.95, above clip-retrieval's 0.94 rule),
  reported so that tests can check they are found;
* unit length, float16 on disk, as CLIP embeddings are shipped.

For the sample (``write_embeddings``), the cluster of a row is its caption's
topic (the topic that also picks its generated picture, sample_images.topic),
so "similar" looks right in the demo; rows of the same URL are
near-duplicates, and some more are planted and listed. Deterministic for a
seed. Generated in chunks: memory is that of one chunk, whatever ``n``.
"""
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIM = 768  # CLIP ViT-L/14
SPREAD = 0.55  # within-cluster spread, relative to the spread of the centres
DUPLICATE_NOISE = 0.08  # relative noise of a near-duplicate (cosine ~0.997)
CHUNK = 65_536
SUB_POOL = 65_536  # sub-centre offsets to pick from (200 MB as float32)


@dataclass(frozen=True)
class Shape:
    """The generator's parameters, stated beside every figure measured on its vectors."""

    dim: int = DIM
    clusters: int = 4096
    decay: float = 0.6  # spectrum: std of the i-th direction is (i + 1) ** -decay
    zipf: float = 1.1  # cluster popularity ~ rank ** -zipf
    spread: float = SPREAD
    per_subcluster: int = 0  # vectors per sub-cluster on average; 0: no sub-clusters
    sub_spread: float = 0.45  # sub-centres around their cluster's centre
    duplicates: float = 0.02  # share of vectors that are a near-copy of an earlier one
    seed: int = 0

    def describe(self):
        subs = (f", sub-clusters of ~{self.per_subcluster} (spread {self.sub_spread})" if self.per_subcluster
                else "")
        return (f"{self.dim}-d, {self.clusters:,} clusters (popularity rank^-{self.zipf}){subs}, spectrum "
                f"(i+1)^-{self.decay} in a random rotation, spread {self.spread}, {self.duplicates:.0%} planted "
                f"near-duplicates, seed {self.seed}")


class Generator:
    def __init__(self, shape=Shape()):
        self.shape = shape
        rng = np.random.default_rng(shape.seed)
        self.scale = ((np.arange(shape.dim) + 1.0) ** -shape.decay).astype(np.float32)
        # a random rotation (QR of a Gaussian matrix)
        q, r = np.linalg.qr(rng.standard_normal((shape.dim, shape.dim)).astype(np.float32))
        self.rotation = (q * np.sign(np.diag(r))).astype(np.float32)
        self.centres = (rng.standard_normal((shape.clusters, shape.dim)).astype(np.float32) * self.scale)
        popularity = (np.arange(shape.clusters) + 1.0) ** -shape.zipf
        self.popularity = popularity / popularity.sum()

    def vectors(self, clusters, rng, subclusters=None):
        """Unit vectors (float32) around the given cluster numbers (and sub-cluster numbers)."""
        return self._place(clusters, rng.standard_normal((len(clusters), self.shape.dim)).astype(np.float32),
                           subclusters)

    def _place(self, clusters, noise, subclusters=None):
        """Unit vectors (float32) around the clusters' centres, ``noise``
        (standard normal, one row a vector) scaled by the spectrum."""
        raw = self.centres[clusters] + self.shape.spread * (noise * self.scale)
        if subclusters is not None:
            raw += self.shape.sub_spread * self._sub_centres(clusters, subclusters)
        out = raw @ self.rotation
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    def _sub_centres(self, clusters, subclusters):
        """Each (cluster, sub-cluster)'s offset from its centre: a vector of a
        fixed pool picked by a hash of the pair, with the decaying spectrum."""
        if not hasattr(self, "pool"):
            pool_rng = np.random.default_rng(self.shape.seed + 2)
            self.pool = pool_rng.standard_normal((SUB_POOL, self.shape.dim)).astype(np.float32) * self.scale
        keys = (clusters.astype(np.int64) * 1_000_003 + subclusters.astype(np.int64) * 7_919) % SUB_POOL
        return self.pool[keys]

    def near_copy(self, vectors, rng):
        """Near-duplicates of ``vectors`` (cosine ~0.997 with their originals)."""
        noise = rng.standard_normal(vectors.shape).astype(np.float32) / np.sqrt(self.shape.dim)
        out = vectors + DUPLICATE_NOISE * noise
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    def chunks(self, n, chunk=CHUNK):
        """(start, float16 vectors, duplicate pairs [(copy, original)]) of
        ``n`` vectors, chunk by chunk. A duplicate's original is an earlier
        vector of the same chunk."""
        rng = np.random.default_rng(self.shape.seed + 1)
        # sub-clusters per cluster, by the cluster's expected share of n
        per = self.shape.per_subcluster
        subs = np.maximum(1, np.round(self.popularity * n / per)).astype(np.int64) if per else None
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            clusters = rng.choice(self.shape.clusters, size=size, p=self.popularity)
            subclusters = (rng.random(size) * subs[clusters]).astype(np.int64) if per else None
            block = self.vectors(clusters, rng, subclusters)
            pairs = self._plant(block, rng, start)
            yield start, block.astype(np.float16), pairs

    def _plant(self, block, rng, start):
        count = int(round(len(block) * self.shape.duplicates))
        if count == 0 or len(block) < 2:
            return []
        copies = np.sort(rng.choice(np.arange(1, len(block)), size=min(count, len(block) - 1), replace=False))
        originals = (rng.random(len(copies)) * copies).astype(np.int64)  # an earlier vector
        for copy, original in zip(copies, originals):  # in order: an original may be a copy itself
            block[copy] = self.near_copy(block[original][None, :], rng)[0]
        return [(start + int(c), start + int(o)) for c, o in zip(copies, originals)]

    def for_topics(self, topics, keys, names=None):
        """float16 unit vectors for sample rows: ``topics`` (sample_images.topic
        of each caption) pick the cluster, ``keys`` (bytes, e.g. a hash of the
        URL) vary each row deterministically; rows with the same key (the same
        image) get near-duplicate vectors. ``names``: every topic, in the
        order of their clusters (default: the distinct ``topics``, sorted);
        give it when rows come in several calls, so that a topic keeps its
        cluster from one call to the next."""
        names = sorted(set(topics)) if names is None else names
        cluster_of = {name: i % self.shape.clusters for i, name in enumerate(names)}
        clusters = np.array([cluster_of[name] for name in topics], dtype=np.int64)
        noise = np.zeros((len(topics), self.shape.dim), dtype=np.float32)
        first_of, repeats = {}, []
        for i, key in enumerate(keys):
            if key in first_of:
                repeats.append((i, key))
                continue
            first_of[key] = i
            noise[i] = _key_rng(key).standard_normal(self.shape.dim)
        out = self._place(clusters, noise)
        for i, key in repeats:
            out[i] = self.near_copy(out[first_of[key]][None, :], _key_rng(key))[0]
        return out.astype(np.float16)


def _key_rng(key):
    return np.random.default_rng(int.from_bytes(key[:8], "little"))


# The sample's embeddings: `datasette laion sample --embeddings DIR`.

EMBEDDING_CHUNK = 8_192  # rows generated at a time (~75 MB of float32 working space)
PLANTED_FILE = "planted_near_duplicates.json"


def embedding_name(index):
    """The embeddings file of the index-th parquet file, named as LAION-5B's
    img_emb_NNNN.npy beside its metadata_NNNN.parquet."""
    return f"img_emb_{index:04d}.npy"


# The sample's embeddings: looser topics than the benchmark's default, so
# that two different pictures of one topic stay well under the near-duplicate
# cosine (same topic ~0.6 on average, at most ~0.85; only the planted copies
# and repeated URLs reach 0.94), as with real CLIP embeddings.
SAMPLE_SPREAD, SAMPLE_DECAY = 0.8, 0.4


def sample_shape(seed=0):
    return Shape(spread=SAMPLE_SPREAD, decay=SAMPLE_DECAY, seed=seed)


def write_embeddings(paths, outdir, shape=None, progress=None):
    """Write an image embedding for every row of the sample parquet files
    ``paths`` (of any profile, in the order given) into ``outdir``: for the
    i-th file, embedding_name(i), float16, (its rows, shape.dim), row j of
    the one for row j of the other. A row's vector follows its caption's
    topic (sample_images.topic, which also picks its picture) and is varied
    by its URL: rows with the same URL, in one file or several, get
    near-duplicates of the first one's vector (a row without a URL is an
    image of its own). In each file, a ``shape.duplicates`` share of the
    other rows are planted near-copies of an earlier row of the same file and
    topic; PLANTED_FILE lists them as [file, row, original file, original
    row]. Deterministic for ``shape.seed``. One file's vectors at a time, on
    disk; ``progress(n)`` after each chunk of n rows. Returns (the .npy
    paths, the planted pairs)."""
    shape = shape or sample_shape()
    from . import sample_images

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    topics = sorted(sample_images.PAINTERS)
    rows = [_row_keys(path, i, topics) for i, path in enumerate(paths)]
    values, counts = np.unique(np.concatenate([keys for keys, _ in rows] or [np.empty(0, np.uint64)]),
                               return_counts=True)
    writer = _FileWriter(Generator(shape), topics, values[counts > 1], progress)
    written, planted = [], []
    for i, (keys, codes) in enumerate(rows):
        is_repeat = np.isin(keys, writer.repeated)
        copies = _choose_copies(codes, is_repeat, shape, i)
        path = outdir / embedding_name(i)
        writer.write(path, i, keys, [topics[c] for c in codes], is_repeat, copies)
        written.append(path)
        planted += [[i, copy, i, original] for copy, original in copies.items()]
    (outdir / PLANTED_FILE).write_text(json.dumps(planted) + "\n")
    return written, planted


def _row_keys(path, index, topics):
    """(URL keys as uint64, topic numbers as uint8) of the rows of one parquet file."""
    from .sample_images import parquet_rows, topic

    number = {name: n for n, name in enumerate(topics)}
    keys, codes = [], []
    for row, (url, caption, _, _) in enumerate(parquet_rows([path])):
        text = url if url else f"\0no URL: file {index} row {row}"
        keys.append(int.from_bytes(hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest()[:8], "little"))
        codes.append(number[topic(caption)])
    return np.array(keys, dtype=np.uint64), np.array(codes, dtype=np.uint8)


def _choose_copies(codes, is_repeat, shape, index):
    """{copy row: original row} for the index-th file: about shape.duplicates
    of its rows, each the copy of a random earlier row of the same topic (so
    that the pictures look alike too), none among the rows of repeated URLs."""
    rng = np.random.default_rng([shape.seed, 5, index])
    by_topic = np.argsort(codes, kind="stable")  # rows grouped by topic, each group in row order
    starts = np.searchsorted(codes[by_topic], np.arange(256))
    rank = np.empty(len(codes), dtype=np.int64)  # earlier rows of the same topic
    rank[by_topic] = np.arange(len(codes)) - starts[codes[by_topic]]
    candidates = np.flatnonzero((rank > 0) & ~is_repeat)
    count = min(int(round(len(codes) * shape.duplicates)), len(candidates))
    if count == 0:
        return {}
    copies = np.sort(rng.choice(candidates, size=count, replace=False))
    originals = by_topic[starts[codes[copies]] + (rng.random(count) * rank[copies]).astype(np.int64)]
    return {int(c): int(o) for c, o in zip(copies, originals)}


class _FileWriter:
    """Writes the embeddings files of one sample, one after the other."""

    def __init__(self, generator, names, repeated, progress):
        self.generator, self.names, self.repeated, self.progress = generator, names, repeated, progress
        self.firsts = {}  # the vector of the first row of each repeated URL key

    def write(self, path, index, keys, topics, is_repeat, copies):
        """The index-th file: rows of URL ``keys`` (``is_repeat``: seen more
        than once) and ``topics``, ``copies`` ({copy row: original row}) planted."""
        generator, seed = self.generator, self.generator.shape.seed
        partial = path.with_name(path.name + ".partial")
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16, shape=(len(keys), generator.shape.dim))
        copy_rows = np.array(sorted(copies), dtype=np.int64)
        for start in range(0, len(keys), EMBEDDING_CHUNK):
            end = min(start + EMBEDDING_CHUNK, len(keys))
            block = generator.for_topics(topics[start:end], [int(k).to_bytes(8, "little") for k in keys[start:end]],
                                         names=self.names).astype(np.float32)
            special = {int(r) + start for r in np.flatnonzero(is_repeat[start:end])}
            special.update(int(c) for c in copy_rows[np.searchsorted(copy_rows, start):np.searchsorted(copy_rows, end)])
            for row in sorted(special):  # in row order: a copy's original may be a copy itself
                rng = np.random.default_rng([seed, 6, index, row])
                key = int(keys[row])
                if row in copies:
                    original = copies[row]
                    vector = block[original - start] if original >= start else out[original].astype(np.float32)
                    block[row - start] = generator.near_copy(vector[None, :], rng)[0]
                elif key in self.firsts:
                    block[row - start] = generator.near_copy(self.firsts[key][None, :], rng)[0]
                else:
                    self.firsts[key] = block[row - start].copy()
            out[start:end] = block
            if self.progress:
                self.progress(end - start)
        out.flush()
        del out
        partial.replace(path)
