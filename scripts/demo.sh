#!/usr/bin/env bash
# The set-up-and-run command: install casstore into .venv, then run the main job offline
# on a copy of the example store (see scripts/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py
