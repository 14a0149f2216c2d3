"""Fixtures for the run-log tests: no run link leaks in from the environment or between
tests, and the installed ``cas`` for the shell flow."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from casstore.meta.context import current_link


@pytest.fixture(autouse=True)
def _no_run_link(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No CAS_RUN/CAS_STEP/CAS_TENANT from outside; no link left set by a test."""
    for var in ("CAS_RUN", "CAS_STEP", "CAS_TENANT"):
        monkeypatch.delenv(var, raising=False)
    assert current_link() is None
    yield
    assert current_link() is None, "a test (or cas command) left a pipeline link set"


@pytest.fixture(scope="session")
def cas_exe() -> str:
    """The installed ``cas`` beside this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "cas"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("cas")
    assert found, "the `cas` command is not installed"
    return found


@pytest.fixture
def child_env() -> dict[str, str]:
    """An environment for child processes with no store or run variables from outside."""
    drop = {"CAS_STORE", "CAS_DEBUG", "CAS_RUN", "CAS_STEP", "CAS_TENANT"}
    return {k: v for k, v in os.environ.items() if k not in drop}
