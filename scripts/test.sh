#!/usr/bin/env bash
# The whole test run: lint, types, and every test (slow ones included: real model, real vLLM,
# real PostgreSQL). Run `bash scripts/setup.sh` once first.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/mypy bench  # the benchmark scripts are typed too
.venv/bin/python -P -m pytest -q -ra --timeout=1800 "$@"
