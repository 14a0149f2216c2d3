"""Shared fixtures: isolation from any real store, a fresh store, and the ``cas`` CLI runner."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from casstore.cli import main
from casstore.store import Store

# Property tests share one store across examples on purpose (content addressing makes the
# examples independent), so the function-scoped-fixture health check does not apply.
_SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=_SUPPRESS,
    print_blob=True,
)
settings.register_profile(
    "dev",
    max_examples=60,
    deadline=None,
    database=DirectoryBasedExampleDatabase(
        str(Path(__file__).resolve().parent.parent / ".hypothesis" / "examples")
    ),
    suppress_health_check=_SUPPRESS,
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE")
    or ("ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev")
)


@pytest.fixture(autouse=True)
def _isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may find or touch a real store: no CAS_STORE, cwd inside tmp_path."""
    monkeypatch.delenv("CAS_STORE", raising=False)
    monkeypatch.delenv("CAS_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh store in ``tmp_path/.casstore`` (the working directory holds it)."""
    s = Store.init(tmp_path)
    yield s
    s.close()


@dataclass
class CasResult:
    """What one ``cas`` invocation printed and how it exited."""

    args: list[str]
    exit_code: int
    stdout_bytes: bytes
    stderr: str

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8")

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __repr__(self) -> str:  # shown by pytest when an assertion fails
        return (
            f"CasResult(cas {' '.join(self.args)!r} -> {self.exit_code},"
            f" stdout={self.stdout_bytes[:2000]!r}, stderr={self.stderr!r})"
        )


CasRunner = Callable[..., CasResult]


@pytest.fixture
def cas() -> CasRunner:
    """Run ``cas ARGS...`` in-process through the real entry point ``casstore.cli.main``.

    ``main`` is what the installed ``cas`` runs: it maps every error to one
    ``cas: error: ...`` line and an exit code, so tests see exactly what users see.
    Click's ``CliRunner`` isolates stdin, stdout, stderr and the environment.
    """
    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click < 8.2
    except TypeError:
        runner = CliRunner()  # click >= 8.2 always keeps stderr apart

    def run(*args: object, input: bytes | str | None = None, env: dict | None = None) -> CasResult:
        argv = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args]
        with runner.isolation(input=input, env=env) as streams:
            out, err = streams[0], streams[1]
            try:
                main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            else:
                code = 0
            sys.stdout.flush()
            sys.stderr.flush()
            return CasResult(argv, code, out.getvalue(), err.getvalue().decode("utf-8"))

    return run
