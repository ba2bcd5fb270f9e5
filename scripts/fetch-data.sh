#!/usr/bin/env bash
# usage: scripts/fetch-data.sh [--subset 6plus|6.25plus|6.5plus|5plus|4.75plus|4.5plus] [--source URL_OR_PATH] [DEST]
# Fetches the parquet files of a LAION-Aesthetics v2 subset into DEST (default
# data/improved_aesthetics_SUBSET), ready for `datasette laion build`. The
# default is the 6+ set: 7 files, ~325 MB each, from the Hugging Face dataset
# ChristophSchuhmann/improved_aesthetics_6plus. --source is a Hugging Face
# compatible endpoint (default https://huggingface.co), a mirror URL serving
# the files beside a SHA256SUMS list, or a local directory of the files (with
# SHA256SUMS or FILE.sha256 files if it has them). Downloads resume where they
# stopped (run it again); every file with a known sha256 is checked. LAION
# withdrew these files in December 2023: without a mirror this fails, saying so.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
HF_ENDPOINT_DEFAULT=https://huggingface.co
HF_OWNER=ChristophSchuhmann
SUBSETS="6plus 6.25plus 6.5plus 5plus 4.75plus 4.5plus"
# Timeouts: nothing here waits forever. Small requests (listings) get a
# minute in all; a big download is abandoned when it stays under 10 kB/s for
# a minute (and resumes on the next run).
CONNECT_TIMEOUT=${FETCH_CONNECT_TIMEOUT:-15}
WITHDRAWN="LAION withdrew LAION-5B and the datasets made from it, LAION-Aesthetics included, in December 2023; \
Re-LAION-5B (August 2024, https://laion.ai/blog/relaion-5b/) is its cleaned successor. \
Give --source a mirror URL or a local directory that holds the parquet files."

usage() { sed -n '2p' "$0" | sed 's/^# \{0,1\}//' >&2; }
die() { echo "error: $*" >&2; exit 1; }
bad_usage() { echo "error: $*" >&2; usage; exit 2; }

SUBSET=6plus
SOURCE=$HF_ENDPOINT_DEFAULT
DEST=
while [[ $# -gt 0 ]]; do
    case "$1" in
        --subset|--source)
            [[ $# -ge 2 && -n "$2" ]] || bad_usage "$1 needs a value"
            if [[ "$1" == --subset ]]; then SUBSET=$2; else SOURCE=$2; fi
            shift 2 ;;
        -*) bad_usage "unknown option: $1" ;;
        *) [[ -z "$DEST" ]] || bad_usage "more than one DEST: $DEST, $1"; DEST=$1; shift ;;
    esac
done
[[ " $SUBSETS " == *" $SUBSET "* ]] || bad_usage "--subset: '$SUBSET' is not one of: $SUBSETS"
DATASET=improved_aesthetics_$SUBSET
REPO=$HF_OWNER/$DATASET
DEST=${DEST:-data/$DATASET}
PY=$(command -v python3 || true)
[[ -n "$PY" ]] || die "python3 not found (needed to read the file lists)"
command -v curl >/dev/null || [[ -d "$SOURCE" ]] || die "curl not found"

sha256() {
    if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1
    else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fetch-data.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
LIST=$WORK/list   # one "NAME<TAB>SHA256 or -<TAB>WHERE" line per file

# Checks FILE against SHA256 ("-": unknown); prints what it did.
verify() {
    local file=$1 want=$2 name=$3 got
    if [[ "$want" == - ]]; then
        echo "  $name: no checksum published for it: not verified" >&2
        return 0
    fi
    got=$(sha256 "$file")
    [[ "$got" == "$want" ]] && { echo "  $name: sha256 ok" >&2; return 0; }
    echo "error: $name: sha256 is $got, expected $want" >&2
    return 1
}

# A known checksum from SHA256SUMS lines ("HEX  NAME" or "HEX *NAME") for NAME.
sum_for() {
    awk -v n="$2" '{ f = $2; sub(/^\*/, "", f); k = split(f, p, "/"); if (f == n || p[k] == n) { print $1; exit } }' "$1"
}

# GET URL into FILE (small things: listings, checksum lists). Prints the HTTP
# status ("000" when nothing answered) and fails on no answer at all.
fetch_small() {
    local url=$1 out=$2 code rc=0
    local auth=()
    [[ -n "${HF_TOKEN:-}" ]] && auth=(-H "Authorization: Bearer $HF_TOKEN")
    code=$(curl -sS -L --connect-timeout "$CONNECT_TIMEOUT" --max-time 60 ${auth[@]+"${auth[@]}"} \
        -o "$out" -w '%{http_code}' "$url" 2>"$WORK/curl.err") || rc=$?
    echo "${code:-000}"
    if [[ $rc -ne 0 && "${code:-000}" == 000 ]]; then
        return 1
    fi
}

unreachable() {
    die "cannot reach $1 ($(head -c 300 "$WORK/curl.err" | tr '\n' ' ' | sed 's/ *$//')). Check the network, or: $WITHDRAWN"
}

# 1. The list of files, with their checksums when the source publishes them.
if [[ -d "$SOURCE" ]]; then
    echo "Listing $SOURCE" >&2
    found=0
    while IFS= read -r -d '' file; do
        name=$(basename "$file")
        want=-
        if [[ -f "$file.sha256" ]]; then
            want=$(awk '{ print $1; exit }' "$file.sha256")
        elif [[ -f "$SOURCE/SHA256SUMS" ]]; then
            want=$(sum_for "$SOURCE/SHA256SUMS" "$name")
        fi
        printf '%s\t%s\t%s\n' "$name" "${want:--}" "$file" >> "$LIST"
        found=$((found + 1))
    done < <(find "$SOURCE" -maxdepth 2 -name '*.parquet' -type f -print0 | sort -z)
    [[ $found -gt 0 ]] || die "$SOURCE has no .parquet files (looked in it and its subdirectories, e.g. data/)"
else
    [[ "$SOURCE" =~ ^https?:// ]] || die "--source: $SOURCE is neither a directory nor an http(s) URL"
    BASE=${SOURCE%/}
    manifest=0
    if [[ "$BASE" != "$HF_ENDPOINT_DEFAULT" ]]; then
        # A plain mirror: the files beside a SHA256SUMS list.
        code=$(fetch_small "$BASE/SHA256SUMS" "$WORK/SHA256SUMS") || unreachable "$BASE"
        if [[ "$code" == 200 ]]; then
            manifest=1
            while read -r want path; do
                path=${path#\*}
                [[ "$path" == *.parquet ]] || continue
                printf '%s\t%s\t%s\n' "$(basename "$path")" "$want" "$BASE/$path" >> "$LIST"
            done < "$WORK/SHA256SUMS"
            [[ -s "$LIST" ]] || die "$BASE/SHA256SUMS lists no .parquet files"
        fi
    fi
    if [[ $manifest == 0 ]]; then
        # Hugging Face (or a compatible endpoint): the API lists the files with
        # the sha256 of each from its LFS pointer.
        api="$BASE/api/datasets/$REPO/tree/main/data"
        echo "Listing $REPO on $BASE" >&2
        code=$(fetch_small "$api" "$WORK/tree.json") || unreachable "$BASE"
        case "$code" in
            200) ;;
            401|403|404|410|451)
                die "$REPO is not available from $BASE (HTTP $code for $api). $WITHDRAWN" ;;
            *) die "unexpected answer from $api: HTTP $code" ;;
        esac
        "$PY" - "$WORK/tree.json" "$BASE/datasets/$REPO/resolve/main" >> "$LIST" <<'PY' || die "could not read the file list from $api"
import json, os, sys
entries = json.load(open(sys.argv[1]))
for entry in entries:
    path = entry.get("path", "")
    if entry.get("type", "file") == "file" and path.endswith(".parquet"):
        sha = (entry.get("lfs") or {}).get("oid") or "-"
        print(f"{os.path.basename(path)}\t{sha}\t{sys.argv[2]}/{path}")
PY
        [[ -s "$LIST" ]] || die "$REPO on $BASE lists no parquet files. $WITHDRAWN"
    fi
fi
count=$(wc -l < "$LIST" | tr -d ' ')
if [[ "$SUBSET" == 6plus && "$count" != 7 ]]; then
    echo "warning: the 6+ set was published as 7 files; this source has $count" >&2
fi

mkdir -p "$DEST"

# 2. Each file: skipped when already there and intact, else copied or
#    downloaded to NAME.part (resumed if a previous run stopped), checked, and
#    only then renamed to NAME: DEST never holds a partial or corrupt NAME.
failed=0
while IFS=$'\t' read -r name want where; do
    target="$DEST/$name"
    part="$DEST/$name.part"
    if [[ -f "$target" ]]; then
        if verify "$target" "$want" "$name" 2>/dev/null; then
            echo "  $name: already there" >&2
            continue
        fi
        echo "  $name: present but its sha256 does not match: fetching again" >&2
        rm -f "$target"
    fi
    if [[ -d "$SOURCE" ]]; then
        echo "$name: copying from $where" >&2
        rm -f "$part"
        ln "$where" "$part" 2>/dev/null || cp "$where" "$part"
    else
        echo "$name: downloading $where" >&2
        auth=()
        [[ -n "${HF_TOKEN:-}" ]] && auth=(-H "Authorization: Bearer $HF_TOKEN")
        rc=0
        curl -fL --connect-timeout "$CONNECT_TIMEOUT" --speed-limit 10240 --speed-time 60 \
            --retry 3 --retry-delay 5 ${auth[@]+"${auth[@]}"} -C - -o "$part" "$where" || rc=$?
        if [[ $rc -eq 33 ]]; then   # the server cannot resume: start again
            rm -f "$part"
            rc=0
            curl -fL --connect-timeout "$CONNECT_TIMEOUT" --speed-limit 10240 --speed-time 60 \
                --retry 3 --retry-delay 5 ${auth[@]+"${auth[@]}"} -o "$part" "$where" || rc=$?
        fi
        if [[ $rc -ne 0 ]]; then
            echo "error: $name: download failed (curl exit $rc); run this again to resume" >&2
            failed=$((failed + 1))
            continue
        fi
    fi
    if verify "$part" "$want" "$name"; then
        mv -f "$part" "$target"
    else
        rm -f "$part"
        failed=$((failed + 1))
    fi
done < "$LIST"
[[ $failed -eq 0 ]] || die "$failed of $count file(s) not fetched; DEST holds only complete, checked files. Run this again."
echo "Fetched $count file(s) of $DATASET into $DEST. Next:" >&2
echo "  datasette laion build laion-aesthetic-6pls.db $DEST" >&2
