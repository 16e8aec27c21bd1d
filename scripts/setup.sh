#!/usr/bin/env bash
# Set up Trellis in ./.venv with every extra, and prepare the embedded model (once, cached).
# Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[all]'
# The environment packs: each its own distribution, found through its entry point.
.venv/bin/python -m pip install -q -e packs/twc -e packs/cookingworld
.venv/bin/trellis model prepare
# Byte-compile Trellis now, so that the first run after set-up does not do it.
.venv/bin/python -m compileall -q -j 0 agent adapters memory planners trellis packs > /dev/null
