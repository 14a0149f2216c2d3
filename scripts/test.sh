#!/usr/bin/env bash
# The test command: set up (venv, packages, system programs the tests need), lint, run
# every test. Used as-is by .ci/run on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check casstore tests scripts
.venv/bin/ruff format --check casstore tests scripts
# pytest exits 5 when it collected no test: that is a failure here too.
.venv/bin/python -m pytest -q "$@"
