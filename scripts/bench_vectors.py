#!/usr/bin/env python
"""usage: scripts/bench_vectors.py [--n N] [--queries Q] [--dir DIR] [--only NAME,...] [--threads T]

Nearest-neighbour index candidates for "images like this one", measured side
by side in one run on N generated 768-d CLIP-like vectors (sample_vectors:
clusters, a decaying spectrum in a random rotation, planted near-duplicates;
the parameters are printed beside the figures): build time and peak RSS,
file size, resident memory once loaded, p50/p95 latency of one query (one
thread), and recall@10 against exact float cosine on Q stored vectors (each
query's own vector left out). Every candidate runs in a process of its own,
so each one's memory is its own. The vectors are written once to
DIR/vectors-N.f16 (float16, memory-mapped; N x 1,536 bytes) and the exact
answers to DIR/truth-N-Q.npy; later runs reuse them.

Candidates ("+rescore": the index proposes RESCORE candidates, ranked again
by exact cosine on the float16 vectors, memory-mapped from disk):
  exact            brute force over the float16 file (the reference point)
  ours             what the build writes and the site searches (vector_index.py:
                   OPQ + IVF-PQ, HNSW coarse quantizer, +rescore), and the build's
                   near-duplicate pass (near_duplicates.py), timed apart
  faiss-ivfpq      faiss IVF-PQ (nlist ~ 4*sqrt(N), 96-byte codes), +rescore
  faiss-binivf     faiss binary IVF over the sign bits (96 bytes), +rescore
  usearch-b1       usearch HNSW on the sign bits, +rescore
  usearch-i8       usearch HNSW on int8 vectors (768 bytes each)
  sqlitevec-bit    sqlite-vec bit[768] brute force, +rescore
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from datasette_laion.sample_vectors import Generator, Shape  # noqa: E402

K = 10
RESCORE = 200


def NLIST(n):  # noqa: N802 (a constant's rule): inverted lists, ~sqrt(n), at most 4,096
    return int(min(4096, max(64, 2 ** round(np.log2(np.sqrt(n))))))  # candidates ranked again by exact cosine
CANDIDATES = ["exact", "ours", "faiss-ivfpq", "faiss-binivf", "usearch-b1", "usearch-i8", "sqlitevec-bit"]


# ------------------------------------------------------------------ the data


def fill_vectors(out, shape):
    """Fill ``out`` (n x dim float16, a map of a file) with the generator's
    n vectors; returns the planted near-duplicate pairs [(copy, original)]."""
    pairs = []
    for start, block, planted in Generator(shape).chunks(len(out)):
        out[start:start + len(block)] = block
        pairs += planted
    out.flush()
    return pairs


def vectors_file(directory, n, shape):
    path = directory / f"vectors-{n}.f16"
    if path.exists() and path.stat().st_size == n * shape.dim * 2:
        return path
    began = time.perf_counter()
    part = path.with_name(path.name + ".part")  # whole or not there: a run stopped midway is not reused
    pairs = fill_vectors(np.memmap(part, dtype=np.float16, mode="w+", shape=(n, shape.dim)), shape)
    os.replace(part, path)
    (directory / f"pairs-{n}.json").write_text(json.dumps(pairs[:10_000]))
    print(f"generated {n:,} vectors in {time.perf_counter() - began:.0f} s: {path}", file=sys.stderr)
    return path


def load(path, n, dim):
    return np.memmap(path, dtype=np.float16, mode="r", shape=(n, dim))


def exact_top(data, queries, query_ids, k=K, chunk=262_144):
    """Exact top-k (ids, scores) by cosine for each query (unit vectors),
    its own id left out; streamed over ``data``."""
    q = queries.astype(np.float32)
    best_ids = np.full((len(q), k), -1, dtype=np.int64)
    best = np.full((len(q), k), -np.inf, dtype=np.float32)
    for start in range(0, len(data), chunk):
        block = np.asarray(data[start:start + chunk], dtype=np.float32)
        scores = q @ block.T
        own = (query_ids >= start) & (query_ids < start + len(block))
        scores[np.nonzero(own)[0], query_ids[own] - start] = -np.inf
        top = np.argpartition(-scores, k, axis=1)[:, :k] if scores.shape[1] > k else np.argsort(-scores, axis=1)
        top_scores = np.take_along_axis(scores, top, axis=1)
        ids = np.concatenate([best_ids, top + start], axis=1)
        both = np.concatenate([best, top_scores], axis=1)
        order = np.argsort(-both, axis=1)[:, :k]
        best_ids, best = np.take_along_axis(ids, order, axis=1), np.take_along_axis(both, order, axis=1)
    return best_ids, best


def truth_file(directory, data, n, q, seed=1):
    path = directory / f"truth-{n}-{q}.npz"
    if path.exists():
        found = np.load(path)
        return found["query_ids"], found["ids"]
    rng = np.random.default_rng(seed)
    query_ids = np.sort(rng.choice(n, size=q, replace=False))
    began = time.perf_counter()
    ids, _ = exact_top(data, np.asarray(data[query_ids]), query_ids)
    np.savez(path, query_ids=query_ids, ids=ids)
    print(f"exact answers for {q} queries in {time.perf_counter() - began:.0f} s", file=sys.stderr)
    return query_ids, ids


# -------------------------------------------------------------- the candidates


def rescore(data, query, candidates, own, k=K):
    candidates = np.array(sorted(c for c in set(int(c) for c in candidates if c >= 0) if c != own), dtype=np.int64)
    if not len(candidates):
        return []
    scores = np.asarray(data[candidates], dtype=np.float32) @ query.astype(np.float32)
    return list(candidates[np.argsort(-scores)[:k]])


def scaled(block):
    """Vectors scaled to a largest component of 1 (cosine unchanged): usearch's
    int8 maps [-1, 1] to [-127, 127], and a unit 768-d vector's parts are ~0.04."""
    block = np.asarray(block, dtype=np.float32)
    return block / np.abs(block).max(axis=1, keepdims=True)


def sign_bits(block):
    return np.packbits(np.asarray(block, dtype=np.float32) > 0, axis=1)


class Exact:
    def build(self, data, directory):
        return None

    def search(self, data, query, own):
        ids, _ = exact_top(data, query[None, :], np.array([own]))
        return list(ids[0])


class FaissIVFPQ:
    def build(self, data, directory):
        import faiss

        n, dim = data.shape
        nlist = NLIST(n)
        quantizer = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)  # assigns 12M vectors in minutes
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, 96, 8, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10
        rows = np.sort(np.random.default_rng(0).choice(n, size=min(n, 40 * nlist), replace=False))
        sample = np.asarray(data[rows], dtype=np.float32)
        index.train(sample)
        del sample
        for start in range(0, n, 262_144):
            index.add(np.asarray(data[start:start + 262_144], dtype=np.float32))
        path = directory / f"faiss-ivfpq-{n}.index"
        faiss.write_index(index, str(path))
        return path

    def open(self, path):
        import faiss

        self.index = faiss.read_index(str(path))
        self.index.nprobe = 64

    def search(self, data, query, own):
        _, ids = self.index.search(query[None, :].astype(np.float32), RESCORE)
        return rescore(data, query, ids[0], own)


class FaissBinaryIVF:
    def build(self, data, directory):
        import faiss

        n, dim = data.shape
        nlist = NLIST(n)
        quantizer = faiss.IndexBinaryFlat(dim)
        index = faiss.IndexBinaryIVF(quantizer, dim, nlist)
        sample = data[np.sort(np.random.default_rng(0).choice(n, size=min(n, 40 * nlist), replace=False))]
        index.train(sign_bits(sample))
        for start in range(0, n, 262_144):
            index.add(sign_bits(data[start:start + 262_144]))
        path = directory / f"faiss-binivf-{n}.index"
        faiss.write_index_binary(index, str(path))
        return path

    def open(self, path):
        import faiss

        self.index = faiss.read_index_binary(str(path))
        self.index.nprobe = 64

    def search(self, data, query, own):
        _, ids = self.index.search(sign_bits(query[None, :]), RESCORE)
        return rescore(data, query, ids[0], own)


class USearch:
    def __init__(self, dtype):
        self.dtype = dtype

    def build(self, data, directory):
        from usearch.index import Index

        n, dim = data.shape
        metric = "hamming" if self.dtype == "b1" else "cos"
        index = Index(ndim=dim, metric=metric, dtype=self.dtype, connectivity=16, expansion_add=64)
        for start in range(0, n, 65_536):
            block = data[start:start + 65_536]
            keys = np.arange(start, start + len(block), dtype=np.uint64)
            index.add(keys, sign_bits(block) if self.dtype == "b1" else scaled(block), threads=os.cpu_count() or 1)
        path = directory / f"usearch-{self.dtype}-{n}.usearch"
        index.save(str(path))
        return path

    def open(self, path):
        from usearch.index import Index

        self.index = Index.restore(str(path), view=True)  # memory-mapped
        self.index.expansion_search = 256

    def search(self, data, query, own):
        wanted = RESCORE if self.dtype == "b1" else K + 1
        vector = sign_bits(query[None, :])[0] if self.dtype == "b1" else scaled(query[None, :])[0]
        keys = self.index.search(vector, wanted).keys
        if self.dtype == "b1":
            return rescore(data, query, keys, own)
        return [int(k) for k in keys if int(k) != own][:K]


class SqliteVecBit:
    @staticmethod
    def connect(path):
        """sqlite-vec needs extension loading, which this Python's sqlite3 may
        lack (built without it): APSW's SQLite has it."""
        import apsw
        import sqlite_vec

        conn = apsw.Connection(str(path))
        conn.enable_load_extension(True)
        conn.load_extension(sqlite_vec.loadable_path())
        return conn

    def build(self, data, directory):
        n, dim = data.shape
        path = directory / f"sqlitevec-bit-{n}.db"
        path.unlink(missing_ok=True)
        conn = self.connect(path)
        conn.execute(f"create virtual table v using vec0(embedding bit[{dim}])")
        for start in range(0, n, 65_536):
            bits = sign_bits(data[start:start + 65_536])
            with conn:
                conn.executemany("insert into v(rowid, embedding) values (?, vec_bit(?))",
                                 ((start + i, b.tobytes()) for i, b in enumerate(bits)))
        conn.close()
        return path

    def open(self, path):
        self.conn = self.connect(path)

    def search(self, data, query, own):
        bits = sign_bits(query[None, :])[0].tobytes()
        rows = self.conn.execute("select rowid from v where embedding match vec_bit(?) and k = ?",
                                 (bits, RESCORE)).fetchall()
        return rescore(data, query, [r[0] for r in rows], own)


class Ours:
    """What `datasette laion build --embeddings` writes and the site
    searches (vector_build.build_index, Vectors.nearest), with the build's
    near-duplicate pass (near_duplicates.find) timed on its own."""

    def build(self, data, directory):
        import faiss

        from datasette_laion import near_duplicates, vector_build

        # read as the build reads its vectors file: with pread, never mapped
        with vector_build.RowReader(Path(data.filename), len(data), data.shape[1], offset=0) as reader:
            index, lists, self.description = vector_build.build_index(
                reader, directory / f"ours-{len(data)}.codes", exact_below=0)
            self.index_s = time.perf_counter() - BUILD_STARTED[0]
            began = time.perf_counter()
            count, roots = near_duplicates.find(reader, lists)
        self.extra = {"near_duplicate_s": time.perf_counter() - began, "index": self.description,
                      "near_duplicate_rows": int((count > 0).sum()), "index_s": self.index_s}
        pairs = json.loads((directory / f"pairs-{len(data)}.json").read_text())
        if pairs:
            self.extra["planted_found"] = sum(bool(count[c]) and roots[c] == roots[o] for c, o in pairs) / len(pairs)
        path = directory / f"ours-{len(data)}.index"
        faiss.write_index(index, str(path))
        self.data = data
        return path

    def open(self, path):
        from datasette_laion.vector_index import Vectors, open_index

        index, self.mapped = open_index(path)  # zero-copy, as the site opens it
        self.vectors = Vectors.from_parts(self.data, index)

    def search(self, data, query, own):
        return [rowid - 1 for rowid, _ in self.vectors.nearest(query, K, exclude={own + 1})]


BUILD_STARTED = [0.0]


def candidate(name):
    return {"exact": Exact, "ours": Ours, "faiss-ivfpq": FaissIVFPQ, "faiss-binivf": FaissBinaryIVF,
            "usearch-b1": lambda: USearch("b1"), "usearch-i8": lambda: USearch("i8"),
            "sqlitevec-bit": SqliteVecBit}[name]()


def status_mb(key="VmRSS"):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_one(name, directory, n, dim, q, queries_measured, argv):
    """In a process of its own: build; then open and query in another fresh
    process (so that its memory is the opened index's alone, not what the
    build freed); prints JSON."""
    data = load(directory / f"vectors-{n}.f16", n, dim)
    truth_file(directory, data, n, q)
    index = candidate(name)
    sampler = PeakSampler()
    began = BUILD_STARTED[0] = time.perf_counter()
    with sampler:
        path = index.build(data, directory)
    build_s = time.perf_counter() - began
    build_peak = status_mb("VmHWM")  # ru_maxrss would carry the parent's over exec
    run = subprocess.run([sys.executable, __file__, *argv, "--measure", str(path or "")],
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(run.stderr)
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    size = path.stat().st_size if path is not None else 0
    print(json.dumps({
        "name": name, "build_s": build_s, "build_peak_mb": build_peak, "file_mb": size / 2**20,
        "build_peak_anon_mb": sampler.anon, "build_peak_file_mb": sampler.file,
        **measured, **getattr(index, "extra", {}),
    }))


def measure_one(name, directory, n, dim, q, queries_measured, path):
    """Open the built index in this fresh process, the vectors' pages
    dropped first (as after a restart), and query it; prints JSON."""
    data = load(directory / f"vectors-{n}.f16", n, dim)
    query_ids, truth = truth_file(directory, data, n, q)
    dropped = drop_file_pages(data)
    index = candidate(name)
    index.data = data
    before, before_file = status_mb("RssAnon"), status_mb("RssFile")
    if path:
        index.open(Path(path))
    resident = status_mb("RssAnon") - before
    latencies, hits = [], 0
    for i, own in enumerate(query_ids[:queries_measured]):
        query = np.asarray(data[own], dtype=np.float32)
        began = time.perf_counter()
        found = index.search(data, query, int(own))
        latencies.append((time.perf_counter() - began) * 1000)
        hits += len(set(int(f) for f in found[:K]) & set(int(t) for t in truth[i]))
    print(json.dumps({
        "resident_mb": resident, "file_pages_after_queries_mb": status_mb("RssFile") - before_file,
        "cold": dropped, "p50_ms": float(np.percentile(latencies, 50)),
        "p95_ms": float(np.percentile(latencies, 95)), "recall": hits / (K * len(latencies)),
        "queries": len(latencies),
    }))


class PeakSampler:
    """The peak anonymous and file-backed resident memory (RssAnon, RssFile)
    of this process while a block runs, sampled every 0.2 s: memory-mapped
    vectors read during a build are file pages the kernel can drop, not
    memory the build needs."""

    def __enter__(self):
        import threading

        self.anon = self.file = 0.0
        self.stop = threading.Event()

        def sample():
            while not self.stop.wait(0.2):
                self.anon = max(self.anon, status_mb("RssAnon"))
                self.file = max(self.file, status_mb("RssFile"))

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def drop_file_pages(data):
    """Ask the kernel to drop the vectors file's cached pages (as after a
    restart): True when it could."""
    try:
        fd = os.open(data.filename, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return True
    except (OSError, AttributeError):
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000, help="queries for recall@10 (and latency)")
    parser.add_argument("--exact-queries", type=int, default=20, help="queries timed for the brute-force reference")
    parser.add_argument("--scan-queries", type=int, default=100,
                        help="queries for sqlitevec-bit, a scan too (~3 s each at 12M)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "laion-vectors")
    parser.add_argument("--only", default=",".join(CANDIDATES))
    parser.add_argument("--clusters", type=int, default=4096)
    parser.add_argument("--per-subcluster", type=int, default=30,
                        help="vectors per sub-cluster on average (0: none; see sample_vectors)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = Shape(clusters=args.clusters, per_subcluster=args.per_subcluster)
    base_dir = args.dir
    args.dir = base_dir / f"c{args.clusters}-s{args.per_subcluster}"  # one folder per shape of data
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.one:
        measured = {"exact": args.exact_queries, "sqlitevec-bit": args.scan_queries}.get(args.one, args.queries)
        if args.measure is not None:
            measure_one(args.one, args.dir, args.n, shape.dim, args.queries, measured, args.measure)
        else:
            run_one(args.one, args.dir, args.n, shape.dim, args.queries, measured, sys.argv[1:])
        return
    path = vectors_file(args.dir, args.n, shape)
    truth_file(args.dir, load(path, args.n, shape.dim), args.n, args.queries)
    print(f"Vector index benchmark (scripts/bench_vectors.py), {args.n:,} vectors: {shape.describe()}")
    print(f"{args.queries} queries (stored vectors, their own left out; exact: the first {args.exact_queries}, "
          f"sqlitevec-bit: the first {args.scan_queries}), recall@{K} against exact float cosine; "
          f"+rescore: {RESCORE} candidates ranked again on the float16 vectors (memory-mapped, {path.stat().st_size / 2**30:.1f} GiB)")
    print("build peak: the whole RSS (VmHWM, memory-mapped vectors included) and its anonymous part (what the "
          "build needs); resident: anonymous memory the opened index takes; latency: one thread, the vectors' "
          "file pages dropped before the first query")
    print(f"{'candidate':16}{'build s':>9}{'build peak MB':>15}{'anon MB':>10}{'file MB':>9}{'resident MB':>13}"
          f"{'p50 ms':>8}{'p95 ms':>8}{'recall@10':>11}")
    for name in args.only.split(","):
        run = subprocess.run([sys.executable, __file__, "--n", str(args.n), "--queries", str(args.queries),
                              "--exact-queries", str(args.exact_queries), "--scan-queries", str(args.scan_queries),
                              "--dir", str(base_dir),
                              "--clusters", str(args.clusters), "--per-subcluster", str(args.per_subcluster),
                              "--one", name], capture_output=True, text=True)
        if run.returncode != 0:
            print(f"{name:16}failed: {run.stderr.strip().splitlines()[-1] if run.stderr.strip() else run.returncode}")
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"{name:16}{r['build_s']:9.0f}{r['build_peak_mb']:15.0f}{r['build_peak_anon_mb']:10.0f}"
              f"{r['file_mb']:9.0f}{r['resident_mb']:13.0f}{r['p50_ms']:8.1f}{r['p95_ms']:8.1f}{r['recall']:11.3f}",
              flush=True)
        if "near_duplicate_s" in r:
            found = f", planted pairs found {r['planted_found']:.1%}" if "planted_found" in r else ""
            print(f"{'':16}{r['index']}: index built in {r['index_s']:.0f} s; near-duplicate pass "
                  f"{r['near_duplicate_s']:.0f} s, {r['near_duplicate_rows']:,} rows with one{found}", flush=True)
        with open(args.dir / f"results-{args.n}.jsonl", "a") as log:
            log.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
