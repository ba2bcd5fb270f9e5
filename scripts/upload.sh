#!/usr/bin/env bash
# usage: scripts/upload.sh DB INSPECT [--vectors FILE | --no-vectors] [--app APP] [--machine ID]
# Puts a built database and its inspect file on the volume of every machine of
# the Fly app (default: fly.toml's app), or of one (--machine), with no
# downtime: each file goes to a temporary name beside the served one, its
# sha256 is checked on the machine against the local file, and only when every
# machine has all files intact are they renamed into place (a rename on one
# filesystem: a reader never sees half a file) and the machines restarted one
# at a time. Until its restart a machine keeps serving the previous database.
# The similar-images vectors file that `datasette laion build` writes beside
# the database (NAME.vectors for NAME.db) goes with it when it is there, or
# the one --vectors names; with --no-vectors (or none beside DB) the served
# vectors file, which belongs to the previous database, is removed.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FLYCTL=${FLYCTL:-flyctl}
PY=${UPLOAD_PYTHON:-$(command -v python3 || true)}
HEALTH_TRIES=${UPLOAD_HEALTH_TRIES:-10}   # after a restart, 3 s apart

# Where the deployed server reads them (scripts/deploy.sh writes this into the
# plugin configuration): the database name is fixed, whatever DB is called here.
DATABASE=laion-aesthetic-6pls
REMOTE_DIR=/data/laion
REMOTE_DB=$REMOTE_DIR/$DATABASE.db
REMOTE_INSPECT=$REMOTE_DIR/inspect.json
REMOTE_VECTORS=$REMOTE_DIR/$DATABASE.vectors   # where the plugin looks: database_path with .vectors for .db
VECTORS_MAGIC=LAIONVEC   # the first 8 bytes of a vectors file
SUFFIX=.uploading   # temporary names: same directory, so same filesystem

usage() { sed -n '2p' "$0" | sed 's/^# \{0,1\}//' >&2; }
die() { echo "error: $*" >&2; exit 1; }
bad_usage() { echo "error: $*" >&2; usage; exit 2; }
step() { echo "==> $*" >&2; }

APP=$(sed -n 's/^app[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$ROOT/fly.toml" | head -n 1)
ONLY_MACHINE=
VECTORS=            # the local vectors file to carry, if any
VECTORS_MODE=beside # beside: NAME.vectors beside NAME.db if there; given: --vectors; none: --no-vectors
positional=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --app|--machine|--vectors)
            [[ $# -ge 2 && -n "$2" ]] || bad_usage "$1 needs a value"
            case "$1" in
                --app) APP=$2 ;;
                --machine) ONLY_MACHINE=$2 ;;
                --vectors)
                    [[ "$VECTORS_MODE" != none ]] || bad_usage "--vectors and --no-vectors exclude each other"
                    VECTORS=$2; VECTORS_MODE=given ;;
            esac
            shift 2 ;;
        --no-vectors)
            [[ "$VECTORS_MODE" != given ]] || bad_usage "--vectors and --no-vectors exclude each other"
            VECTORS=; VECTORS_MODE=none; shift ;;
        -*) bad_usage "unknown option: $1" ;;
        *) positional+=("$1"); shift ;;
    esac
done
[[ ${#positional[@]} -eq 2 ]] || bad_usage "expected DB and INSPECT, got ${#positional[@]} argument(s)"
DB=${positional[0]}
INSPECT=${positional[1]}
[[ "$APP" =~ ^[a-z0-9][a-z0-9-]*$ ]] || bad_usage "--app: '$APP' is not a Fly app name"
[[ -z "$ONLY_MACHINE" || "$ONLY_MACHINE" =~ ^[a-z0-9]+$ ]] || bad_usage "--machine: '$ONLY_MACHINE' is not a machine id"

# 1. Local checks, before anything touches Fly.
[[ -f "$DB" ]] || die "$DB: no such file"
[[ -f "$INSPECT" ]] || die "$INSPECT: no such file"
[[ "$(head -c 15 "$DB")" == "SQLite format 3" ]] || die "$DB is not an SQLite database"
if [[ "$VECTORS_MODE" == beside && -f "${DB%.db}.vectors" ]]; then
    VECTORS=${DB%.db}.vectors
elif [[ "$VECTORS_MODE" == given ]]; then
    [[ -f "$VECTORS" ]] || die "$VECTORS: no such file"
fi
# Only its magic: the server checks the rest (and that it matches the database).
# tr: a NUL read by $(...) would be dropped with a warning.
if [[ -n "$VECTORS" && "$(head -c 8 "$VECTORS" | tr -d '\0')" != "$VECTORS_MAGIC" ]]; then
    die "$VECTORS is not a vectors file written by datasette laion build"
fi
case "$VECTORS_MODE" in
    beside) if [[ -n "$VECTORS" ]]; then
                step "carrying $VECTORS too, the vectors file beside $DB (--no-vectors to leave it out)"
            else
                step "no vectors file carried (no ${DB%.db}.vectors): a served one, the previous database's, is removed"
            fi ;;
    given) step "carrying $VECTORS too" ;;
    none) step "no vectors file carried (--no-vectors): a served one, the previous database's, is removed" ;;
esac
[[ -n "$PY" ]] || die "python3 not found (needed to read JSON)"
sha256() {
    if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1
    else shasum -a 256 "$1" | cut -d' ' -f1; fi
}
step "sha256 of $DB"
DB_SHA=$(sha256 "$DB")
DB_SIZE=$(wc -c < "$DB" | tr -d ' ')
# The inspect file must describe this very file (its hash and size): its
# entry under the name the server looks it up by, or under another name (a
# database built as pd12m.db, or several built into one folder): then that
# entry alone, keyed by the served name, is what goes up. Otherwise every
# page would count the rows again.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/upload.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
"$PY" - "$INSPECT" "$DATABASE" "$DB_SHA" "$DB_SIZE" "$DB" "$WORK/inspect.json" <<'PY' || exit 1
import json, sys
path, name, sha, size, db, out = sys.argv[1:]
try:
    data = json.load(open(path))
except ValueError as ex:
    sys.exit(f"error: {path} is not an inspect file: {ex}")
if not isinstance(data, dict):
    sys.exit(f"error: {path} is not an inspect file: not a JSON object")
entry = data.get(name)
if not isinstance(entry, dict) or "tables" not in entry:
    entry = next((e for e in data.values() if isinstance(e, dict) and "tables" in e and e.get("hash") == sha), None)
    if entry is None:
        found = ", ".join(sorted(data)) or "nothing"
        sys.exit(f"error: {path} has no entry for database {name!r} nor for the file {db} (it has: {found}); "
                 "give the inspect file that `datasette laion build` wrote beside it")
if entry.get("hash") not in (None, sha) or entry.get("size") not in (None, int(size)):
    sys.exit(f"error: {path} was written for another database file than {db} "
             f"(its hash/size: {entry.get('hash')}/{entry.get('size')}, the file's: {sha}/{size})")
with open(out, "w") as fp:
    json.dump({name: entry}, fp, indent=2)
PY
INSPECT=$WORK/inspect.json
INSPECT_SHA=$(sha256 "$INSPECT")
INSPECT_SIZE=$(wc -c < "$INSPECT" | tr -d ' ')
if [[ -n "$VECTORS" ]]; then
    step "sha256 of $VECTORS"
    VECTORS_SHA=$(sha256 "$VECTORS")
    VECTORS_SIZE=$(wc -c < "$VECTORS" | tr -d ' ')
fi

# 2. The machines.
command -v "$FLYCTL" >/dev/null || die "$FLYCTL not found: install it (https://fly.io/docs/flyctl/install/) or set FLYCTL"
"$FLYCTL" ssh sftp put --help >/dev/null 2>&1 \
    || die "this $FLYCTL has no 'ssh sftp put' (only recent versions have it): run '$FLYCTL version upgrade'"
machines_json=$("$FLYCTL" machine list --app "$APP" --json) || die "could not list the machines of app $APP"
mapfile -t MACHINES < <("$PY" -c 'import json, sys
for m in json.load(sys.stdin) or []:
    if m.get("state") not in ("destroyed", "destroying"):
        print(m["id"])' <<<"$machines_json")
if [[ -n "$ONLY_MACHINE" ]]; then
    printf '%s\n' "${MACHINES[@]}" | grep -qxF "$ONLY_MACHINE" || die "app $APP has no machine $ONLY_MACHINE"
    MACHINES=("$ONLY_MACHINE")
fi
[[ ${#MACHINES[@]} -gt 0 ]] || die "app $APP has no machines: deploy it first (scripts/deploy.sh --app $APP)"

ssh_run() {  # ssh_run MACHINE COMMAND: run COMMAND (no shell unless it says sh -c) on MACHINE
    "$FLYCTL" ssh console --app "$APP" --machine "$1" --quiet -C "$2" | tr -d '\r'
}

# Every temporary name, the vectors' too when none is carried (a leftover).
ALL_TEMP="$REMOTE_DB$SUFFIX $REMOTE_INSPECT$SUFFIX $REMOTE_VECTORS$SUFFIX"
clean_up() {  # remove the temporary files on MACHINE (best effort)
    ssh_run "$1" "rm -f $ALL_TEMP" >/dev/null 2>&1 || true
}

# 3. Upload to temporary names and check, machine by machine. Nothing served
#    changes in this phase; a failure leaves every machine as it was.
LOCAL=("$DB" "$INSPECT")
TEMP=("$REMOTE_DB$SUFFIX" "$REMOTE_INSPECT$SUFFIX")
SHA=("$DB_SHA" "$INSPECT_SHA")
need_bytes=$(( DB_SIZE + INSPECT_SIZE ))
# The switch of 4., one command: vectors first, then inspect, then the
# database last. The database's rename is the commit point: once the new
# database is in place, everything that goes with it already is, so a machine
# that restarts part-way (or a server that opens the vectors file before its
# restart) may meet the previous database with the new vectors file (which
# the server refuses as mismatched: no similar images until the restart that
# follows, never wrong ones) but never the new database with the previous
# one's vectors. And if a rename fails, the && stops before the database.
# With no vectors file carried, the served one (the previous database's) is
# removed instead, at the same place: before the database is switched.
if [[ -n "$VECTORS" ]]; then
    LOCAL+=("$VECTORS")
    TEMP+=("$REMOTE_VECTORS$SUFFIX")
    SHA+=("$VECTORS_SHA")
    need_bytes=$(( need_bytes + VECTORS_SIZE ))
    SWITCH="mv -f $REMOTE_VECTORS$SUFFIX $REMOTE_VECTORS"
else
    SWITCH="rm -f $REMOTE_VECTORS"
fi
SWITCH="$SWITCH && mv -f $REMOTE_INSPECT$SUFFIX $REMOTE_INSPECT && mv -f $REMOTE_DB$SUFFIX $REMOTE_DB"
need_kb=$(( need_bytes / 1024 + 1024 ))   # the new files and 1 MB to spare
for machine in "${MACHINES[@]}"; do
    step "$machine: preparing $REMOTE_DIR"
    ssh_run "$machine" "mkdir -p $REMOTE_DIR" >/dev/null || die "$machine: could not create $REMOTE_DIR (is the volume mounted at /data?)"
    # Leftovers of an interrupted upload (sftp put does not overwrite).
    ssh_run "$machine" "rm -f $ALL_TEMP" >/dev/null || die "$machine: could not remove old temporary files"
    free_kb=$(ssh_run "$machine" "df -Pk $REMOTE_DIR" | awk 'NR > 1 && $4 ~ /^[0-9]+$/ { kb = $4 } END { print kb }') \
        || die "$machine: could not read the free space of the volume"
    [[ -n "$free_kb" ]] || die "$machine: could not read the free space of the volume"
    if (( free_kb < need_kb )); then
        die "$machine: not enough room on the volume: $((free_kb / 1024)) MB free, $((need_kb / 1024)) MB needed (the new files are uploaded beside the served ones). Extend it: $FLYCTL volumes extend VOLUME_ID --size GB --app $APP"
    fi
    for i in "${!LOCAL[@]}"; do
        step "$machine: uploading ${LOCAL[i]} to ${TEMP[i]}"
        "$FLYCTL" ssh sftp put "${LOCAL[i]}" "${TEMP[i]}" --app "$APP" --machine "$machine" >&2 \
            || { clean_up "$machine"; die "$machine: upload of ${LOCAL[i]} failed; nothing was moved, the site serves the previous database. Run this again."; }
    done
    step "$machine: checking sha256"
    sums=$(ssh_run "$machine" "sha256sum ${TEMP[*]}") \
        || { clean_up "$machine"; die "$machine: could not compute sha256 of the uploaded files"; }
    for i in "${!TEMP[@]}"; do
        got=$(awk -v f="${TEMP[i]}" '$2 == f { print $1 }' <<<"$sums")
        if [[ "$got" != "${SHA[i]}" ]]; then
            clean_up "$machine"
            die "$machine: sha256 of ${TEMP[i]} is ${got:-missing}, expected ${SHA[i]}: the upload is corrupt. Nothing was moved; the site serves the previous database. Run this again."
        fi
    done
done

# 4. Switch and restart, one machine at a time, so that with several machines
#    the others serve while one restarts. The renames in one command, in the
#    order of $SWITCH (see 3.): the running server read its inspect file at
#    start-up and reads the new database only after the restart that follows.
for machine in "${MACHINES[@]}"; do
    step "$machine: moving the new files into place"
    ssh_run "$machine" "sh -c '$SWITCH'" >/dev/null \
        || die "$machine: could not move the uploaded files into place (they are still at $REMOTE_DIR/*$SUFFIX)"
    step "$machine: restarting"
    "$FLYCTL" machine restart "$machine" --app "$APP" >&2 || die "$machine: restart failed; the new database is in place and is served from the next start"
    status=
    for (( try = 1; try <= HEALTH_TRIES; try++ )); do
        health=$(ssh_run "$machine" "python -c 'import urllib.request as u; print(u.urlopen(\"http://127.0.0.1:8080/-/laion/health\", timeout=10).read().decode())'" 2>/dev/null || true)
        status=$("$PY" -c 'import json, sys
try:
    print(json.loads(sys.stdin.read().strip().splitlines()[-1]).get("status", ""))
except Exception:
    print("")' <<<"$health")
        if [[ "$status" == ready ]]; then break; fi
        if (( try < HEALTH_TRIES )); then sleep 3; fi
    done
    [[ "$status" == ready ]] || die "$machine: restarted but does not serve the database (health status: ${status:-no answer}); look at '$FLYCTL logs --app $APP'"
    step "$machine: serving the new database"
done
if [[ -n "$VECTORS" ]]; then
    echo "Uploaded $DB (sha256 $DB_SHA) with $VECTORS (sha256 $VECTORS_SHA) to ${#MACHINES[@]} machine(s) of $APP." >&2
else
    echo "Uploaded $DB (sha256 $DB_SHA) to ${#MACHINES[@]} machine(s) of $APP." >&2
fi
