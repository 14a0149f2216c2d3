"""The shell flow with the installed ``cas`` in real processes: start, step, finish, show."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest


@pytest.fixture
def sh(cas_exe: str, child_env: dict[str, str], tmp_path: Path):
    """``sh(*args)``: run the installed cas in ``tmp_path``; returns the CompletedProcess."""

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [cas_exe, *map(str, args)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=child_env,
            timeout=120,
        )

    assert run("init").returncode == 0
    return run


def test_start_step_add_finish_show(sh, cas_exe: str, tmp_path: Path):
    data = b"id,name\n1,Sol\n"
    (tmp_path / "systems.csv").write_bytes(data)
    oid = hashlib.sha256(data).hexdigest()

    start = sh("runs", "start", "daily_ingest", "--trigger-type", "scheduler", "--param", "d=1")
    assert start.returncode == 0, start.stderr
    run = start.stdout.strip()
    assert len(run) == 36 and start.stdout == run + "\n"  # only the id

    step = sh("runs", "step", run, "load", "--", cas_exe, "add", "systems.csv")
    assert step.returncode == 0, step.stderr
    assert step.stdout.split() == [oid, "systems.csv"]  # the child's own output, untouched

    fin = sh("runs", "finish", run)
    assert fin.returncode == 0, fin.stderr

    shown = sh("runs", "show", run, "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["run"]["status"] == "COMPLETED"
    assert doc["run"]["parameters"] == {"d": "1"}
    (load,) = doc["steps"]
    assert (load["step_name"], load["status"], load["step_type"]) == (
        "load",
        "COMPLETED",
        "command",
    )
    assert load["metadata"]["command"][1:] == ["add", "systems.csv"]
    assert [(o["object"], o["step_name"]) for o in doc["objects"]] == [(oid, "load")]

    text = sh("runs", "show", run[:8])
    assert any(
        line.split()[:4] == [oid[:12], "import", "step", "load"]
        for line in text.stdout.splitlines()
    )
    log = sh("log", oid)
    assert f"(pipeline daily_ingest run {run[:8]} step load)" in log.stdout

    again = sh("runs", "finish", run)
    assert again.returncode == 1
    assert again.stderr.startswith("cas: error:") and again.stderr.count("\n") == 1


def test_a_failing_command_fails_the_step_and_cas_exits_with_its_code(sh, tmp_path: Path):
    run = sh("runs", "start", "p").stdout.strip()
    step = sh("runs", "step", run, "broken", "--", "sh", "-c", 'echo "$CAS_RUN" > seen; exit 3')
    assert step.returncode == 3
    assert (tmp_path / "seen").read_text().strip() == run  # the child saw its run
    doc = json.loads(sh("runs", "show", run, "--json").stdout)
    (broken,) = doc["steps"]
    assert (broken["status"], broken["error_message"]) == ("FAILED", "exit code 3")
    assert broken["end_time"] is not None and broken["duration_ms"] is not None

    missing = sh("runs", "step", run, "nothing", "--", "no-such-command-here")
    assert missing.returncode == 2
    assert missing.stderr.startswith("cas: error: cannot run") and missing.stderr.count("\n") == 1
    doc = json.loads(sh("runs", "show", run, "--json").stdout)
    assert [s["status"] for s in doc["steps"]] == ["FAILED", "FAILED"]

    unknown = sh("runs", "step", "0123abcd", "x", "--", "true")
    assert unknown.returncode == 1 and "no pipeline run" in unknown.stderr
