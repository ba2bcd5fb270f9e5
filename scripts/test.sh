#!/usr/bin/env bash
# usage: scripts/test.sh [PYTEST_ARGS...]
# Sets up everything the tests need on a fresh machine (virtualenv in .venv,
# the package with its test extras, Chromium for the browser tests when run as
# root on Debian/Ubuntu), then runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
if ! command -v chromium >/dev/null 2>&1 && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium for the browser tests (apt-get)" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# Search by meaning's model tests need the clip extra (open_clip, torch). PyPI's
# torch is a CUDA build (~3 GB with its libraries); a CPU build (~200 MB) is
# enough, and is used when pip finds one on this machine's disk (its
# find-links), with the torchvision made for that torch (open_clip imports it;
# a newer one would bring a newer, CUDA, torch). Elsewhere the extra is left
# out and those tests skip.
TORCH_CPU=2.13.0
TORCHVISION=0.28.0
if .venv/bin/python -m pip install -q --no-index --no-deps "torch==$TORCH_CPU" 2>/dev/null; then
    .venv/bin/python -m pip install -q "torch==$TORCH_CPU" "torchvision==$TORCHVISION" -e '.[test,clip]'
else
    echo "no CPU build of torch $TORCH_CPU on this machine: the clip extra is left out (search by meaning's model tests skip)" >&2
    .venv/bin/python -m pip install -q -e '.[test]'
fi
exec .venv/bin/python -m pytest "$@"
