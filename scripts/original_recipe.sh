#!/usr/bin/env bash
# Baseline benchmark: run the ORIGINAL 2022 LAION-Aesthetics -> SQLite recipe
# (Simon Willison, "Exploring the training data behind Stable Diffusion") and
# measure it.
#
#   scripts/original_recipe.sh PARQUET_DIR OUT.db [NAMES_DIR]
#
# PARQUET_DIR  directory of *.parquet files (URL, TEXT, WIDTH, HEIGHT,
#              similarity, punsafe, pwatermark, AESTHETIC_SCORE, hash,
#              __index_level_0__)
# OUT.db       database to create; must not exist yet. It is VACUUMed in place
#              after the recipe (that VACUUM is timed separately and is not
#              part of the recipe's wall time).
# NAMES_DIR    optional; artists.csv, celebrities.csv, characters.csv (each with
#              a `name` column). Missing files are skipped.
#
# Environment:
#   ORIGINAL_RECIPE_VENV    tools directory (default /tmp/original-recipe-venv):
#                           one venv per tool (pt/, su/) and bin/ with both
#                           commands; created with the pinned versions if needed
#   ORIGINAL_RECIPE_PYTHON  interpreter used to create that venv (default python3)
#   RESULT_JSON             if set, write one JSON object with the results there
#
# Exit status: 0 ok; 1 error; 2 usage; 3 the recipe ran but images does not
# hold parquet rows + one junk row per file (results are still printed/written).
#
# The recipe commands below are the write-up's, verbatim except that the
# database path is our OUT.db and "$filename" is quoted. Tools come from
# dedicated venvs (never the project's .venv) put first on PATH, so the
# commands read exactly as in the write-up. Every recipe process runs under
# GNU /usr/bin/time -v; peak RSS is the largest "Maximum resident set size".
set -euo pipefail

usage() {
    echo "usage: $(basename "$0") PARQUET_DIR OUT.db [NAMES_DIR]"
    echo "  Runs the original 2022 parquet-tools | sqlite3 .import + sqlite-utils recipe"
    echo "  on PARQUET_DIR/*.parquet into a new OUT.db and reports time, peak RSS, sizes."
    echo "  env: ORIGINAL_RECIPE_VENV (default /tmp/original-recipe-venv), RESULT_JSON"
}

if [[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]]; then
    usage
    exit 0
fi
if [[ $# -lt 2 || $# -gt 3 ]]; then
    usage >&2
    exit 2
fi

log() { echo "[original-recipe] $*" >&2; }
die() { echo "[original-recipe] error: $*" >&2; exit 1; }

# ---------------------------------------------------------------- arguments
[[ -d "$1" ]] || die "PARQUET_DIR '$1' is not a directory"
PARQUET_DIR=$(cd "$1" && pwd)
[[ -d "$(dirname "$2")" ]] || die "directory of OUT.db '$(dirname "$2")' does not exist"
DB="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
[[ -e "$DB" ]] && die "OUT.db '$DB' already exists; refusing to overwrite (the recipe must start from a fresh file)"
for suffix in -journal -wal -shm; do
    [[ -e "$DB$suffix" ]] && die "'$DB$suffix' exists; remove it first"
done
NAMES_DIR=""
if [[ $# -eq 3 ]]; then
    [[ -d "$3" ]] || die "NAMES_DIR '$3' is not a directory"
    NAMES_DIR=$(cd "$3" && pwd)
fi
shopt -s nullglob
parquet_files=("$PARQUET_DIR"/*.parquet)
shopt -u nullglob
[[ ${#parquet_files[@]} -gt 0 ]] || die "no *.parquet files in $PARQUET_DIR"

# ---------------------------------------------------------------- system tools
am_root() { [[ "$(id -u)" == "0" ]]; }
apt_updated=0
apt_install() { # apt_install PACKAGE  (root only)
    if [[ $apt_updated == 0 ]]; then
        apt-get update -qq >&2
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >&2
}
need_debian_tool() { # need_debian_tool COMMAND PACKAGE
    if ! command -v "$1" >/dev/null 2>&1; then
        if am_root && command -v apt-get >/dev/null 2>&1; then
            log "installing Debian package '$2' (for $1)"
            apt_install "$2"
        else
            die "'$1' not found; install the Debian package '$2' (apt-get install $2) and re-run"
        fi
    fi
}
need_debian_tool sqlite3 sqlite3
[[ -x /usr/bin/time ]] || {
    if am_root && command -v apt-get >/dev/null 2>&1; then
        log "installing Debian package 'time' (GNU /usr/bin/time)"
        apt_install time
    else
        die "/usr/bin/time not found; install the Debian package 'time' and re-run"
    fi
}
/usr/bin/time -v -o /dev/null true 2>/dev/null \
    || die "/usr/bin/time does not support -v (GNU time needed: Debian package 'time')"

version_ge() { # version_ge A B  -> A >= B (dotted numeric)
    [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]
}
SQLITE_CLI_VERSION=$(sqlite3 --version | awk '{print $1}')
# .import --skip N and .import '|command' need sqlite3 >= 3.32
version_ge "$SQLITE_CLI_VERSION" 3.32.0 \
    || die "sqlite3 CLI $SQLITE_CLI_VERSION is too old: the recipe's '.import --skip 1' needs >= 3.32.0"

# ---------------------------------------------------------------- tools venv
# 2022-era tool versions (the write-up is from early Sept 2022): sqlite-utils
# 3.29 was the release then; parquet-tools 0.2.11 (pandas<2 era) has the same
# `csv` command as the latest. The older pandas/pyarrow/numpy needed for it are
# the oldest with CPython 3.11 wheels: pandas 1.5.x and pyarrow 10.0.1 (no 3.11
# wheels before), numpy <2 (pandas 1.5 is built against the numpy 1.x ABI).
# click is held at 8.1.x, the 2022 line that sqlite-utils 3.29 was written for.
#
# The two tools get separate venvs under $VENV (pt/ and su/, with both entry
# points linked into $VENV/bin): sqlite-utils imports pandas+numpy whenever
# they are importable, which would add ~0.6 s and ~80 MB RSS to every
# sqlite-utils call -- a cost the 2022 setup (standalone CLI installs) did not
# have.
PT_PINS=(
    "parquet-tools==0.2.11"
    "pandas==1.5.3"
    "numpy==1.23.5"
    "pyarrow==10.0.1"
    "thrift==0.13.0"
    "halo==0.0.29"
    "tabulate==0.8.10"
    "colorama==0.4.6"
    "boto3==1.44.5"
    "botocore==1.44.5"
    "s3transfer==0.19.3"
    "python-dateutil==2.9.0.post0"
    "pytz==2026.6"
)
SU_PINS=(
    "sqlite-utils==3.29"
    "sqlite-fts4==1.0.3"
    "click==8.1.3"
    "click-default-group-wheel==1.2.3"
    "tabulate==0.8.10"
    "python-dateutil==2.9.0.post0"
)
VENV=${ORIGINAL_RECIPE_VENV:-/tmp/original-recipe-venv}
PYTHON=${ORIGINAL_RECIPE_PYTHON:-python3}
MARKER="$VENV/.original-recipe-pins"
pins_text=$(printf 'pt %s\n' "${PT_PINS[@]}"; printf 'su %s\n' "${SU_PINS[@]}")

make_tool_venv() { # make_tool_venv SUBDIR PIN...
    local dir="$VENV/$1"
    shift
    if [[ ! -x "$dir/bin/python" ]]; then
        "$PYTHON" -m venv "$dir" || die "could not create venv at $dir"
    fi
    if ! PYTHONNOUSERSITE=1 "$dir/bin/python" -m pip install --disable-pip-version-check \
            "$@" >"$dir/pip-install.log" 2>&1; then
        grep -v "is ignored: it is neither a file nor a directory" "$dir/pip-install.log" | tail -n 30 >&2
        die "pip install of the pinned tools failed (full log: $dir/pip-install.log)"
    fi
}
if [[ ! -f "$MARKER" || "$(cat "$MARKER")" != "$pins_text" \
      || ! -x "$VENV/bin/parquet-tools" || ! -x "$VENV/bin/sqlite-utils" ]]; then
    command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found (set ORIGINAL_RECIPE_PYTHON)"
    log "setting up pinned baseline tools in $VENV (pt/: parquet-tools, su/: sqlite-utils)"
    mkdir -p "$VENV/bin"
    make_tool_venv pt "${PT_PINS[@]}"
    make_tool_venv su "${SU_PINS[@]}"
    ln -sfn "$VENV/pt/bin/parquet-tools" "$VENV/bin/parquet-tools"
    ln -sfn "$VENV/su/bin/sqlite-utils" "$VENV/bin/sqlite-utils"
    printf '%s\n' "$pins_text" >"$MARKER"
fi
export PATH="$VENV/bin:$PATH"
export PYTHONNOUSERSITE=1
unset PYTHONPATH PYTHONHOME
[[ "$(command -v parquet-tools)" == "$VENV/bin/parquet-tools" ]] || die "parquet-tools is not the venv's"
[[ "$(command -v sqlite-utils)" == "$VENV/bin/sqlite-utils" ]] || die "sqlite-utils is not the venv's"
parquet-tools csv --help >/dev/null 2>&1 || die "parquet-tools does not run (see $VENV/pt/pip-install.log)"
TOOLS_PY="$VENV/su/bin/python"
SQLITE_UTILS_VERSION=$(sqlite-utils --version | awk '{print $NF}')
PY_SQLITE_VERSION=$("$TOOLS_PY" -c 'import sqlite3; print(sqlite3.sqlite_version)')
# "update ... from counts" (UPDATE FROM) runs in sqlite-utils, i.e. Python's SQLite
version_ge "$PY_SQLITE_VERSION" 3.33.0 \
    || die "Python's SQLite $PY_SQLITE_VERSION is too old: the recipe's UPDATE ... FROM needs >= 3.33.0"

# ---------------------------------------------------------------- measuring
TMPD=$(mktemp -d "${TMPDIR:-/tmp}/original-recipe.XXXXXX")
trap 'rm -rf "$TMPD"' EXIT
mkdir -p "$TMPD/rss"

now_us() { local t=$EPOCHREALTIME; echo "${t//[.,]/}"; }
STEP_NAMES=()
declare -A STEP_US=()
CURRENT_STEP=""

# timed CMD...: run one process under GNU time; its max RSS lands in a file
# tagged with the current step.
timed() {
    local f
    f=$(mktemp "$TMPD/rss/${CURRENT_STEP}.XXXXXX")
    /usr/bin/time -v -o "$f" "$@"
}
# step NAME CMD...: run CMD (a function or command) as one timed recipe step.
step() {
    local name=$1 t0 t1
    shift
    CURRENT_STEP=$name
    log "step $name"
    t0=$(now_us)
    "$@"
    t1=$(now_us)
    STEP_NAMES+=("$name")
    STEP_US[$name]=$((t1 - t0))
}

# ---------------------------------------------------------------- the recipe
# Each function is one command of the write-up, with the database name
# laion-aesthetic-6pls.db replaced by "$DB". Command output goes to stderr so
# that stdout carries only the summary.
r_create_table() {
    timed sqlite3 "$DB" '
CREATE TABLE IF NOT EXISTS images (
[url] TEXT, [text] TEXT, [width] INTEGER, [height] INTEGER, [similarity] FLOAT,
[punsafe] FLOAT, [pwatermark] FLOAT, [aesthetic] FLOAT, [hash] TEXT, [__index_level_0__] INTEGER);' >&2
}
declare -A IMPORT_FILE_US=()
r_import() {
    local filename t0
    pushd "$PARQUET_DIR" >/dev/null
    for filename in *.parquet; do
        t0=$(now_us)
        timed parquet-tools csv "$filename" | timed sqlite3 -csv "$DB" ".import --skip 1 '|cat -' images" >&2
        IMPORT_FILE_US[$filename]=$(( $(now_us) - t0 ))
    done
    popd >/dev/null
}
r_enable_fts() {
    timed sqlite-utils enable-fts "$DB" images text >&2
}
r_add_column_domain() {
    timed sqlite-utils add-column "$DB" images domain >&2
}
# The write-up's UDF is `return urlparse(url).netloc`. Verbatim, it aborts the
# whole UPDATE on the first unparseable URL ("http://[::1/x": ValueError:
# Invalid IPv6 URL), which generated data (and real data) contains; the only
# change here is that such a URL gets the empty netloc instead, so that the
# baseline can finish and be timed. Set ORIGINAL_RECIPE_VERBATIM_UDF=1 to run
# it verbatim and see the failure.
r_update_domain() {
    if [[ "${ORIGINAL_RECIPE_VERBATIM_UDF:-0}" == 1 ]]; then
        timed sqlite-utils "$DB" 'update images set domain = domain(url)' --functions '
from urllib.parse import urlparse
def domain(url):
    return urlparse(url).netloc
' >&2
    else
        timed sqlite-utils "$DB" 'update images set domain = domain(url)' --functions '
from urllib.parse import urlparse
def domain(url):
    try:
        return urlparse(url).netloc
    except ValueError:
        return ""
' >&2
    fi
}
r_extract_domain() {
    timed sqlite-utils extract "$DB" images domain >&2
}
r_add_column_image_counts() {
    timed sqlite-utils add-column "$DB" domain image_counts integer >&2
}
r_count_domain_images() {
    timed sqlite-utils "$DB" 'with counts as (select domain_id, count(*) as c from images group by domain_id) update domain set image_counts = counts.c from counts where id = counts.domain_id' >&2
}
# artists / celebrities / characters: the write-up shows artists; the other
# two are the same commands with the table name swapped.
r_names_insert() { # TABLE CSV
    timed sqlite-utils insert "$DB" "$1" "$2" --csv >&2
}
r_names_add_column() { # TABLE
    timed sqlite-utils add-column "$DB" "$1" image_counts integer >&2
}
r_names_count() { # TABLE
    timed sqlite-utils "$DB" "with counts as (select name, (select count(*) from images_fts where images_fts match '\"' || name || '\"') as search_count from $1) update $1 set image_counts = counts.search_count from counts where $1.name = counts.name" >&2
}

log "parquet files: ${#parquet_files[@]} in $PARQUET_DIR"
log "tools: sqlite3 $SQLITE_CLI_VERSION, sqlite-utils $SQLITE_UTILS_VERSION (SQLite $PY_SQLITE_VERSION), parquet-tools from $VENV"

# Expected rows, from the parquet footers (not timed). This also fails early on
# a file that is not readable parquet: parquet-tools would only print an error
# for it and exit 0, so the recipe would silently skip that file.
PARQUET_ROWS=$("$VENV/pt/bin/python" - "${parquet_files[@]}" <<'PY'
import sys
import pyarrow.parquet as pq
total = 0
for path in sys.argv[1:]:
    try:
        total += pq.ParquetFile(path).metadata.num_rows
    except Exception as e:
        sys.exit(f"[original-recipe] error: cannot read {path} as parquet: {e}")
print(total)
PY
) || exit 1
log "parquet rows: $PARQUET_ROWS"

RECIPE_T0=$(now_us)
step create_table r_create_table
step import r_import
step enable_fts r_enable_fts
step add_column_domain r_add_column_domain
step update_domain r_update_domain
step extract_domain r_extract_domain
step add_column_image_counts r_add_column_image_counts
step count_domain_images r_count_domain_images
NAMES_DONE=()
if [[ -n "$NAMES_DIR" ]]; then
    for table in artists celebrities characters; do
        if [[ -f "$NAMES_DIR/$table.csv" ]]; then
            step "${table}_insert" r_names_insert "$table" "$NAMES_DIR/$table.csv"
            step "${table}_add_column" r_names_add_column "$table"
            step "${table}_count" r_names_count "$table"
            NAMES_DONE+=("$table")
        else
            log "no $NAMES_DIR/$table.csv; skipping $table"
        fi
    done
fi
RECIPE_US=$(( $(now_us) - RECIPE_T0 ))

# ---------------------------------------------------------------- results (not timed)
SIZE_BYTES=$(stat -c %s "$DB")
ROWS=$(sqlite3 "$DB" 'select count(*) from images')
JUNK_ROWS=$(sqlite3 "$DB" "select count(*) from images where url is null or url = ''")
FREE_PAGES=$(sqlite3 "$DB" 'pragma freelist_count')
PAGE_SIZE=$(sqlite3 "$DB" 'pragma page_size')
DOMAINS=$(sqlite3 "$DB" 'select count(*) from domain')
NAMES_COUNTS=""
for table in "${NAMES_DONE[@]}"; do
    NAMES_COUNTS+="$table=$(sqlite3 "$DB" "select count(*) || ' names, ' || count(image_counts) || ' counted' from $table") "
done

log "VACUUM (measured separately, not part of the recipe time)"
t0=$(now_us)
sqlite3 "$DB" VACUUM
VACUUM_US=$(( $(now_us) - t0 ))
SIZE_AFTER_VACUUM=$(stat -c %s "$DB")

# Peak RSS: every recipe process ran under /usr/bin/time -v; take the max of
# "Maximum resident set size" (kB), overall and per step. (In the import
# pipeline parquet-tools and sqlite3 run concurrently; this is the per-process
# peak, as the brief asks, not their sum.)
rss_kb() { awk -F': ' '/Maximum resident set size/ {print $2}' "$@" | sort -n | tail -n1; }
PEAK_KB=$(rss_kb "$TMPD"/rss/*)
declare -A STEP_PEAK_KB=()
for name in "${STEP_NAMES[@]}"; do
    STEP_PEAK_KB[$name]=$(rss_kb "$TMPD"/rss/"$name".*)
done

# ---------------------------------------------------------------- report
us_to_s() { awk -v u="$1" 'BEGIN { printf "%.3f", u / 1e6 }'; }
kb_to_mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

{
    echo "original 2022 recipe: $PARQUET_DIR (${#parquet_files[@]} parquet files) -> $DB"
    echo "tools: sqlite3 $SQLITE_CLI_VERSION | sqlite-utils $SQLITE_UTILS_VERSION (Python SQLite $PY_SQLITE_VERSION) | parquet-tools from $VENV"
    printf '  %-34s %10s %12s\n' "step" "seconds" "peak RSS MB"
    for name in "${STEP_NAMES[@]}"; do
        printf '  %-34s %10s %12s\n' "$name" "$(us_to_s "${STEP_US[$name]}")" "$(kb_to_mb "${STEP_PEAK_KB[$name]}")"
    done
    printf '  %-34s %10s %12s\n' "TOTAL (recipe wall time)" "$(us_to_s "$RECIPE_US")" "$(kb_to_mb "$PEAK_KB")"
    echo "rows in images:            $ROWS ($JUNK_ROWS junk rows with url NULL or ''; parquet rows: $PARQUET_ROWS)"
    echo "rows in domain:            $DOMAINS"
    if [[ -n "$NAMES_COUNTS" ]]; then echo "name tables:               $NAMES_COUNTS"; fi
    echo "size after recipe:         $SIZE_BYTES bytes ($(awk -v b="$SIZE_BYTES" 'BEGIN{printf "%.1f", b/1048576}') MiB; $FREE_PAGES free pages of $PAGE_SIZE bytes)"
    echo "size after VACUUM:         $SIZE_AFTER_VACUUM bytes ($(awk -v b="$SIZE_AFTER_VACUUM" 'BEGIN{printf "%.1f", b/1048576}') MiB; VACUUM took $(us_to_s "$VACUUM_US") s, not counted)"
}

if [[ -n "${RESULT_JSON:-}" ]]; then
    steps_tsv=""
    for name in "${STEP_NAMES[@]}"; do
        steps_tsv+="$name"$'\t'"${STEP_US[$name]}"$'\t'"${STEP_PEAK_KB[$name]}"$'\n'
    done
    files_tsv=""
    for f in "${!IMPORT_FILE_US[@]}"; do
        files_tsv+="$f"$'\t'"${IMPORT_FILE_US[$f]}"$'\n'
    done
    STEPS_TSV=$steps_tsv FILES_TSV=$files_tsv \
    WALL_US=$RECIPE_US PEAK_KB=$PEAK_KB SIZE_BYTES=$SIZE_BYTES SIZE_AFTER_VACUUM=$SIZE_AFTER_VACUUM \
    ROWS=$ROWS JUNK_ROWS=$JUNK_ROWS FREE_PAGES=$FREE_PAGES PAGE_SIZE=$PAGE_SIZE VACUUM_US=$VACUUM_US \
    DOMAINS=$DOMAINS PARQUET_ROWS=$PARQUET_ROWS N_FILES=${#parquet_files[@]} DB=$DB PARQUET_DIR=$PARQUET_DIR \
    SQLITE_CLI_VERSION=$SQLITE_CLI_VERSION SQLITE_UTILS_VERSION=$SQLITE_UTILS_VERSION \
    PY_SQLITE_VERSION=$PY_SQLITE_VERSION PINS_TEXT=$pins_text \
    "$TOOLS_PY" - "$RESULT_JSON" <<'PY'
import json, os, sys
e = os.environ
steps, step_rss = {}, {}
for line in e["STEPS_TSV"].splitlines():
    name, us, kb = line.split("\t")
    steps[name] = round(int(us) / 1e6, 3)
    step_rss[name] = round(int(kb) / 1024, 1)
files = {}
for line in sorted(e["FILES_TSV"].splitlines()):
    name, us = line.split("\t")
    files[name] = round(int(us) / 1e6, 3)
result = {
    "wall_s": round(int(e["WALL_US"]) / 1e6, 3),
    "peak_rss_mb": round(int(e["PEAK_KB"]) / 1024, 1),
    "size_bytes": int(e["SIZE_BYTES"]),
    "size_after_vacuum_bytes": int(e["SIZE_AFTER_VACUUM"]),
    "steps": steps,
    "rows": int(e["ROWS"]),
    "junk_rows": int(e["JUNK_ROWS"]),
    "free_pages_before_vacuum": int(e["FREE_PAGES"]),
    # extras
    "page_size": int(e["PAGE_SIZE"]),
    "vacuum_s": round(int(e["VACUUM_US"]) / 1e6, 3),
    "step_peak_rss_mb": step_rss,
    "import_files_s": files,
    "parquet_files": int(e["N_FILES"]),
    "parquet_rows": int(e["PARQUET_ROWS"]),
    "domains": int(e["DOMAINS"]),
    "db": e["DB"],
    "parquet_dir": e["PARQUET_DIR"],
    "tools": {
        "sqlite3_cli": e["SQLITE_CLI_VERSION"],
        "sqlite_utils": e["SQLITE_UTILS_VERSION"],
        "python_sqlite": e["PY_SQLITE_VERSION"],
        "pins": e["PINS_TEXT"].splitlines(),
    },
}
with open(sys.argv[1], "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
PY
    log "results written to $RESULT_JSON"
fi

# Sanity check: the recipe is expected to load every parquet row plus one junk
# row per file (parquet-tools prints a trailing blank line, which sqlite3
# .import turns into a row with url '' and every other column NULL).
EXPECTED_ROWS=$((PARQUET_ROWS + ${#parquet_files[@]}))
if [[ "$ROWS" != "$EXPECTED_ROWS" ]]; then
    log "WARNING: images has $ROWS rows, expected $EXPECTED_ROWS ($PARQUET_ROWS parquet rows + ${#parquet_files[@]} junk rows); see the sqlite3 .import messages above"
    exit 3
fi
