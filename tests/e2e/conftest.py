"""End-to-end tests run the installed ``cas`` command in real processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _find_cas() -> str:
    beside = Path(sys.executable).parent / "cas"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("cas")
    assert found, "the `cas` command is not installed (run the README's set-up command)"
    return found


@pytest.fixture(scope="session")
def cas_exe() -> str:
    return _find_cas()


@pytest.fixture
def env() -> dict[str, str]:
    """The environment for child processes: no CAS_STORE leaking in from outside."""
    e = {k: v for k, v in os.environ.items() if k not in ("CAS_STORE", "CAS_DEBUG")}
    e["PYTHONUNBUFFERED"] = "1"
    return e


@pytest.fixture
def run(cas_exe, env, tmp_path):
    """``run(*args, input=b"", cwd=tmp_path)``: run cas to completion, return CompletedProcess."""

    def run(*args: object, input: bytes | None = None, cwd: Path | None = None, check=True):
        proc = subprocess.run(
            [cas_exe, *map(str, args)],
            input=input,
            capture_output=True,
            cwd=cwd or tmp_path,
            env=env,
            timeout=120,
        )
        if check:
            assert proc.returncode == 0, (args, proc.returncode, proc.stderr.decode())
        return proc

    return run
