#!/usr/bin/env python
"""usage: scripts/tune_vectors.py [--n N] [--queries Q] [--dir DIR]

The query-time settings of the build's index (vector_index.py: nprobe, the
inverted lists visited, and RESCORE, the candidates ranked again by exact
cosine), side by side in one run: recall@10 and p50/p95 latency (one thread)
for each pair, on the index and vectors that scripts/bench_vectors.py wrote
for candidate 'ours' (DIR/ours-N.index, DIR/vectors-N.f16) and its exact
answers (DIR/truth-N-1000.npz). Run bench_vectors.py --only exact,ours first.
The first setting's latency includes the cold reads of the vectors' pages.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from datasette_laion.vector_index import NPROBE, RESCORE, open_index  # noqa: E402

K = 10
SETTINGS = [(nprobe, rescore) for nprobe in (64, 128) for rescore in (200, 400, 800)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--n", type=int, default=12_096_835)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "laion-vectors" / "c4096-s30")
    args = parser.parse_args()
    import faiss

    data = np.memmap(args.dir / f"vectors-{args.n}.f16", dtype=np.float16, mode="r").reshape(args.n, -1)
    truth = np.load(args.dir / f"truth-{args.n}-1000.npz")
    query_ids, exact = truth["query_ids"][: args.queries], truth["ids"]
    index, mapped = open_index(args.dir / f"ours-{args.n}.index")  # mapped: kept open while searching
    ivf = faiss.extract_index_ivf(index)
    faiss.omp_set_num_threads(1)
    print(f"Query-time settings of the build's index (scripts/tune_vectors.py), {args.n:,} vectors, "
          f"{len(query_ids)} queries; the build's: nprobe {NPROBE}, rescore {RESCORE}")
    print(f"{'nprobe':>6} {'rescore':>7}  {'recall@10':>9}  {'p50 ms':>7}  {'p95 ms':>7}")
    for nprobe, rescore in SETTINGS:
        ivf.nprobe = nprobe
        hits, times = 0, []
        for i, own in enumerate(query_ids):
            query = np.asarray(data[own], dtype=np.float32)[None]
            began = time.perf_counter()
            _, ids = index.search(query, rescore + 1)
            candidates = np.unique(ids[0][ids[0] >= 0])
            candidates = candidates[candidates != own]
            scores = np.asarray(data[candidates], dtype=np.float32) @ query[0]
            top = candidates[np.argsort(-scores)[:K]]
            times.append((time.perf_counter() - began) * 1000)
            hits += len(set(top.tolist()) & set(exact[i].tolist()))
        print(f"{nprobe:>6} {rescore:>7}  {hits / (K * len(query_ids)):>9.3f}  {np.median(times):>7.1f}  "
              f"{np.percentile(times, 95):>7.1f}", flush=True)
    del mapped


if __name__ == "__main__":
    main()
