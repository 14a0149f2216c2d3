#!/usr/bin/env bash
# Create .venv (if missing) and install casstore with its test tools into it.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
LOG=.venv/pip-install.log
if ! .venv/bin/python -m pip install --quiet -e '.[test]' >"$LOG" 2>&1; then
    cat "$LOG" >&2
    echo "setup: pip install failed (log above)" >&2
    exit 1
fi
.venv/bin/python -c 'import casstore, click, httpx, pydantic, zstandard, blake3, rich' \
    || { echo "setup: casstore did not install" >&2; exit 1; }
# An editable install leaves casstore's bytecode to be written on first use, which never
# happens where PYTHONDONTWRITEBYTECODE is set: every `cas` would then compile its ~60
# modules again (about 80 ms here). Compile them once now (pyc files are git-ignored).
.venv/bin/python -m compileall -q casstore >/dev/null
