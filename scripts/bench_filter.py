#!/usr/bin/env python3
"""usage: .venv/bin/python scripts/bench_filter.py [--rows N] [--base-rows N] [--work DIR] [--min-aesthetic X]

Row filter benchmark, side by side in one run: `datasette laion build` of a
generated 6+ set (BASE_ROWS, default 12,096,835 rows in 7 files: today's
build) against a build of a generated 4.75+ set of ROWS rows (default
120,000,000 in 70 files; a tenth score 6 or more) with `--min-aesthetic 6`.
Prints wall time, peak RSS of the whole process tree (the build and its
workers, summed, sampled every 0.1 s), rows and file size, with the targets:
at most 3x the time of today's build and 1 GB of memory.

The parquet files are generated under WORK (default /tmp/laion-bench-filter),
once per size, never in the repository. Before generating, the free space is
checked against an estimate (~135 bytes of parquet a row, plus the database
and the build's spill files); the script stops if it does not fit. Timings on
a shared machine are noisy: say so when quoting them.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from benchlib import tree_rss_kb  # noqa: E402

PARQUET_BYTES_PER_ROW = 135  # measured: 1M generated rows of the v2 schema, 4.75+ or 6+
DB_BYTES_PER_ROW = 380  # a built database, indexes included (4,581 MB at 12.1M rows)


def generate(directory, rows, files, aesthetic_from):
    marker = directory / "ROWS"
    wanted = f"{rows} {files} {aesthetic_from}"
    if marker.exists() and marker.read_text() == wanted:
        return
    shutil.rmtree(directory, ignore_errors=True)
    print(f"== generating {rows:,} rows (aesthetic from {aesthetic_from}) in {files} files under {directory}",
          file=sys.stderr)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "datasette_laion", "sample", str(directory), "--rows", str(rows),
                    "--files", str(files), "--aesthetic-from", str(aesthetic_from), "--silent"],
                   check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    print(f"   {time.perf_counter() - started:.0f}s", file=sys.stderr)
    marker.write_text(wanted)


def measure_build(out, parquet, *options):
    """`datasette laion build` in a process of its own: wall time, peak RSS of
    its process tree, and the summary it prints."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for old in (out, out.parent / "inspect.json"):
        old.unlink(missing_ok=True)
    print(f"== datasette laion build {out.name} {parquet.name}/ {' '.join(options)}", file=sys.stderr)
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "datasette_laion", "build", str(out), str(parquet), *options],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               env=dict(os.environ, COLUMNS="100"))
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.wait(0.1):
            peak[0] = max(peak[0], tree_rss_kb(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stderr = process.communicate()[1]
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode:
        sys.exit(f"build failed ({process.returncode}):\n{stderr[-3000:]}")
    summary = [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith(("Built ", "  "))]
    return {"wall_s": wall, "peak_rss_mb": peak[0] / 1024, "size_bytes": out.stat().st_size, "summary": summary}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], usage=__doc__.split("\n")[0][7:])
    parser.add_argument("--rows", type=int, default=120_000_000)
    parser.add_argument("--base-rows", type=int, default=12_096_835)
    parser.add_argument("--work", type=Path, default=Path("/tmp/laion-bench-filter"))
    parser.add_argument("--min-aesthetic", type=float, default=6.0)
    parser.add_argument("--aesthetic-from", type=float, default=4.75)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    big, base = args.work / "aesthetics_4.75", args.work / "aesthetics_6plus"
    need = {}
    for directory, rows in ((big, args.rows), (base, args.base_rows)):
        if not ((directory / "ROWS").exists() and (directory / "ROWS").read_text().split()[0] == str(rows)):
            need[directory] = rows * PARQUET_BYTES_PER_ROW
    # the two databases (one at a time, each with its spill files: twice its size)
    need_db = 2 * DB_BYTES_PER_ROW * max(args.base_rows, args.rows // 10)
    free = shutil.disk_usage(args.work).free
    if sum(need.values()) + need_db > free * 0.9:
        sys.exit(f"not enough room in {args.work}: about {(sum(need.values()) + need_db) / 1e9:,.1f} GB needed, "
                 f"{free / 1e9:,.1f} GB free")
    generate(big, args.rows, max(1, round(args.rows / 1_714_000)), args.aesthetic_from)
    generate(base, args.base_rows, 7, 6.0)
    ours = measure_build(args.work / "filtered" / "laion-aesthetic-6pls.db", big,
                         "--min-aesthetic", f"{args.min_aesthetic:g}")
    today = measure_build(args.work / "today" / "laion-aesthetic-6pls.db", base)
    (args.work / "result.json").write_text(json.dumps({"today": today, "filtered": ours}, indent=2))
    rows = [
        ("parquet rows", f"{args.base_rows:,}", f"{args.rows:,}", ""),
        ("wall time (s)", f"{today['wall_s']:.1f}", f"{ours['wall_s']:.1f}",
         f"{ours['wall_s'] / today['wall_s']:.2f}x (target <= 3x)"),
        ("peak RSS, process tree (MB)", f"{today['peak_rss_mb']:.0f}", f"{ours['peak_rss_mb']:.0f}",
         "target <= 1024"),
        ("file size (MB)", f"{today['size_bytes'] / 1e6:,.0f}", f"{ours['size_bytes'] / 1e6:,.0f}", ""),
    ]
    print(f"Row filter benchmark (scripts/bench_filter.py): --min-aesthetic {args.min_aesthetic:g} "
          f"on {args.rows:,} rows vs today's build of {args.base_rows:,}")
    print(f"{'':30}{'today (6+ set)':>18}{'filtered 4.75+ set':>22}   ratio")
    for name, a, b, r in rows:
        print(f"{name:30}{a:>18}{b:>22}   {r}")
    for label, result in (("today", today), ("filtered", ours)):
        print(f"{label}:")
        for line in result["summary"]:
            if line.startswith(("  images", "  filter", "  steps", "Built")):
                print("  " + line.strip())


if __name__ == "__main__":
    main()
