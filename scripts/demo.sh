#!/usr/bin/env bash
# usage: scripts/demo.sh [DEMO_OPTIONS...]
# Sets up a virtualenv in .venv with the package, builds a 50,000-row sample
# database (once; cached in ~/.cache/datasette-laion) and serves the full site
# on http://127.0.0.1:8001/. Options go to `datasette laion demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
exec .venv/bin/datasette laion demo "$@"
