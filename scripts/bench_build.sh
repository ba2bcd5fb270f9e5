#!/usr/bin/env bash
# usage: scripts/bench_build.sh [ROWS] [WORKDIR]
# Build benchmark, side by side in one run: the original 2022 recipe
# (scripts/original_recipe.sh) and `datasette laion build`, on the same
# generated parquet files (ROWS rows in 7 files; default 12,096,835, the size
# of LAION-Aesthetics 6+). Prints wall time, peak RSS and file size of each
# with ratios. WORKDIR (default /tmp/laion-bench) needs ~3x the database size
# free; nothing is written inside the repository.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
ROWS=${1:-12096835}
WORK=${2:-/tmp/laion-bench}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY="$REPO/.venv/bin/python"
[[ -x "$PY" ]] || { echo "error: $PY not found; run scripts/test.sh or scripts/demo.sh first to set up .venv" >&2; exit 1; }
mkdir -p "$WORK"

# 1. Sample data, once per ROWS.
if [[ "$(cat "$WORK/parquet/ROWS" 2>/dev/null || true)" != "$ROWS" ]]; then
    rm -rf "$WORK/parquet"
    echo "== generating $ROWS rows in 7 files under $WORK/parquet" >&2
    "$PY" -m datasette_laion sample "$WORK/parquet" --rows "$ROWS" --files 7 --seed 0 --silent >/dev/null
    echo "$ROWS" > "$WORK/parquet/ROWS"
fi

# 2. The original recipe (its own venvs; see the script's header).
rm -f "$WORK/original.db" "$WORK/original.json"
echo "== original recipe" >&2
RESULT_JSON="$WORK/original.json" bash "$REPO/scripts/original_recipe.sh" \
    "$WORK/parquet" "$WORK/original.db" "$REPO/datasette_laion/data" > "$WORK/original.log" 2>&1 \
    || { tail -20 "$WORK/original.log" >&2; exit 1; }

# 3. Our build, measured from inside: wall time, and peak RSS of the whole
#    process tree (the build and its worker processes, summed, sampled every
#    0.1 s), with each one's own peak beside it.
rm -f "$WORK/laion-aesthetic-6pls.db" "$WORK/inspect.json"
echo "== datasette laion build" >&2
BENCH_SCRIPTS="$REPO/scripts" "$PY" - "$WORK" <<'PY'
import json, os, resource, sys, threading, time
from pathlib import Path
from datasette_laion import build
sys.path.insert(0, os.environ["BENCH_SCRIPTS"])
from benchlib import tree_rss_kb

peak = [0]
done = threading.Event()
def sample():
    while not done.wait(0.1):
        peak[0] = max(peak[0], tree_rss_kb(os.getpid()))
threading.Thread(target=sample, daemon=True).start()
work = Path(sys.argv[1])
start = time.perf_counter()
result = build.build(work / "laion-aesthetic-6pls.db", [work / "parquet"], progress=False)
wall = time.perf_counter() - start
done.set()
main_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
(work / "ours.json").write_text(json.dumps({
    "wall_s": wall, "peak_rss_mb": peak[0] / 1024, "main_rss_mb": main_kb / 1024,
    "worker_rss_mb": child_kb / 1024, "size_bytes": result.size, "rows": result.rows, "source_rows": result.source_rows,
    "steps": result.timings,
}))
PY

# 4. Side by side.
BENCH_SCRIPTS="$REPO/scripts" "$PY" - "$WORK" <<'PY'
import json, sqlite3, sys
from pathlib import Path
work = Path(sys.argv[1])
orig = json.loads((work / "original.json").read_text())
ours = json.loads((work / "ours.json").read_text())
conn = sqlite3.connect(work / "laion-aesthetic-6pls.db")
free = conn.execute("pragma freelist_count").fetchone()[0]
indexes = sum(r[0] for r in conn.execute(
    "select sum(pgsize) from dbstat where name in ('images_aesthetic','images_punsafe','images_pwatermark','images_domain_id')"))
url_index = sum(r[0] for r in conn.execute("select sum(pgsize) from dbstat where name = 'images_url_hash'"))
conn.close()
rows = [
    ("parquet rows", f"{orig['parquet_rows']:,}", f"{ours['source_rows']:,}", ""),
    ("rows in images", f"{orig['rows']:,}", f"{ours['rows']:,}", ""),
    ("rows added (images - parquet)", f"{orig['rows'] - orig['parquet_rows']:,}", f"{ours['rows'] - ours['source_rows']:,}", ""),
    ("wall time (s)", f"{orig['wall_s']:.1f}", f"{ours['wall_s']:.1f}", f"{ours['wall_s'] / orig['wall_s']:.2f}x"),
    ("peak RSS (MB)", f"{orig['peak_rss_mb']:.0f}", f"{ours['peak_rss_mb']:.0f} (main {ours['main_rss_mb']:.0f}, worker {ours['worker_rss_mb']:.0f})",
     f"{ours['peak_rss_mb'] / orig['peak_rss_mb']:.2f}x"),
    ("file size (MB)", f"{orig['size_bytes'] / 1e6:,.0f}", f"{ours['size_bytes'] / 1e6:,.0f}", f"{ours['size_bytes'] / orig['size_bytes']:.2f}x"),
    ("size after VACUUM (MB)", f"{orig['size_after_vacuum_bytes'] / 1e6:,.0f}", f"{ours['size_bytes'] / 1e6:,.0f} ({free} free pages)",
     f"{ours['size_bytes'] / orig['size_after_vacuum_bytes']:.2f}x"),
    ("  of which the 4 indexes", "none", f"{indexes / 1e6:,.0f}", ""),
    ("  and the url_hash index", "none", f"{url_index / 1e6:,.0f}", ""),
]
print(f"Build benchmark, {ours['rows']:,} rows (scripts/bench_build.sh)")
print(f"{'':26}{'original recipe':>18}{'datasette laion build':>34}{'ratio':>8}")
for name, a, b, r in rows:
    print(f"{name:26}{a:>18}{b:>34}{r:>8}")
print("our steps: " + ", ".join(f"{k} {v:.1f}s" for k, v in ours["steps"].items() if k != "total"))
print("original steps: " + ", ".join(f"{k} {v:.1f}s" for k, v in orig["steps"].items()))
PY
