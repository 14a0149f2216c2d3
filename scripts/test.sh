#!/usr/bin/env bash
# The test command: set up (venv, packages, system programs the tests need), lint, run
# every test. Used as-is by .ci/run on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The fetch tests run a real nginx on 127.0.0.1 (Debian package).
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test: installing nginx" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
    else
        echo "test: nginx is missing (apt-get install nginx); the nginx tests will skip" >&2
    fi
fi
.venv/bin/ruff check casstore tests scripts
.venv/bin/ruff format --check casstore tests scripts
# pytest exits 5 when it collected no test: that is a failure here too.
.venv/bin/python -m pytest -q "$@"
