#!/usr/bin/env bash
# usage: scripts/deploy.sh [--app NAME] [--region CODE] [--org ORG] [--volume NAME] [--volume-size GB] [--dry-run OUTDIR]
# Deploys the site to Fly: the plugin as a wheel built from this working tree,
# the project's metadata and settings, and ./fly.toml. Creates the app, its
# volume and the DATASETTE_SECRET secret when they do not exist yet, then runs
# `flyctl deploy` (remote build; no local Docker). The database is not part of
# the deployment: upload it with scripts/upload.sh. Defaults come from
# fly.toml (app, primary_region, the volume's source); --volume-size 12.
# --dry-run OUTDIR writes the deployment directory (Dockerfile, fly.toml,
# metadata.json, wheels/, constraints.txt) and stops: no flyctl, no network.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${DEPLOY_PYTHON:-$ROOT/.venv/bin/python}
FLYCTL=${FLYCTL:-flyctl}

# Where the database lives on the volume. Not /data itself: nothing here globs
# /data/*.db any more, but a directory of its own keeps the upload's temporary
# files and any other file on the volume away from the served one.
# scripts/upload.sh writes to the same place.
DATA_DIR=/data/laion

usage() { sed -n '2p' "$0" | sed 's/^# \{0,1\}//' >&2; }
die() { echo "error: $*" >&2; exit 1; }
bad_usage() { echo "error: $*" >&2; usage; exit 2; }

toml_value() {  # toml_value KEY: the first `KEY = "value"` line of fly.toml
    sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\"\([^\"]*\)\".*/\1/p" "$ROOT/fly.toml" | head -n 1
}

APP=$(toml_value app)
REGION=$(toml_value primary_region)
VOLUME=$(toml_value source)
VOLUME_SIZE=12
ORG=personal
DRY_RUN=
while [[ $# -gt 0 ]]; do
    case "$1" in
        --app|--region|--org|--volume|--volume-size|--dry-run)
            [[ $# -ge 2 && -n "$2" ]] || bad_usage "$1 needs a value"
            case "$1" in
                --app) APP=$2 ;;
                --region) REGION=$2 ;;
                --org) ORG=$2 ;;
                --volume) VOLUME=$2 ;;
                --volume-size) VOLUME_SIZE=$2 ;;
                --dry-run) DRY_RUN=$2 ;;
            esac
            shift 2 ;;
        *) bad_usage "unknown argument: $1" ;;
    esac
done
[[ "$APP" =~ ^[a-z0-9][a-z0-9-]{0,62}$ ]] || bad_usage "--app: '$APP' is not a Fly app name (lowercase letters, digits and -)"
[[ "$REGION" =~ ^[a-z]{3}$ ]] || bad_usage "--region: '$REGION' is not a Fly region code (e.g. sjc, iad, ams)"
[[ "$VOLUME" =~ ^[a-z0-9_]{1,30}$ ]] || bad_usage "--volume: '$VOLUME' is not a Fly volume name (lowercase letters, digits and _, at most 30)"
[[ "$VOLUME_SIZE" =~ ^[1-9][0-9]*$ ]] || bad_usage "--volume-size: '$VOLUME_SIZE' is not a whole number of GB"
[[ "$ORG" =~ ^[A-Za-z0-9_-]+$ ]] || bad_usage "--org: '$ORG' is not an organization slug"
[[ -x "$PY" ]] || die "$PY not found; run scripts/demo.sh or scripts/test.sh first to set up .venv (or set DEPLOY_PYTHON)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/datasette-laion-deploy.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Writes the complete deployment directory OUT (which must not exist yet).
generate() {
    local out=$1
    # 1. The plugin, exactly as this working tree has it: a wheel built from a
    #    clean copy of the tree (an in-tree build would leave build/ and could
    #    ship stale files from it), installed in the image from the file itself,
    #    so the image cannot pick up another version from anywhere else.
    mkdir -p "$WORK/src" "$WORK/wheels"
    tar -C "$ROOT" -cf - --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
        --exclude='*.egg-info' --exclude=__pycache__ --exclude=./.pytest_cache --exclude=./.hypothesis \
        --exclude=./.ruff_cache --exclude=./data --exclude='*.db' --exclude='*.parquet' --exclude='*.part' . \
        | tar -C "$WORK/src" -xf -
    local isolation=(--no-build-isolation)
    # The build backend comes from the environment when it is recent enough
    # (no network needed), otherwise pip fetches it as pyproject.toml asks.
    "$PY" -c 'import sys, setuptools; sys.exit(int(setuptools.__version__.split(".")[0]) < 77)' 2>/dev/null \
        || isolation=()
    "$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps ${isolation[@]+"${isolation[@]}"} \
        --wheel-dir "$WORK/wheels" "$WORK/src" >&2 \
        || die "could not build the wheel of $ROOT (see pip's output above)"
    local wheels=("$WORK"/wheels/datasette_laion-*.whl)
    [[ ${#wheels[@]} -eq 1 && -f "${wheels[0]}" ]] || die "expected one datasette_laion wheel, found: ${wheels[*]}"
    local wheel=${wheels[0]} wheel_name
    wheel_name=$(basename "$wheel")

    # 2. Metadata, settings and the pinned dependencies, from the same tree.
    #    The plugin configuration tells the server where the database and its
    #    inspect file are; it opens the database once, immutable, with those
    #    counts, and starts without it (saying "not uploaded yet") on an empty
    #    volume: no `-i` (which stops the server when the file is missing, so
    #    nobody could ssh in to upload it) and no /data/*.db glob (which opened
    #    the database a second time and needed an `allow: false` to hide it).
    local settings=()
    mapfile -d '' settings < <(PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" - "$WORK" "$DATA_DIR" <<'PY'
import json, sys
from pathlib import Path
from datasette_laion import site

work, data_dir = Path(sys.argv[1]), sys.argv[2]
metadata = site.metadata() or {}
plugins = metadata["plugins"] = dict(metadata.get("plugins") or {})
config = plugins["datasette-laion"] = dict(plugins.get("datasette-laion") or {})
config["database_path"] = f"{data_dir}/{site.DATABASE_FILE}"
config["inspect_file"] = f"{data_dir}/inspect.json"
(work / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
sys.stdout.write("".join(arg + "\0" for arg in site.setting_args()))
PY
)
    [[ ${#settings[@]} -gt 0 ]] || die "could not read the site's settings from datasette_laion.site"
    # The versions this tree is developed and tested with, as pip constraints:
    # the image resolves the wheel's dependencies to exactly these.
    "$PY" -m pip freeze --disable-pip-version-check --exclude-editable 2>/dev/null \
        | grep -E '^[A-Za-z0-9_.-]+==' | grep -viE '^datasette[-_]laion==' > "$WORK/constraints.txt" || true

    local version sha
    version=$(echo "$wheel_name" | cut -d- -f2)
    sha=$(sha256 "$wheel")

    # 3. `datasette publish fly` writes the Dockerfile and metadata.json. With
    #    --generate-dir it calls neither flyctl nor Fly's API, and without
    #    --create-volume it adds no /data/*.db glob; no --extra-options, so
    #    its one other defect (--setting glued to --extra-options with no
    #    space) cannot happen; the settings go through its own --setting.
    "$PY" -m datasette publish fly --app "$APP" --generate-dir "$out" \
        --metadata "$WORK/metadata.json" \
        --install "wheels/$wheel_name" \
        --version-note "datasette-laion $version, wheel sha256 ${sha:0:12}" \
        "${settings[@]}" >&2 \
        || die "datasette publish fly --generate-dir failed (see above)"

    # 4. Its output, fixed up where it is wrong for us, then checked.
    mkdir -p "$out/wheels"
    cp "$wheel" "$out/wheels/"
    cp "$WORK/constraints.txt" "$out/constraints.txt"
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" - "$out" "$ROOT/fly.toml" "$APP" "$REGION" "$VOLUME" "$VOLUME_SIZE" "$DATA_DIR" "$wheel_name" <<'PY' \
        || die "the generated deployment in $out is not as this script expects (see above); nothing was deployed"
import json, re, shlex, sys
from pathlib import Path
from datasette.utils import value_as_boolean

out, project_toml, app, region, volume, size, data_dir, wheel = sys.argv[1:]
out = Path(out)
errors = []

# Dockerfile:
# - publish writes the signing secret into the image (ENV DATASETTE_SECRET
#   '...'), readable by anyone who can pull the image or read this directory.
#   Drop it: the secret is a Fly secret (see below), which the machine gets as
#   the same environment variable at run time.
# - pin the dependencies to constraints.txt;
# - serve with `datasette laion serve`, the same options, and one worker
#   process per vCPU of the [[vm]] in fly.toml (a `datasette serve` uses one
#   core, however many the machine has);
# - `exec` the server so that it, not /bin/sh, receives Fly's SIGINT.
project_toml_text = Path(project_toml).read_text()
vm_size = re.search(r'^\s*size\s*=\s*"([^"]+)"', project_toml_text, re.M)
vm_cpus = re.search(r"-(\d+)x$", vm_size.group(1)) if vm_size else None
workers = str(min(4, int(vm_cpus.group(1)))) if vm_cpus else None
if workers is None:
    errors.append(f"fly.toml: no [[vm]] size such as \"shared-cpu-2x\" to size the workers by ({vm_size and vm_size.group(1)!r})")
    workers = "1"
dockerfile = out / "Dockerfile"
lines = [l for l in dockerfile.read_text().splitlines() if not l.startswith("ENV DATASETTE_SECRET")]
for i, line in enumerate(lines):
    if line.startswith("RUN pip install "):
        lines[i] = line.replace("RUN pip install ", "RUN pip install --no-cache-dir -c constraints.txt ", 1)
    if line.startswith("CMD datasette serve "):
        lines[i] = f"CMD exec datasette laion serve --workers {workers} " + line[len("CMD datasette serve "):]
dockerfile.write_text("\n".join(lines) + "\n")

# fly.toml: publish writes the old [[services]] format with a TCP check; ship
# the project's own, with only the values this deployment was asked for.
toml = Path(project_toml).read_text()
for key, value in (("app", app), ("primary_region", region), ("source", volume), ("initial_size", f"{size}gb")):
    toml, n = re.subn(rf'^(\s*{key}\s*=\s*)"[^"]*"', lambda m: f'{m.group(1)}"{value}"', toml, count=1, flags=re.M)
    if n != 1:
        errors.append(f"fly.toml: no {key} = \"...\" line to set")
(out / "fly.toml").write_text(toml)

# Checks: what the image will run.
text = dockerfile.read_text()
if "DATASETTE_SECRET" in text:
    errors.append("Dockerfile still mentions DATASETTE_SECRET")
runs = [l for l in text.splitlines() if l.startswith("RUN pip install ")]
if len(runs) != 1 or f"wheels/{wheel}" not in shlex.split(runs[0]) or not (out / "wheels" / wheel).is_file():
    errors.append(f"Dockerfile does not install wheels/{wheel} (pip line: {runs})")
cmds = [l for l in text.splitlines() if l.startswith("CMD ")]
argv = shlex.split(cmds[-1][len("CMD "):]) if cmds else []
if argv[:6] != ["exec", "datasette", "laion", "serve", "--workers", workers]:
    errors.append(f"unexpected CMD: {cmds}")
from datasette_laion import site
wanted = site.settings()
got = {}
i = 6
positional = []
while i < len(argv):
    arg = argv[i]
    if arg == "--setting":
        if i + 2 >= len(argv) or argv[i + 1].startswith("--"):
            errors.append(f"--setting without a name and value at {argv[i:i+3]}")
            break
        got[argv[i + 1]] = argv[i + 2]
        i += 3
    elif arg in ("--cors",):
        i += 1
    elif arg.startswith("--"):
        if arg in ("-i", "--immutable", "--static", "--plugins-dir", "--template-dir", "--create", "--crossdb"):
            errors.append(f"CMD has {arg}")
        i += 2
    elif arg == "-i":
        errors.append("CMD opens a database with -i")
        i += 2
    else:
        positional.append(arg)
        i += 1
if positional:
    errors.append(f"CMD opens database files directly: {positional}")
for name, value in wanted.items():
    if name not in got:
        errors.append(f"setting {name} missing from CMD")
    elif isinstance(value, bool):
        if value_as_boolean(got[name]) != value:
            errors.append(f"setting {name} is {got[name]!r} in CMD, not {value!r}")
    elif str(value) != got[name]:
        errors.append(f"setting {name} is {got[name]!r} in CMD, not {value!r}")
for name in got.keys() - wanted.keys():
    errors.append(f"CMD has a setting the site does not: {name}")
metadata = json.loads((out / "metadata.json").read_text())
config = metadata.get("plugins", {}).get("datasette-laion", {})
if config.get("database_path") != f"{data_dir}/{site.DATABASE_FILE}":
    errors.append(f"metadata.json: database_path is {config.get('database_path')!r}")
for path in sorted(out.rglob("*")):
    if path.is_file() and b"DATASETTE_SECRET" in path.read_bytes():
        errors.append(f"{path.relative_to(out)} mentions DATASETTE_SECRET")
for error in errors:
    print(f"error: {error}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
}

sha256() {
    if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1
    else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

if [[ -n "$DRY_RUN" ]]; then
    [[ ! -e "$DRY_RUN" ]] || die "$DRY_RUN already exists; give a new directory to --dry-run"
    generate "$DRY_RUN"
    echo "Wrote the deployment of app $APP to $DRY_RUN:" >&2
    (cd "$DRY_RUN" && find . -type f | sort | sed 's|^\./|  |') >&2
    echo "Deploy it with: $FLYCTL deploy $DRY_RUN --config $DRY_RUN/fly.toml --app $APP --remote-only --ha=false" >&2
    exit 0
fi

command -v "$FLYCTL" >/dev/null || die "$FLYCTL not found: install it (https://fly.io/docs/flyctl/install/) or set FLYCTL"
"$FLYCTL" auth whoami >/dev/null 2>&1 || die "not logged in to Fly: run '$FLYCTL auth login' first"

OUT="$WORK/deploy"
generate "$OUT"

json_names() {  # the "name" (any case) of each object in a JSON array on stdin
    "$PY" -c 'import json, sys
for item in json.load(sys.stdin) or []:
    print(next((v for k, v in item.items() if k.lower() == "name"), ""))'
}

# The app.
if status_err=$("$FLYCTL" status --app "$APP" --json 2>&1 >/dev/null); then
    echo "==> app $APP exists" >&2
elif grep -qiE 'could not find app|not found|could not resolve app' <<<"$status_err"; then
    echo "==> creating app $APP in organization $ORG" >&2
    "$FLYCTL" apps create "$APP" --org "$ORG" >&2 || die "could not create app $APP (name taken? try --app with another name)"
else
    die "flyctl status --app $APP failed: $status_err"
fi

# The volume (one per machine; this is the first machine's).
volumes=$("$FLYCTL" volumes list --app "$APP" --json) || die "could not list the volumes of $APP"
if json_names <<<"$volumes" | grep -qxF "$VOLUME"; then
    echo "==> volume $VOLUME exists" >&2
else
    echo "==> creating volume $VOLUME ($VOLUME_SIZE GB) in $REGION" >&2
    "$FLYCTL" volumes create "$VOLUME" --app "$APP" --region "$REGION" --size "$VOLUME_SIZE" --yes >&2 \
        || die "could not create volume $VOLUME in $REGION"
fi

# The secret that signs Datasette's cookies and tokens: a Fly secret, set once
# and kept across deploys (a new one would sign every visitor out). Passed on
# stdin, so it is in no file, no argument list and no image layer.
secrets=$("$FLYCTL" secrets list --app "$APP" --json) || die "could not list the secrets of $APP"
if json_names <<<"$secrets" | grep -qxF DATASETTE_SECRET; then
    echo "==> secret DATASETTE_SECRET is set" >&2
else
    echo "==> setting secret DATASETTE_SECRET (generated)" >&2
    "$PY" -c 'import secrets; print("DATASETTE_SECRET=" + secrets.token_hex(32))' \
        | "$FLYCTL" secrets import --app "$APP" --stage >&2 \
        || die "could not set secret DATASETTE_SECRET"
fi

# The deployment itself: the directory generated above, with its fly.toml.
# --remote-only: Fly's builder builds the image (no local Docker needed).
# --ha=false: one machine, on the one volume; scale out deliberately (README).
echo "==> deploying $APP" >&2
"$FLYCTL" deploy "$OUT" --app "$APP" --config "$OUT/fly.toml" --remote-only --ha=false \
    || die "flyctl deploy failed (see above)"
echo "Deployed https://$APP.fly.dev/ . Next, if the volume is empty:" >&2
echo "  scripts/upload.sh laion-aesthetic-6pls.db inspect.json --app $APP" >&2
