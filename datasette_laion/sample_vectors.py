"""Generated image embeddings with the structure real CLIP embeddings have,
for the sample (`datasette laion sample --embeddings`) and the vector
benchmark (scripts/bench_vectors.py).

Isotropic noise is the easy case for a nearest-neighbour index and says
nothing about real data. These vectors have:

* clusters: every vector belongs to one of ``clusters`` centres, picked with
  Zipf-like popularity (a few big topics, a long tail);
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


@dataclass(frozen=True)
class Shape:
    """The generator's parameters, stated beside every figure measured on its vectors."""

    dim: int = DIM
    clusters: int = 4096
    decay: float = 0.6  # spectrum: std of the i-th direction is (i + 1) ** -decay
    zipf: float = 1.1  # cluster popularity ~ rank ** -zipf
    spread: float = SPREAD
    duplicates: float = 0.02  # share of vectors that are a near-copy of an earlier one
    seed: int = 0

    def describe(self):
        return (f"{self.dim}-d, {self.clusters:,} clusters (popularity rank^-{self.zipf}), spectrum (i+1)^-{self.decay} "
                f"in a random rotation, within-cluster spread {self.spread}, {self.duplicates:.0%} planted "
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

    def vectors(self, clusters, rng):
        """Unit vectors (float32) around the given cluster numbers."""
        noise = rng.standard_normal((len(clusters), self.shape.dim)).astype(np.float32) * self.scale
        raw = self.centres[clusters] + self.shape.spread * noise
        out = raw @ self.rotation
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

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
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            clusters = rng.choice(self.shape.clusters, size=size, p=self.popularity)
            block = self.vectors(clusters, rng)
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
