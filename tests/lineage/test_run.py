"""`cas run` and `Store.run`: outputs stored with a run record, memo hits, failures.

Commands are small `sh -c` scripts. Each appends a line to ``counter.log`` when it runs, so
a test can tell from the disk whether the command ran or the outputs were restored.
"""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from casstore.run import action_key
from casstore.store import Store
from tests._helpers import check_store, object_bytes, sha256

UPPER = "echo ran >> counter.log; tr a-z A-Z < {data} > out.txt"
UPPER_ID = sha256(b"HELLO WORLD\n")  # what UPPER makes of the data fixture


def runs(tmp_path: Path) -> int:
    """How many times the commands have actually run."""
    log = tmp_path / "counter.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.fixture
def data(store: Store) -> str:
    return store.add(io.BytesIO(b"hello world\n"), ref="tags/data").id


def run_record(store: Store, oid: str):
    [record] = [r for _, r in store.records(oid) if r.type == "run"]
    return record


def snapshot(store: Store) -> tuple[set[str], set[str]]:
    """The object and record ids on disk (and a check that tmp/ is empty)."""
    found = check_store(store.root)
    return set(found["objects"]), set(found["records"])


# ---- a run that succeeds ---------------------------------------------------------------


def test_run_stores_the_output_with_a_run_record(store: Store, cas, data, tmp_path):
    result = cas(
        "run",
        "--input",
        "data=tags/data",
        "--output",
        "out.txt",
        "--transform",
        "upper",
        "--param",
        "lang=en",
        "--env",
        "STAGE",
        "--",
        "sh",
        "-c",
        UPPER,
        env={"STAGE": "test"},
    )
    assert result.exit_code == 0, result
    out = sha256(b"HELLO WORLD\n")
    record = run_record(store, out)
    assert len(result.lines) == 2
    assert result.lines[1] == f"{out}  out.txt"
    assert result.lines[0].startswith("ran in ")
    assert result.lines[0].endswith(f"stored 1 output(s) (action {record.action[:12]})")
    assert (tmp_path / "out.txt").read_bytes() == b"HELLO WORLD\n"
    assert cas("cat", out).stdout_bytes == b"HELLO WORLD\n"
    assert runs(tmp_path) == 1

    assert record.command == ("sh", "-c", UPPER)
    assert record.inputs == {"data": data}
    assert record.parents == (data,)
    assert record.output == "out.txt"
    assert record.exit_code == 0
    assert isinstance(record.duration_ms, int) and record.duration_ms >= 0
    assert record.cwd == str(tmp_path)
    assert record.git_commit is None  # tmp_path is no git work tree
    assert record.env == {"STAGE": "test"}
    assert record.transform == "upper"
    assert record.params == {"lang": "en"}
    assert record.action == action_key(
        ["sh", "-c", UPPER], {"data": data}, "upper", {"lang": "en"}, {"STAGE": "test"}, ["out.txt"]
    )
    assert record.producer.name == "cas"

    shown = cas("log", out)
    assert shown.lines[0].endswith(f"upper: sh -c {UPPER} [lang=en]")
    assert shown.lines[1].split()[0] == data[:12]


def test_run_json_says_ran_then_restored(store: Store, cas, data, tmp_path):
    args = ["run", "--json", "--input", "data=data", "--output", "out.txt", "--", "sh", "-c", UPPER]
    first = cas(*args).json()
    assert first["status"] == "ran"
    assert first["exit_code"] == 0
    assert [o["path"] for o in first["outputs"]] == ["out.txt"]
    assert first["outputs"][0]["object"] == sha256(b"HELLO WORLD\n")
    second = cas(*args).json()
    assert second["status"] == "restored"
    assert second["action"] == first["action"]
    assert second["outputs"] == first["outputs"]
    assert runs(tmp_path) == 1


def test_inputs_reach_the_command_by_placeholder_and_environment(store: Store, cas, tmp_path):
    one = store.add(io.BytesIO(b"one\n")).id
    two = store.add(io.BytesIO(b"two\n")).id
    script = 'cat {in0} "$CAS_INPUT_IN1" > joined; printf "%s" "$CAS_INPUTS" > listed'
    result = cas(
        "run", "--input", one, "--input", two[:8], "--output", "joined", "--output", "listed",
        "--", "sh", "-c", script,
    )  # fmt: skip
    assert result.exit_code == 0, result
    assert (tmp_path / "joined").read_bytes() == b"one\ntwo\n"
    listed = (tmp_path / "listed").read_text().split(os.pathsep)
    assert [Path(p).name for p in listed] == ["in0", "in1"]
    record = run_record(store, sha256(b"one\ntwo\n"))
    assert record.inputs == {"in0": one, "in1": two}
    assert record.parents == (one, two)
    assert cas("why", sha256(b"one\ntwo\n"), two).exit_code == 0


def test_inputs_in_braced_shell_variables_are_not_placeholders(store: Store, cas, data, tmp_path):
    # ${CAS_INPUT_DATA} is how a shell script reads the documented variable; the {NAME}
    # placeholder syntax must not reject it as an unknown placeholder.
    script = 'tr a-z A-Z < "${CAS_INPUT_DATA}" > out.txt'
    result = cas("run", "--input", "data=data", "--output", "out.txt", "--", "sh", "-c", script)
    assert result.exit_code == 0, result
    assert (tmp_path / "out.txt").read_bytes() == b"HELLO WORLD\n"


def test_several_outputs_are_each_stored_and_restored(store: Store, cas, data, tmp_path):
    script = "echo ran >> counter.log; tr a-z A-Z < {data} > a.txt; wc -c < {data} > sub/b.txt"
    (tmp_path / "sub").mkdir()
    args = ["run", "--input", "data=data", "--output", "a.txt", "--output", "sub/b.txt"]
    result = cas(*args, "--", "sh", "-c", script)
    assert result.exit_code == 0, result
    a, b = (tmp_path / "a.txt").read_bytes(), (tmp_path / "sub" / "b.txt").read_bytes()
    assert result.lines[1:] == [f"{sha256(a)}  a.txt", f"{sha256(b)}  sub/b.txt"]
    assert run_record(store, sha256(b)).output == "sub/b.txt"
    (tmp_path / "a.txt").unlink()
    (tmp_path / "sub" / "b.txt").unlink()
    again = cas(*args, "--", "sh", "-c", script)
    assert again.exit_code == 0, again
    assert again.lines[0].startswith("memo hit: restored 2 output(s)")
    assert (tmp_path / "a.txt").read_bytes() == a
    assert (tmp_path / "sub" / "b.txt").read_bytes() == b
    assert runs(tmp_path) == 1


# ---- git commit --------------------------------------------------------------------------


def git(tmp_path: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_run_records_the_git_commit_and_dirty_state(store: Store, cas, data, tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "convert.sh").write_text("tr a-z A-Z\n")
    git(tmp_path, "add", "convert.sh")
    git(tmp_path, "commit", "-q", "-m", "one")
    head = git(tmp_path, "rev-parse", "HEAD")

    script = "sh convert.sh < {data} > out.txt"
    result = cas("run", "--input", "data=data", "--output", "out.txt", "--", "sh", "-c", script)
    assert result.exit_code == 0, result
    assert run_record(store, sha256(b"HELLO WORLD\n")).git_commit == head

    (tmp_path / "convert.sh").write_text("tr a-z A-Z | rev\n")
    args = ["--input", "data=data", "--output", "out.txt", "--param", "v=2"]
    result = cas("run", *args, "--", "sh", "-c", script)
    assert result.exit_code == 0, result
    out = (tmp_path / "out.txt").read_bytes()
    assert out == b"DLROW OLLEH\n"
    assert run_record(store, sha256(out)).git_commit == f"{head}+dirty"


# ---- memoisation -------------------------------------------------------------------------


def test_the_same_action_again_restores_without_running(store: Store, cas, data, tmp_path):
    args = ["run", "--input", "data=data", "--output", "out.txt", "--", "sh", "-c", UPPER]
    first = cas(*args)
    assert first.exit_code == 0, first
    action = run_record(store, sha256(b"HELLO WORLD\n")).action
    before = snapshot(store)
    (tmp_path / "out.txt").unlink()

    second = cas(*args)
    assert second.exit_code == 0, second
    assert second.lines == [
        f"memo hit: restored 1 output(s) of action {action[:12]} without running the command",
        f"{UPPER_ID}  out.txt",
    ]
    assert runs(tmp_path) == 1
    assert (tmp_path / "out.txt").read_bytes() == b"HELLO WORLD\n"
    assert snapshot(store) == before  # nothing new stored

    (tmp_path / "out.txt").write_bytes(b"edited by hand\n")
    assert cas(*args).exit_code == 0
    assert (tmp_path / "out.txt").read_bytes() == b"HELLO WORLD\n"
    assert runs(tmp_path) == 1


def test_force_runs_again(store: Store, cas, data, tmp_path):
    args = ["run", "--input", "data=data", "--output", "out.txt"]
    assert cas(*args, "--", "sh", "-c", UPPER).exit_code == 0
    forced = cas(*args, "--force", "--", "sh", "-c", UPPER)
    assert forced.exit_code == 0, forced
    assert forced.lines[0].startswith("ran in ")
    assert runs(tmp_path) == 2


def test_restore_after_force_gives_the_latest_output(store: Store, cas, data, tmp_path):
    # The command is not deterministic: each run writes its run number. After --force, the
    # memo must hand back what the latest run made, not an older run's output.
    script = "echo ran >> counter.log; wc -l < counter.log | tr -d ' ' > out.txt"
    args = ["run", "--input", "data=data", "--output", "out.txt"]
    assert cas(*args, "--", "sh", "-c", script).exit_code == 0
    action = run_record(store, sha256(b"1\n")).action
    # Force until the latest run's record is not the first by record id (the memo must not
    # depend on how record ids happen to sort); each try succeeds with probability >= 1/2.
    for _ in range(40):
        assert cas(*args, "--force", "--", "sh", "-c", script).exit_code == 0
        rows = store.index.by_recipe(action)
        latest = sha256(f"{runs(tmp_path)}\n".encode())
        if rows[0][0] != latest:
            break
    latest_bytes = (tmp_path / "out.txt").read_bytes()
    assert sha256(latest_bytes) == latest
    (tmp_path / "out.txt").unlink()
    restored = cas(*args, "--", "sh", "-c", script)
    assert restored.exit_code == 0, restored
    assert restored.lines[0].startswith("memo hit")
    assert (tmp_path / "out.txt").read_bytes() == latest_bytes


@pytest.mark.parametrize("change", ["param", "input", "env", "transform", "command"])
def test_a_different_action_runs_again(store: Store, cas, data, tmp_path, change):
    other = store.add(io.BytesIO(b"other input\n"), ref="tags/other").id

    def args(param="1", inp="tags/data", transform="upper", script=UPPER):
        return [
            "run", "--input", f"data={inp}", "--output", "out.txt", "--param", f"p={param}",
            "--transform", transform, "--env", "STAGE", "--", "sh", "-c", script,
        ]  # fmt: skip

    assert cas(*args(), env={"STAGE": "a"}).exit_code == 0
    assert cas(*args(), env={"STAGE": "a"}).lines[0].startswith("memo hit")
    assert runs(tmp_path) == 1
    changed = {
        "param": lambda: cas(*args(param="2"), env={"STAGE": "a"}),
        "input": lambda: cas(*args(inp=other[:10]), env={"STAGE": "a"}),
        "env": lambda: cas(*args(), env={"STAGE": "b"}),
        "transform": lambda: cas(*args(transform="shout"), env={"STAGE": "a"}),
        "command": lambda: cas(*args(script=UPPER + " "), env={"STAGE": "a"}),
    }[change]()
    assert changed.exit_code == 0, changed
    assert changed.lines[0].startswith("ran in ")
    assert runs(tmp_path) == 2
    if change == "input":
        assert (tmp_path / "out.txt").read_bytes() == b"OTHER INPUT\n"


def test_an_unset_env_name_is_a_usage_error(store: Store, cas, data, tmp_path):
    result = cas("run", "--env", "NOT_SET_ANYWHERE", "--output", "o", "--", "sh", "-c", "true")
    assert result.exit_code == 2, result
    assert result.stderr.startswith("cas: error:")
    assert runs(tmp_path) == 0


# ---- failures store nothing --------------------------------------------------------------


def test_a_failing_command_stores_nothing_and_cas_exits_with_its_code(
    store: Store, cas, data, tmp_path
):
    before = snapshot(store)
    script = "echo ran >> counter.log; echo partial > out.txt; exit 3"
    result = cas("run", "--input", "data=data", "--output", "out.txt", "--", "sh", "-c", script)
    assert result.exit_code == 3, result
    assert result.stdout == ""
    assert result.stderr.startswith("cas: error: ")
    assert result.stderr.count("\n") == 1
    assert "exit code 3" in result.stderr
    assert runs(tmp_path) == 1
    assert snapshot(store) == before
    assert store.index.counts()["records"] == len(before[1])


def test_a_failing_run_is_not_memoised(store: Store, cas, data, tmp_path):
    script = "echo ran >> counter.log; exit 3"
    args = ["run", "--output", "out.txt", "--", "sh", "-c", script]
    assert cas(*args).exit_code == 3
    assert cas(*args).exit_code == 3
    assert runs(tmp_path) == 2


def test_a_missing_declared_output_is_an_error_and_stores_nothing(
    store: Store, cas, data, tmp_path
):
    before = snapshot(store)
    script = "tr a-z A-Z < {data} > a.txt"
    args = ["run", "--input", "data=data", "--output", "a.txt", "--output", "b.txt"]
    result = cas(*args, "--", "sh", "-c", script)
    assert result.exit_code != 0, result
    assert result.stderr.startswith("cas: error: ")
    assert "b.txt" in result.stderr
    assert snapshot(store) == before
    assert (tmp_path / "a.txt").exists()  # the user's file is left alone


def test_an_old_file_at_the_output_path_is_not_taken_for_the_output(
    store: Store, cas, data, tmp_path
):
    # out.txt is left over from earlier work; this command exits 0 without writing it.
    (tmp_path / "out.txt").write_bytes(b"left over\n")
    before = snapshot(store)
    result = cas("run", "--input", "data=data", "--output", "out.txt", "--", "sh", "-c", "true")
    assert result.exit_code != 0, result
    assert result.stderr.startswith("cas: error: ")
    assert snapshot(store) == before


def test_the_command_cannot_change_a_stored_input(store: Store, cas, data, tmp_path):
    script = (
        "stat -c %a {data} > mode.txt; echo tampered > {data} 2>/dev/null; echo tampered >> {data};"
        " cat {data} > seen.txt"
    )
    result = cas(
        "run", "--input", "data=data", "--output", "mode.txt", "--output", "seen.txt",
        "--", "sh", "-c", script,
    )  # fmt: skip
    assert result.exit_code == 0, result
    assert (tmp_path / "mode.txt").read_text() == "444\n"  # a read-only copy
    if os.geteuid() == 0:  # root writes through the mode: the copy was really changed
        assert (tmp_path / "seen.txt").read_bytes().startswith(b"tampered\n")
    # As root the copy is writable anyway; whatever happened to it, the object is intact.
    files = check_store(store.root)["objects"]
    assert sha256(object_bytes(files[data])) == data
    assert store.read(data) == b"hello world\n"
    assert cas("cat", "data").stdout_bytes == b"hello world\n"


def test_an_unknown_placeholder_is_a_usage_error(store: Store, cas, data, tmp_path):
    before = snapshot(store)
    script = "echo ran >> counter.log; cat {dta} > out.txt"
    result = cas("run", "--input", "data=data", "--output", "out.txt", "--", "sh", "-c", script)
    assert result.exit_code == 2, result
    assert result.stderr.startswith("cas: error: unknown placeholders ['dta']")
    assert runs(tmp_path) == 0
    assert snapshot(store) == before


def test_a_command_that_cannot_start_is_an_error(store: Store, cas, tmp_path):
    result = cas("run", "--output", "o", "--", str(tmp_path / "no-such-program"))
    assert result.exit_code != 0
    assert result.stderr.startswith("cas: error: cannot run")
    assert check_store(store.root)["tmp"] == []


# ---- the Python API ----------------------------------------------------------------------


def test_store_run_api(store: Store, data, tmp_path):
    script = "echo ran >> counter.log; tr a-z A-Z < {data} > out.txt"
    kwargs = {
        "inputs": ["data=tags/data"],
        "outputs": ["out.txt"],
        "transform": "upper",
        "params": {"k": "v"},
        "cwd": str(tmp_path),
    }
    first = store.run(["sh", "-c", script], **kwargs)
    assert first.status == "ran"
    [out] = first.outputs
    assert out.object == sha256(b"HELLO WORLD\n")
    assert (tmp_path / "out.txt").read_bytes() == b"HELLO WORLD\n"
    assert [rid for rid, _ in store.records(out.object)] == [out.record_id]
    second = store.run(["sh", "-c", script], **kwargs)
    assert second.status == "restored"
    assert second.outputs == first.outputs
    assert store.run(["sh", "-c", script], force=True, **kwargs).status == "ran"
    assert runs(tmp_path) == 2
