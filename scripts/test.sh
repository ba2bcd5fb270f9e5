#!/usr/bin/env bash
# usage: scripts/test.sh [PYTEST_ARGS...]
# Sets up everything the tests need on a fresh machine (virtualenv in .venv,
# the package with its test extras), then runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
exec .venv/bin/python -m pytest "$@"
