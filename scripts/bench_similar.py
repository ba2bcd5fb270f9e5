#!/usr/bin/env python
"""usage: scripts/bench_similar.py DB [--queries Q] [--exact-queries E] [--inspect-file F] [--workers W]

"Images like this one" through the site, on a database built by
`datasette laion build --embeddings` (its NAME.vectors beside it; 12,096,835
rows for the figures in README), side by side in one run with the baseline
it names: an exact scan of the same float16 vectors, in process.

For Q random rowids (seed 1) it asks GET /<db>/images/<rowid>/similar.json
?_size=10 of `datasette laion serve` started for the run (W workers), and
prints p50/p95 latency over HTTP twice: first with the vectors file's pages
dropped from the page cache before the server starts (as after a deploy or
a restart), then again with them warm; recall@10 of the answers against the
exact top 10 by float cosine (each query's own row left out); and the
server's memory once done: anonymous (its own) and file-backed (the index
and the vectors' pages, which the kernel shares between workers and may
drop). The exact scan is timed on E of the queries; its answers for all Q
are kept in /tmp/laion-similar-truth-BUILDID-Q.npy for later runs.
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchlib import free_port, pct  # noqa: E402 (scripts/ is on sys.path)

from datasette_laion import vector_index  # noqa: E402
from datasette_laion.build import database_name, vectors_path  # noqa: E402

K = 10
CHUNK = 262_144


def exact(rows, query_rowids):
    """(rowids of the exact top K of each query, seconds a query): float
    cosine over every row, each query's own row left out."""
    queries = np.asarray(rows[query_rowids - 1], dtype=np.float32)
    best = np.full((len(queries), K), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), K), dtype=np.int64)
    began = time.perf_counter()
    for start in range(0, len(rows), CHUNK):
        scores = queries @ np.asarray(rows[start:start + CHUNK], dtype=np.float32).T
        own = (query_rowids - 1 >= start) & (query_rowids - 1 < start + scores.shape[1])
        scores[np.nonzero(own)[0], query_rowids[own] - 1 - start] = -np.inf
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        both = np.concatenate([best, np.take_along_axis(scores, top, axis=1)], axis=1)
        ids = np.concatenate([best_ids, top + start + 1], axis=1)
        order = np.argsort(-both, axis=1)[:, :K]
        best, best_ids = np.take_along_axis(both, order, axis=1), np.take_along_axis(ids, order, axis=1)
    return best_ids, (time.perf_counter() - began) / len(queries)


def drop_pages(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def memory_mb(pid):
    """(anonymous, file-backed) resident MB of a process and its children."""
    anon = file = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("RssAnon:"):
                    anon += int(line.split()[1])
                elif line.startswith("RssFile:"):
                    file += int(line.split()[1])
            for task in os.listdir(f"/proc/{p}/task"):
                stack.extend(int(c) for c in open(f"/proc/{p}/task/{task}/children").read().split())
        except (FileNotFoundError, ProcessLookupError):
            pass
    return anon / 1024, file / 1024


def start_server(db, inspect_file, workers, port):
    command = [str(Path(sys.executable).parent / "datasette"), "laion", "serve", str(db), "--port", str(port),
               "--workers", str(workers)] + (["--inspect-file", str(inspect_file)] if inspect_file else [])
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            httpx.get(base + "/-/versions.json", timeout=2)
            return process, base
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start: {' '.join(command)}") from None
            time.sleep(0.3)


def ask(client, base, name, rowids):
    times, found = [], []
    for rowid in rowids.tolist():
        began = time.perf_counter()
        response = client.get(f"{base}/{name}/images/{rowid}/similar.json?_size={K}&_shape=objects", timeout=60)
        times.append((time.perf_counter() - began) * 1000)
        response.raise_for_status()
        found.append([row["rowid"] for row in response.json()["rows"]])
    return times, found


def main():
    parser = argparse.ArgumentParser(usage=__doc__.splitlines()[0][len("usage: "):])
    parser.add_argument("db", type=Path)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--exact-queries", type=int, default=20)
    parser.add_argument("--inspect-file", type=Path)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    path = vectors_path(args.db)
    header = vector_index.read_header(path)
    rows = vector_index.matrix(path, header, random=False)  # scanned
    query_rowids = np.sort(np.random.default_rng(1).choice(header.rows, size=args.queries, replace=False)) + 1
    truth_path = Path(f"/tmp/laion-similar-truth-{header.build_id}-{args.queries}.npy")
    _, exact_s = exact(rows, query_rowids[:args.exact_queries])
    if truth_path.exists():
        truth = np.load(truth_path)
    else:
        truth, _ = exact(rows, query_rowids)
        np.save(truth_path, truth)
    del rows

    drop_pages(path)
    drop_pages(args.db)
    name = database_name(args.db)
    process, base = start_server(args.db, args.inspect_file, args.workers, free_port())
    try:
        with httpx.Client() as client:
            cold_times, found = ask(client, base, name, query_rowids)
            warm_times, _ = ask(client, base, name, query_rowids)
        anon, file = memory_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    recall = np.mean([len(set(f[:K]) & set(t.tolist())) / K for f, t in zip(found, truth)])
    size_mb = path.stat().st_size / 2**20
    print(f"Similar images through the site (scripts/bench_similar.py): {args.db.name}, {header.rows:,} rows, "
          f"{header.dim}-d; {path.name} {size_mb:,.0f} MB ({header.index})")
    print(f"{args.queries} random rowids (seed 1), GET /{name}/images/<rowid>/similar.json?_size={K}, "
          f"{args.workers} worker(s), loopback; recall@{K} against exact float cosine")
    print(f"{'':34}{'p50 ms':>10}{'p95 ms':>10}{'recall@10':>11}")
    print(f"{'exact scan, in process (baseline)':34}{exact_s * 1000:>10.0f}{'':>10}{1.0:>11.3f}"
          f"   ({args.exact_queries} queries)")
    print(f"{'site JSON, pages dropped first':34}{pct(cold_times, 50):>10.1f}{pct(cold_times, 95):>10.1f}"
          f"{recall:>11.3f}")
    print(f"{'site JSON, warm':34}{pct(warm_times, 50):>10.1f}{pct(warm_times, 95):>10.1f}")
    print(f"p50 ratio, exact scan / site (warm): {exact_s * 1000 / pct(warm_times, 50):,.0f}x")
    print(f"server memory after the queries: {anon:,.0f} MB anonymous, {file:,.0f} MB file-backed "
          "(the index's and vectors' pages: shared, droppable)")


if __name__ == "__main__":
    main()
