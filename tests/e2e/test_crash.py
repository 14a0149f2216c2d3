"""A `cas add` killed with SIGKILL mid-add leaves a valid store."""

import contextlib
import json
import signal
import subprocess

import pytest

from tests._helpers import check_store, random_bytes, sha256

BLOCK = 64 * 1024


@pytest.fixture
def killed_add(run, tmp_path, cas_exe, env):
    """Start ``cas add ARGS... -``, feed >2 MiB on stdin, then SIGKILL it mid-stream.

    The pipe holds at most 64 KiB, so once 3 MiB have been written the process has read
    more than two 1 MiB chunks: it is inside the add, with a partial temp file written.
    """

    def kill(*args: str) -> None:
        proc = subprocess.Popen(
            [cas_exe, "add", *args, "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            env=env,
        )
        for i in range(48):  # 3 MiB, never finished
            proc.stdin.write(random_bytes(BLOCK, seed=i))
        proc.stdin.flush()
        partial = list((tmp_path / ".casstore" / "tmp").iterdir())
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        proc.stdout.close()
        proc.stderr.close()
        assert partial, "the add was killed before it wrote anything"

    return kill


def test_a_killed_add_leaves_a_valid_store(run, tmp_path, killed_add):
    run("init")
    (tmp_path / "before").write_bytes(b"stored before the crash\n")
    run("add", "before")
    run("tag", "before", sha256(b"stored before the crash\n"))

    killed_add()

    root = tmp_path / ".casstore"
    found = check_store(root, allow_tmp=True, index=False)
    assert found["tmp"], "the partial write stays in tmp/ (gc removes it later)"
    assert set(found["objects"]) == {sha256(b"stored before the crash\n")}
    assert len(found["records"]) == 1
    assert found["refs"] == {"tags/before": sha256(b"stored before the crash\n")}

    # later commands ignore the stray temp file and work
    listed = json.loads(run("ls", "--json").stdout)
    assert [o["id"] for o in listed] == [sha256(b"stored before the crash\n")]
    data = random_bytes(3 * 1024 * 1024, seed=99)
    (tmp_path / "after").write_bytes(data)
    assert run("add", "after").stdout.decode() == f"{sha256(data)}  after\n"
    assert run("cat", sha256(data)).stdout == data
    assert run("cat", "before").stdout == b"stored before the crash\n"
    listed = json.loads(run("ls", "--json").stdout)
    assert {o["id"] for o in listed} == {sha256(data), sha256(b"stored before the crash\n")}
    assert json.loads(run("index", "rebuild", "--json").stdout)["objects"] == 2
    check_store(root, allow_tmp=True)


def test_files_stored_before_the_kill_in_the_same_command_are_listed(run, tmp_path, killed_add):
    """`cas add small -`: small is stored and recorded, then the add dies on stdin."""
    run("init")
    (tmp_path / "small").write_bytes(b"small file\n")
    killed_add("small")

    found = check_store(tmp_path / ".casstore", allow_tmp=True, index=False)
    assert set(found["objects"]) == {sha256(b"small file\n")}
    listed = json.loads(run("ls", "--json").stdout)
    assert [o["id"] for o in listed] == [sha256(b"small file\n")]
    assert run("cat", sha256(b"small file\n")).stdout == b"small file\n"
    # and after that everything agrees with the files again
    check_store(tmp_path / ".casstore", allow_tmp=True)
