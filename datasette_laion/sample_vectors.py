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

For the sample, the cluster of a row is its caption's topic (the topic that
also picks its generated picture, sample_images.topic), so "similar" looks
right in the demo. Deterministic for a seed. Generated in chunks: memory is
that of one chunk, whatever ``n``.
"""
from dataclasses import dataclass

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
        noise = rng.standard_normal((len(clusters), self.shape.dim)).astype(np.float32) * self.scale
        raw = self.centres[clusters] + self.shape.spread * noise
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

    def for_topics(self, topics, keys):
        """float16 unit vectors for sample rows: ``topics`` (sample_images.topic
        of each caption) pick the cluster, ``keys`` (bytes, e.g. a hash of the
        URL) vary each row deterministically; rows with the same key (the same
        image) get near-duplicate vectors."""
        names = sorted(set(topics))
        cluster_of = {name: i % self.shape.clusters for i, name in enumerate(names)}
        out = np.empty((len(topics), self.shape.dim), dtype=np.float32)
        first_of = {}
        for i, (topic_name, key) in enumerate(zip(topics, keys)):
            rng = np.random.default_rng(int.from_bytes(key[:8], "little"))
            if key in first_of:
                out[i] = self.near_copy(out[first_of[key]][None, :], rng)[0]
                continue
            first_of[key] = i
            out[i] = self.vectors(np.array([cluster_of[topic_name]]), rng)[0]
        return out.astype(np.float16)
