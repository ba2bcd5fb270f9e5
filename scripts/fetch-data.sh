#!/usr/bin/env bash
# usage: scripts/fetch-data.sh [--source NAME] [--mirror URL_OR_DIR] [--subset SUBSET] [--files N] [--embeddings] [DEST]
# Fetches a source's parquet files into DEST, ready for `datasette laion build`.
#
# --source NAME   a profile (`datasette laion profiles`: pd12m, coyo-700m, datacomp-1b,
#                 cc12m, relaion2b-en-research-safe, ...) or a Hugging Face dataset id
#                 (owner/name, or only the name of a profile's dataset: aesthetics_v2_4.75).
#                 The hub's API lists its files; each download is checked against the size
#                 and sha256 listed there. DEST defaults to data/NAME. Gated datasets need
#                 HF_TOKEN: a token (https://huggingface.co/settings/tokens) of an account
#                 that was granted access on the dataset's page. HF_ENDPOINT replaces
#                 https://huggingface.co, as for huggingface_hub.
# --files N       only the first N files, in name order: to try a source.
# --embeddings    the source's own embedding files too (pd12m, datacomp-1b), into DEST/embeddings.
# --mirror URL_OR_DIR  where to fetch from instead: a mirror URL serving the files beside a
#                 SHA256SUMS list, a Hugging Face compatible endpoint, or a local directory
#                 of the files (with SHA256SUMS or FILE.sha256 files if it has them).
#                 `--source URL_OR_DIR` means the same, as it always has.
# Without --source NAME: the LAION-Aesthetics v2 6+ set (--subset 6plus, the default; or
# 6.25plus, 6.5plus, 5plus, 4.75plus, 4.5plus) from ChristophSchuhmann/improved_aesthetics_SUBSET
# into data/improved_aesthetics_SUBSET: 7 files, ~325 MB each. LAION withdrew these files in
# December 2023: without a mirror this fails, saying so.
# Downloads resume where they stopped (run it again); DEST only ever holds complete, checked files.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
    exit 0
fi
HF_ENDPOINT_DEFAULT=https://huggingface.co
ENDPOINT=${HF_ENDPOINT:-$HF_ENDPOINT_DEFAULT}
ENDPOINT=${ENDPOINT%/}
PROFILES_PY="$(cd "$(dirname "$0")/.." && pwd)/datasette_laion/profiles.py"
SUBSETS="6plus 6.25plus 6.5plus 5plus 4.75plus 4.5plus"
# Timeouts: nothing here waits forever. Small requests (listings) get a
# minute in all; a big download is abandoned when it stays under 10 kB/s for
# a minute (and resumes on the next run).
CONNECT_TIMEOUT=${FETCH_CONNECT_TIMEOUT:-15}
MAX_PAGES=10000   # of a listing: a hub that keeps saying "next" is not followed forever
WITHDRAWN="LAION withdrew LAION-5B and the datasets made from it, LAION-Aesthetics included, in December 2023; \
Re-LAION-5B (August 2024, https://laion.ai/blog/relaion-5b/) is its cleaned successor. \
Give --source a mirror URL or a local directory that holds the parquet files."

usage() { sed -n '2p' "$0" | sed 's/^# \{0,1\}//' >&2; }
die() { echo "error: $*" >&2; exit 1; }
bad_usage() { echo "error: $*" >&2; usage; exit 2; }

SUBSET=
SOURCE=
MIRROR=
FILES=
EMBEDDINGS=0
DEST=
while [[ $# -gt 0 ]]; do
    case "$1" in
        --subset|--source|--mirror|--files)
            [[ $# -ge 2 && -n "$2" ]] || bad_usage "$1 needs a value"
            case "$1" in
                --subset) SUBSET=$2 ;;
                --files) FILES=$2 ;;
                --mirror) MIRROR=$2 ;;
                --source) SOURCE=$2 ;;
            esac
            shift 2 ;;
        --embeddings) EMBEDDINGS=1; shift ;;
        -*) bad_usage "unknown option: $1" ;;
        *) [[ -z "$DEST" ]] || bad_usage "more than one DEST: $DEST, $1"; DEST=$1; shift ;;
    esac
done
[[ -z "$FILES" || "$FILES" =~ ^[1-9][0-9]*$ ]] || bad_usage "--files: '$FILES' is not a whole number of files (1 or more)"
PY=$(command -v python3 || true)
[[ -n "$PY" ]] || die "python3 not found (needed to read the file lists)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fetch-data.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# NAME -> "PROFILE<TAB>REPO<TAB>FILES_GLOB<TAB>EMBEDDINGS_GLOB<TAB>DEST_NAME" in
# $WORK/resolved ("-": none), read from the profiles. Fails with 3 (the
# profiles listed in $WORK/resolve.err) when NAME is none of them.
resolve() {
    if [[ ! -f "$PROFILES_PY" ]]; then
        # This script away from its repository: dataset ids still work.
        [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$ ]] || return 4
        printf -- '-\t%s\t*.parquet\t-\t%s\n' "$1" "${1#*/}" > "$WORK/resolved"
        return 0
    fi
    "$PY" - "$PROFILES_PY" "$1" > "$WORK/resolved" 2> "$WORK/resolve.err" <<'PY'
import importlib.util, re, sys

path, name = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("fetch_data_profiles", path)
profiles = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = profiles
spec.loader.exec_module(profiles)  # the profiles alone: no datasette, no Arrow


def answer(profile, repo):
    files, embeddings = (profile.hf_files, profile.hf_embeddings or "-") if profile else ("*.parquet", "-")
    dest = profile.name if profile and repo == profile.source else repo.split("/")[1]
    print("\t".join([profile.name if profile else "-", repo, files, embeddings, dest]))
    sys.exit(0)


if name in profiles.PROFILES:
    answer(profiles.PROFILES[name], profiles.PROFILES[name].source)
key = name.lower()
for profile in profiles.PROFILES.values():
    for repo in (profile.source, *(a for a in profile.also if "/" in a)):
        if key == repo.lower() or ("/" not in key and key == repo.split("/")[1].lower()):
            answer(profile, repo)
if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+", name):
    answer(None, name)
width = max(len(p) for p in profiles.PROFILES)
for profile in profiles.PROFILES.values():
    print(f"  {profile.name:<{width}}  {profile.source}", file=sys.stderr)
sys.exit(3)
PY
}

# --source: a URL or a directory says where from (its old meaning, kept), as
# --mirror does; anything else says what. A bare word that is both a profile
# and a directory here is the profile.
NAME=
if [[ -n "$SOURCE" ]]; then
    rc=0
    if [[ "$SOURCE" =~ ^https?:// || ( -d "$SOURCE" && "$SOURCE" == */* ) ]]; then
        rc=9
    else
        resolve "$SOURCE" || rc=$?
        if [[ -d "$SOURCE" && ( $rc -ne 0 || "$(cut -f1 "$WORK/resolved")" == - ) ]]; then
            rc=9
        elif [[ -d "$SOURCE" ]]; then
            echo "note: '$SOURCE' is the profile here, not the directory of that name (--mirror ./$SOURCE copies from it)" >&2
        fi
    fi
    case $rc in
        0) NAME=$SOURCE ;;
        9) [[ -z "$MIRROR" ]] || bad_usage "--source $SOURCE and --mirror $MIRROR: give one place to fetch from"
           MIRROR=$SOURCE ;;
        3|4)
            echo "error: --source: '$SOURCE' is not a profile, a Hugging Face dataset id (owner/name), an http(s) URL or a directory." >&2
            if [[ $rc -eq 3 ]]; then
                echo "The profiles (\`datasette laion profiles\` describes them) and their datasets:" >&2
                cat "$WORK/resolve.err" >&2
            else
                echo "(The profiles are not at $PROFILES_PY: only dataset ids work.)" >&2
            fi
            usage
            exit 2 ;;
        *) die "could not read the profiles in $PROFILES_PY: $(head -c 1000 "$WORK/resolve.err")" ;;
    esac
fi
if [[ -n "$MIRROR" && ! -d "$MIRROR" && ! "$MIRROR" =~ ^https?:// ]]; then
    die "--mirror: $MIRROR is neither a directory nor an http(s) URL"
fi

# What: REPO (a Hugging Face dataset id), the globs of its files there, and
# its profile, if it has one (PROFILE_NAME empty: none).
PROFILE_NAME=
EMB_GLOB=-
OLD_FAMILY=0   # the withdrawn 6+ family: its messages as they always were
if [[ -n "$NAME" ]]; then
    [[ -z "$SUBSET" ]] || bad_usage "--subset is for the LAION-Aesthetics 6+ family, fetched without --source NAME"
    IFS=$'\t' read -r PROFILE_NAME REPO FILES_GLOB EMB_GLOB dest_name < "$WORK/resolved"
    [[ "$PROFILE_NAME" != - ]] || PROFILE_NAME=
    LABEL=$REPO
    DEST=${DEST:-data/$dest_name}
else
    SUBSET=${SUBSET:-6plus}
    [[ " $SUBSETS " == *" $SUBSET "* ]] || bad_usage "--subset: '$SUBSET' is not one of: $SUBSETS"
    OLD_FAMILY=1
    LABEL=improved_aesthetics_$SUBSET
    REPO=ChristophSchuhmann/$LABEL
    FILES_GLOB="data/*.parquet"
    DEST=${DEST:-data/$LABEL}
fi
if [[ $EMBEDDINGS == 1 ]]; then
    [[ -z "$MIRROR" ]] || bad_usage "--embeddings: only from Hugging Face (not with --mirror)"
    [[ "$EMB_GLOB" != - ]] || die "--embeddings: ${PROFILE_NAME:-$REPO} has no embedding files known here \
(a profile's hf_embeddings in datasette_laion/profiles.py: pd12m and datacomp-1b have them)"
else
    EMB_GLOB=-
fi
command -v curl >/dev/null || [[ -d "$MIRROR" ]] || die "curl not found"

sha256() {
    if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1
    else shasum -a 256 "$1" | cut -d' ' -f1; fi
}
size_of() { wc -c < "$1" | tr -d ' '; }

LIST=$WORK/list   # one "NAME<TAB>SHA256 or -<TAB>SIZE or -<TAB>WHERE" line per file
: > "$LIST"

# Checks FILE against SIZE and SHA256 ("-": unknown); prints what it found.
verify() {
    local file=$1 want=$2 size=$3 name=$4 got
    if [[ "$size" != - ]]; then
        got=$(size_of "$file")
        if [[ "$got" != "$size" ]]; then
            echo "error: $name: size is $got bytes, the listing says $size" >&2
            return 1
        fi
    fi
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

# The value of header NAME in the last response of a curl -D dump (empty: none).
last_header() {
    awk -v n="$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')" '
        /^HTTP\// { v = "" }
        { i = index($0, ":"); if (i && tolower(substr($0, 1, i - 1)) == n) { v = substr($0, i + 1); gsub(/^[ \t]+|[ \t\r]+$/, "", v) } }
        END { print v }' "$2"
}

# Requests to a Hugging Face (compatible) hub carry HF_TOKEN, from a file (not
# in curl's arguments, where ps would show it); a mirror's do not.
AUTH=()
use_hub_token() {
    [[ -n "${HF_TOKEN:-}" ]] || return 0
    (umask 077 && printf 'Authorization: Bearer %s\n' "$HF_TOKEN" > "$WORK/auth")
    AUTH=(-H "@$WORK/auth")
}

# GET URL into FILE (small things: listings, checksum lists), its headers into
# $WORK/headers. Prints the HTTP status ("000" when nothing answered) and
# fails on no answer at all.
fetch_small() {
    local url=$1 out=$2 code rc=0
    code=$(curl -sS -L --connect-timeout "$CONNECT_TIMEOUT" --max-time 60 ${AUTH[@]+"${AUTH[@]}"} \
        -D "$WORK/headers" -o "$out" -w '%{http_code}' "$url" 2>"$WORK/curl.err") || rc=$?
    echo "${code:-000}"
    if [[ $rc -ne 0 && "${code:-000}" == 000 ]]; then
        return 1
    fi
}

unreachable() {
    local why
    why=$(head -c 300 "$WORK/curl.err" | tr '\n' ' ' | sed 's/ *$//')
    [[ $OLD_FAMILY == 1 ]] && die "cannot reach $1 ($why). Check the network, or: $WITHDRAWN"
    die "cannot reach $1 ($why). Check the network${HF_ENDPOINT:+ (and HF_ENDPOINT)}."
}

# What LAION withdrew, said after a refusal for one of those datasets; and
# that a --source NAME that looks like a path is none here.
withdrawn_note() {
    if [[ "$NAME" == */* && -d "${NAME%%/*}" ]]; then
        printf " (Nor is there a directory %s here.)" "$NAME"
    fi
    case "$REPO" in
        ChristophSchuhmann/*|laion/aesthetics*|laion/laion2B-*|laion/laion5B-*|laion/laion1B-*|laion/laion400m*)
            echo " LAION withdrew LAION-5B and the datasets made from it, LAION-Aesthetics included, in December 2023;" \
                "Re-LAION-5B (https://laion.ai/blog/relaion-5b/) is its cleaned successor: --source relaion2b-en-research-safe (gated)," \
                "or --mirror URL_OR_DIR for a copy of this one." ;;
    esac
}

# The hub said no (HTTP CODE for URL; its headers in HEADERS): say why, and
# what to do about it.
hub_refused() {
    local code=$1 url=$2 ecode emsg page="$ENDPOINT/datasets/$REPO" tokens="$ENDPOINT/settings/tokens"
    ecode=$(last_header X-Error-Code "$3")
    emsg=$(last_header X-Error-Message "$3")
    if [[ $OLD_FAMILY == 1 ]]; then
        case "$code" in
            401|403|404|410|451) die "$REPO is not available from $ENDPOINT (HTTP $code for $url). $WITHDRAWN" ;;
        esac
    fi
    if [[ "$emsg" == "Access to this resource is disabled." ]]; then
        die "$REPO is disabled on $ENDPOINT (HTTP $code for $url): its owner or the hub took it down.$(withdrawn_note)"
    fi
    case "$code" in
        401|403)
            if [[ -z "${HF_TOKEN:-}" && "$ecode" == RepoNotFound ]]; then
                die "no dataset $REPO on $ENDPOINT, or it is private (HTTP $code for $url; without HF_TOKEN the hub" \
                    "gives the same answer for both). Check the name (\`datasette laion profiles\` lists the profiles'" \
                    "datasets); for a private dataset, set HF_TOKEN.$(withdrawn_note)"
            elif [[ -z "${HF_TOKEN:-}" ]]; then
                die "$REPO is gated, and no HF_TOKEN is set (HTTP $code for $url). Request access at $page with your" \
                    "Hugging Face account, then set HF_TOKEN to a token of that account ($tokens) and run this again."
            elif [[ "$code" == 401 && "$ecode" != GatedRepo ]]; then
                die "HF_TOKEN was not accepted by $ENDPOINT (HTTP 401 for $url${emsg:+: $emsg}). Set it to a valid token" \
                    "($tokens) of an account that has access to $REPO ($page)."
            fi
            die "access to $REPO was not granted to the account of HF_TOKEN (HTTP $code for $url). Request access at" \
                "$page with that account and run this again once it is granted (some datasets grant it at once," \
                "others after a review), or set HF_TOKEN to a token of an account that has access ($tokens)." ;;
        404|410)
            [[ "$ecode" != EntryNotFound ]] || die "$REPO on $ENDPOINT has nothing at $url (HTTP $code): the folder" \
                "of its files may have moved (hf_files in datasette_laion/profiles.py)"
            die "no dataset $REPO on $ENDPOINT (HTTP $code for $url). Check the name: \`datasette laion profiles\`" \
                "lists the profiles' datasets.$(withdrawn_note)" ;;
        451) die "$REPO is not available from $ENDPOINT for legal reasons (HTTP 451 for $url).$(withdrawn_note)" ;;
        *) die "unexpected answer from $url: HTTP $code${emsg:+ ($emsg)}" ;;
    esac
}

# The folder a glob's files are under ("" for the repository's top).
glob_folder() {
    local prefix=${1%%[*?[]*}
    [[ "$prefix" == */* ]] && echo "${prefix%/*}" || echo ""
}

# Appends the files under FOLDER of REPO on the hub that match GLOB (each
# GLOB PREFIX pair: the list names them PREFIX + their file name) to the list,
# following the listing's pages.
list_hub() {
    local folder=$1; shift
    local url="$ENDPOINT/api/datasets/$REPO/tree/main${folder:+/$folder}?recursive=true" pages=0 code
    echo "Listing $REPO${folder:+ $folder/} on $ENDPOINT" >&2
    while [[ -n "$url" ]]; do
        pages=$((pages + 1))
        [[ $pages -le $MAX_PAGES ]] || die "the listing of $REPO goes on past $MAX_PAGES pages: stopped"
        code=$(fetch_small "$url" "$WORK/page.json") || unreachable "$ENDPOINT"
        [[ "$code" == 200 ]] || hub_refused "$code" "$url" "$WORK/headers"
        "$PY" - "$WORK/page.json" "$WORK/headers" "$url" "$WORK/next" \
            "$ENDPOINT/datasets/$REPO/resolve/main" "$@" >> "$LIST" <<'PY' || die "could not read the file list from $url"
import fnmatch, json, os, re, sys, urllib.parse

page, headers, url, next_file, resolve, *pairs = sys.argv[1:]
entries = json.load(open(page, encoding="utf-8"))
if not isinstance(entries, list):
    sys.exit(f"not a list of files: {str(entries)[:200]}")
for entry in entries:
    path = entry.get("path", "")
    if entry.get("type", "file") != "file":
        continue
    for glob, prefix in zip(pairs[::2], pairs[1::2]):
        if fnmatch.fnmatchcase(path, glob):
            lfs = entry.get("lfs") or {}
            sha = str(lfs.get("oid") or "-")
            sha = sha[len("sha256:"):] if sha.startswith("sha256:") else sha
            size = lfs.get("size", entry.get("size"))
            size = str(int(size)) if size is not None else "-"
            print(f"{prefix}{os.path.basename(path)}\t{sha}\t{size}\t{resolve}/{urllib.parse.quote(path)}")
            break
# The next page: the last response's Link header, rel="next".
lines = open(headers, encoding="latin-1").read().splitlines()
starts = [i for i, line in enumerate(lines) if line.startswith("HTTP/")]
link = ""
for line in lines[starts[-1] if starts else 0:]:
    name, _, value = line.partition(":")
    if name.strip().lower() == "link":
        found = re.search(r'<([^>]*)>\s*;\s*rel="?next"?', value)
        link = urllib.parse.urljoin(url, found.group(1)) if found else link
open(next_file, "w").write(link)
PY
        url=$(cat "$WORK/next")
    done
}

# 2. The list of files, with their checksums (and sizes) when the source publishes them.
if [[ -n "$MIRROR" && -d "$MIRROR" ]]; then
    MODE=dir
    echo "Listing $MIRROR" >&2
    while IFS= read -r -d '' file; do
        name=$(basename "$file")
        want=-
        if [[ -f "$file.sha256" ]]; then
            want=$(awk '{ print $1; exit }' "$file.sha256")
        elif [[ -f "$MIRROR/SHA256SUMS" ]]; then
            want=$(sum_for "$MIRROR/SHA256SUMS" "$name")
        fi
        printf '%s\t%s\t-\t%s\n' "$name" "${want:--}" "$file" >> "$LIST"
    done < <(find "$MIRROR" -maxdepth 2 -name '*.parquet' -type f -print0 | sort -z)
    [[ -s "$LIST" ]] || die "$MIRROR has no .parquet files (looked in it and its subdirectories, e.g. data/)"
else
    MODE=hub
    if [[ -n "$MIRROR" ]]; then
        BASE=${MIRROR%/}
        if [[ "$BASE" != "$HF_ENDPOINT_DEFAULT" ]]; then
            # A plain mirror: the files beside a SHA256SUMS list.
            code=$(fetch_small "$BASE/SHA256SUMS" "$WORK/SHA256SUMS") || unreachable "$BASE"
            if [[ "$code" == 200 ]]; then
                MODE=sums
                while read -r want path; do
                    path=${path#\*}
                    [[ "$path" == *.parquet ]] || continue
                    printf '%s\t%s\t-\t%s\n' "$(basename "$path")" "$want" "$BASE/$path" >> "$LIST"
                done < "$WORK/SHA256SUMS"
                [[ -s "$LIST" ]] || die "$BASE/SHA256SUMS lists no .parquet files"
            fi
        fi
        ENDPOINT=$BASE   # else a Hugging Face compatible endpoint
    fi
    if [[ $MODE == hub ]]; then
        # The hub's API lists the files with the size and sha256 of each (from
        # its LFS pointer). One listing when both globs are in one folder.
        use_hub_token
        files_folder=$(glob_folder "$FILES_GLOB")
        if [[ "$EMB_GLOB" == - ]]; then
            list_hub "$files_folder" "$FILES_GLOB" ""
        else
            emb_folder=$(glob_folder "$EMB_GLOB")
            if [[ "$emb_folder" == "$files_folder" ]]; then
                list_hub "$files_folder" "$FILES_GLOB" "" "$EMB_GLOB" "embeddings/"
            else
                list_hub "$files_folder" "$FILES_GLOB" ""
                list_hub "$emb_folder" "$EMB_GLOB" "embeddings/"
            fi
        fi
        [[ $OLD_FAMILY == 0 || -s "$LIST" ]] || die "$REPO on $ENDPOINT lists no parquet files. $WITHDRAWN"
        grep -qv '^embeddings/' "$LIST" || die "$REPO on $ENDPOINT lists no files matching $FILES_GLOB on its main branch"
        if [[ "$EMB_GLOB" != - ]] && ! grep -q '^embeddings/' "$LIST"; then
            die "$REPO on $ENDPOINT lists no files matching $EMB_GLOB (its embeddings) on its main branch"
        fi
    fi
fi

# In name order; --files N: the first N of the metadata files (and of the embedding files).
for kind in metadata embeddings; do
    awk -F '\t' -v kind=$kind '($1 ~ /^embeddings\//) == (kind == "embeddings")' "$LIST" \
        | LC_ALL=C sort -t $'\t' -k1,1 | awk -v n="${FILES:-0}" 'n == 0 || NR <= n'
done > "$WORK/chosen"
total=$(grep -cv '^embeddings/' "$LIST" || true)
dupes=$(cut -f1 "$WORK/chosen" | LC_ALL=C sort | uniq -d | head -3 | tr '\n' ' ')
[[ -z "$dupes" ]] || die "$REPO has files of the same name in different folders (${dupes% }): fetch them by hand"
count=$(wc -l < "$WORK/chosen" | tr -d ' ')
if [[ -n "$FILES" ]]; then
    echo "--files $FILES: $(grep -cv '^embeddings/' "$WORK/chosen" || true) of the $total file(s)" >&2
elif [[ $OLD_FAMILY == 1 && "$SUBSET" == 6plus && "$total" != 7 ]]; then
    echo "warning: the 6+ set was published as 7 files; this source has $total" >&2
fi
bytes=$(awk -F '\t' '$3 != "-" { s += $3; n++ } END { if (n) printf "%.0f", s }' "$WORK/chosen")
if [[ -n "$bytes" ]]; then
    echo "$count file(s), $(awk -v b="$bytes" 'BEGIN { if (b >= 1e9) printf "%.1f GB", b / 1e9; else printf "%.1f MB", b / 1e6 }') in all, into $DEST" >&2
fi

mkdir -p "$DEST"
if grep -q '^embeddings/' "$WORK/chosen"; then mkdir -p "$DEST/embeddings"; fi

# 3. Each file: skipped when already there and intact, else copied or
#    downloaded to NAME.part (resumed if a previous run stopped), checked, and
#    only then renamed to NAME: DEST never holds a partial or corrupt NAME.
failed=0
while IFS=$'\t' read -r name want size where; do
    target="$DEST/$name"
    part="$DEST/$name.part"
    if [[ -f "$target" ]]; then
        if verify "$target" "$want" "$size" "$name" 2>/dev/null; then
            echo "  $name: already there" >&2
            continue
        fi
        echo "  $name: present but not the listed file: fetching again" >&2
        rm -f "$target"
    fi
    if [[ $MODE == dir ]]; then
        echo "$name: copying from $where" >&2
        rm -f "$part"
        ln "$where" "$part" 2>/dev/null || cp "$where" "$part"
    else
        if [[ "$size" != - && -f "$part" && $(size_of "$part") -gt $size ]]; then
            echo "  $name: $name.part is larger than the listed file: starting again" >&2
            rm -f "$part"
        fi
        rc=0
        code=
        if [[ "$size" != - && -f "$part" && $(size_of "$part") -eq $size ]]; then
            echo "$name: downloaded by an earlier run" >&2
        else
            echo "$name: downloading $where" >&2
            code=$(curl -fL --connect-timeout "$CONNECT_TIMEOUT" --speed-limit 10240 --speed-time 60 \
                --retry 3 --retry-delay 5 ${AUTH[@]+"${AUTH[@]}"} -D "$WORK/headers" -w '%{http_code}' \
                -C - -o "$part" "$where") || rc=$?
            if [[ $rc -eq 33 ]]; then   # the server cannot resume: start again
                rm -f "$part"
                rc=0
                code=$(curl -fL --connect-timeout "$CONNECT_TIMEOUT" --speed-limit 10240 --speed-time 60 \
                    --retry 3 --retry-delay 5 ${AUTH[@]+"${AUTH[@]}"} -D "$WORK/headers" -w '%{http_code}' \
                    -o "$part" "$where") || rc=$?
            fi
        fi
        code=${code: -3}   # (the last attempt's, after --retry)
        if [[ $rc -ne 0 && "$code" == 416 && -f "$part" ]]; then
            rc=0   # nothing left to send after what NAME.part holds: check it
        fi
        if [[ $rc -ne 0 ]]; then
            if [[ $MODE == hub && ( "$code" == 401 || "$code" == 403 ) ]]; then
                hub_refused "$code" "$where" "$WORK/headers"   # so would every other file be
            fi
            echo "error: $name: download failed ($([[ "$code" =~ ^[1-9] ]] && echo "HTTP $code, ")curl exit $rc); run this again to resume" >&2
            failed=$((failed + 1))
            continue
        fi
    fi
    if verify "$part" "$want" "$size" "$name"; then
        mv -f "$part" "$target"
    else
        rm -f "$part"
        failed=$((failed + 1))
    fi
done < "$WORK/chosen"
[[ $failed -eq 0 ]] || die "$failed of $count file(s) not fetched; DEST holds only complete, checked files. Run this again."
echo "Fetched $count file(s) of $LABEL into $DEST. Next:" >&2
if [[ $OLD_FAMILY == 1 ]]; then
    echo "  datasette laion build laion-aesthetic-6pls.db $DEST" >&2
elif [[ -n "$PROFILE_NAME" ]]; then
    echo "  datasette laion build $PROFILE_NAME.db $DEST --profile $PROFILE_NAME" >&2
else
    echo "  datasette laion build ${REPO#*/}.db $DEST" >&2
fi
