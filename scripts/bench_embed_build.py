#!/usr/bin/env python
"""usage: scripts/bench_embed_build.py WORKDIR [INPUTS...] [--embeddings PATH] [--generate N] [--no-baseline]

What `datasette laion build --embeddings` costs, step by step, side by side
in one run with the baseline it names: the same build of the same INPUTS
without --embeddings. For the README's 12M figures, --generate 12096835:
the inputs are made in WORKDIR first (kept there for later runs), one
parquet file of N generated rows (`datasette laion sample`'s, WORKDIR/src)
and one .npy of as many generated 768-d float16 vectors aligned with it
(WORKDIR/emb/img_emb_0000.npy: scripts/bench_vectors.py's vectors,
clusters and planted near-duplicates; their parameters are printed). Or
give INPUTS and --embeddings PATH of your own.

Each build runs as `python -m datasette_laion build WORKDIR/NAME.db INPUTS`;
its process tree's resident memory is sampled every 0.1 s, anonymous
(RssAnon, the build's own) and file-backed (RssFile, mapped files' pages)
apart and summed, and each sample is put to the step whose progress bar the
build last drew. Prints each step's seconds and peak memory, and the
targets of the vectors steps (index and near-duplicates at most 15 minutes
each, peak RSS at most 2 GB). The database built with embeddings is left in
WORKDIR (laion-aesthetic-6pls.db and its .vectors) for
scripts/bench_similar.py.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench_similar import memory_mb  # noqa: E402 (scripts/ is on sys.path)

VECTOR_STEPS = ("embeddings", "vector index", "near-duplicates")
TARGET_S, TARGET_MB = 15 * 60, 2048
BAR = re.compile(r"^([a-z][a-z -]+?)\s*:\s+\d+%")


def run_build(out, inputs, extra):
    """{step: [seconds, peak anon MB, peak file MB, peak RSS MB]}, total seconds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "datasette_laion", "build", str(out), *map(str, inputs), *extra]
    # unbuffered: a bar's first line (no newline yet) reaches us when drawn
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=REPO,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    steps, current, began = {}, ["start"], time.perf_counter()
    seen = {"start": began}

    def read_bars():
        buffer = b""
        while chunk := process.stderr.read1(4096):
            buffer += chunk
            *lines, buffer = re.split(rb"[\r\n]", buffer)
            for line in lines + [buffer]:  # a bar's line is one write: the last may have no end yet
                match = BAR.match(line.decode(errors="replace").strip())
                if match and match.group(1) != current[0]:
                    current[0] = match.group(1)
                    seen.setdefault(current[0], time.perf_counter())

    reader = threading.Thread(target=read_bars, daemon=True)
    reader.start()
    while process.poll() is None:
        anon, file = memory_mb(process.pid)
        peak = steps.setdefault(current[0], [0.0, 0.0, 0.0, 0.0])
        peak[1], peak[2], peak[3] = max(peak[1], anon), max(peak[2], file), max(peak[3], anon + file)
        time.sleep(0.1)
    total = time.perf_counter() - began
    reader.join(timeout=10)
    if process.returncode != 0:
        raise SystemExit(f"build failed ({process.returncode}): {' '.join(command)}")
    order = sorted(seen, key=seen.get) + ["end"]
    seen["end"] = began + total
    for name, following in zip(order, order[1:]):
        steps.setdefault(name, [0.0, 0.0, 0.0, 0.0])[0] = seen[following] - seen[name]
    return {name: steps[name] for name in order[:-1] if name in steps}, total


def generate(workdir, rows):
    """([parquet directory], npy path) of ``rows`` generated rows and their
    vectors in ``workdir``, made unless a run before made them."""
    from bench_vectors import Shape, fill_vectors

    from datasette_laion import sample

    source, path = workdir / "src", workdir / "emb" / "img_emb_0000.npy"
    shape = Shape(clusters=4096, per_subcluster=30)  # as scripts/bench_vectors.py's 12M figures
    print(f"generated inputs: {rows:,} rows ({source}) and their vectors ({path}): {shape.describe()}", flush=True)
    made = workdir / "src.rows"  # what a run before made
    if not made.exists() or made.read_text() != str(rows):
        shutil.rmtree(source, ignore_errors=True)
        sample.generate(source, rows=rows, seed=0)
        made.write_text(str(rows))
    if not path.exists() or np.load(path, mmap_mode="r").shape != (rows, shape.dim):
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")  # whole or not there: a run stopped midway is not reused
        fill_vectors(np.lib.format.open_memmap(part, mode="w+", dtype=np.float16, shape=(rows, shape.dim)), shape)
        os.replace(part, path)
    return [source], path


def main():
    parser = argparse.ArgumentParser(usage=__doc__.splitlines()[0][len("usage: "):])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("inputs", type=Path, nargs="*")
    parser.add_argument("--embeddings", type=Path)
    parser.add_argument("--generate", type=int, metavar="N", help="make N rows and their vectors in WORKDIR first")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    given = bool(args.inputs or args.embeddings)
    if (args.generate is None and not (args.inputs and args.embeddings)) or (args.generate is not None and given):
        parser.error("give INPUTS and --embeddings PATH, or --generate N (not both)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.generate is not None:
        args.inputs, args.embeddings = generate(args.workdir, args.generate)
    runs = {}
    if not args.no_baseline:
        runs["without --embeddings (baseline)"] = run_build(args.workdir / "baseline" / "laion-aesthetic-6pls.db",
                                                            args.inputs, [])
        shutil.rmtree(args.workdir / "baseline")  # room for the vectors file
    runs["with --embeddings"] = run_build(args.workdir / "laion-aesthetic-6pls.db", args.inputs,
                                          ["--embeddings", str(args.embeddings)])
    print(f"datasette laion build, step by step (scripts/bench_embed_build.py): {', '.join(map(str, args.inputs))}"
          f" + {args.embeddings}")
    print("memory: the build's process tree sampled every 0.1 s; anon = RssAnon, file = RssFile (mapped pages)")
    for label, (steps, total) in runs.items():
        print(f"\n{label}: {total:,.0f} s, peak RSS {max(s[3] for s in steps.values()):,.0f} MB")
        print(f"  {'step':18}{'s':>8}{'anon MB':>10}{'file MB':>10}{'RSS MB':>10}")
        for name, (seconds, anon, file, rss) in steps.items():
            print(f"  {name:18}{seconds:>8.0f}{anon:>10,.0f}{file:>10,.0f}{rss:>10,.0f}")
    steps, total = runs["with --embeddings"]
    if "without --embeddings (baseline)" in runs:
        base = runs["without --embeddings (baseline)"][1]
        print(f"\nembeddings add {total - base:,.0f} s to the build ({total / base:.2f}x)")
    for name in VECTOR_STEPS[1:]:
        if name in steps:
            print(f"{name}: {steps[name][0]:,.0f} s (target <= {TARGET_S} s)")
    vector_peak = max((steps[n][3] for n in VECTOR_STEPS if n in steps), default=0)
    print(f"peak RSS during the vectors steps: {vector_peak:,.0f} MB (target <= {TARGET_MB} MB)")


if __name__ == "__main__":
    main()
