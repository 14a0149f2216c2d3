"""`cas add` of a directory of many small files, stored by worker processes."""

import hashlib
import os
import signal
import subprocess
import time

from tests._helpers import check_store


def _tree(top, count: int) -> list[tuple[str, bytes]]:
    """``count`` small files under ``top`` (in subdirectories), as (relative path, bytes)."""
    made = []
    for i in range(count):
        rel = f"d{i // 100:02d}/f{i:05d}.json"
        data = (f'{{"n": {i}}}\n' * (i % 50 + 1)).encode()
        path = top / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        made.append((rel, data))
    return made


def test_add_of_many_small_files_prints_sha256sum_lines_in_order(run, tmp_path):
    run("init")
    made = _tree(tmp_path / "small", 700)  # enough for worker processes
    out = run("add", "small").stdout.decode()
    want = "".join(f"{hashlib.sha256(d).hexdigest()}  small/{rel}\n" for rel, d in made)
    assert out == want
    assert "clean" in run("verify").stdout.decode()
    found = check_store(tmp_path / ".casstore")
    assert len(found["objects"]) == 700
    assert len(found["records"]) == 700


def _stored(objects) -> int:
    """How many objects have their records so far (a cheap count, polled)."""
    if not objects.is_dir():
        return 0
    return sum(1 for d in os.scandir(objects) for e in os.scandir(d) if e.name.endswith(".meta"))


def _start(cas_exe, env, tmp_path, *args: str) -> subprocess.Popen:
    """``cas add ARGS`` in its own process group (a terminal's Ctrl-C reaches it all),
    returned once 300 objects are stored."""
    objects = tmp_path / ".casstore" / "objects"
    proc = subprocess.Popen(
        [cas_exe, "add", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while _stored(objects) < 300:
        assert proc.poll() is None, "the add ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    return proc


def _wait_gone(proc: subprocess.Popen, seconds: float) -> bytes:
    """Wait for the add and every process of its group; its stderr."""
    try:
        _, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("cas add did not stop") from None
    deadline = time.monotonic() + 10
    while subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True).stdout:
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("worker processes outlived the add")
        time.sleep(0.05)
    return err


def test_ctrl_c_during_a_parallel_add_indexes_what_was_stored(cas_exe, env, run, tmp_path):
    run("init")
    _tree(tmp_path / "small", 8000)
    proc = _start(cas_exe, env, tmp_path, "small")
    os.killpg(proc.pid, signal.SIGINT)
    err = _wait_gone(proc, 30)
    assert proc.returncode == 130, err
    assert err.decode().strip() == "cas: error: interrupted"
    # Chunks the workers had taken were finished and indexed, the rest dropped.
    found = check_store(tmp_path / ".casstore", allow_tmp=True)
    assert 300 <= len(found["objects"]) < 8000


def test_ctrl_c_ends_an_add_waiting_on_a_pipe(cas_exe, env, run, tmp_path):
    run("init")
    _tree(tmp_path / "small", 2000)
    os.mkfifo(tmp_path / "pipe")  # never written: reading it waits for ever
    proc = _start(cas_exe, env, tmp_path, "small", "pipe")
    deadline = time.monotonic() + 30
    while _stored(tmp_path / ".casstore" / "objects") < 2000:  # all but the pipe
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)  # one Ctrl-C is enough
    err = _wait_gone(proc, 30)
    assert proc.returncode == 130, err
    # The next command finds the index complete, or rebuilds it: either way it agrees.
    run("ls")
    found = check_store(tmp_path / ".casstore", allow_tmp=True)
    assert len(found["objects"]) == 2000


def test_workers_end_with_a_killed_add_and_leave_the_store_usable(cas_exe, env, run, tmp_path):
    run("init")
    _tree(tmp_path / "small", 2000)
    os.mkfifo(tmp_path / "pipe")  # the add waits there until it is killed
    proc = _start(cas_exe, env, tmp_path, "small", "pipe")
    proc.kill()  # the adding process only: its workers hold copies of the store lock
    _wait_gone(proc, 30)
    # The store lock is free: a rebuild takes it exclusively; then the index agrees.
    run("index", "rebuild")
    check_store(tmp_path / ".casstore", allow_tmp=True)


def test_two_parallel_adds_of_the_same_files_make_one_record_each(cas_exe, env, run, tmp_path):
    run("init")
    made = _tree(tmp_path / "small", 1200)
    procs = [
        subprocess.Popen(
            [cas_exe, "add", "small"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    want = "".join(f"{hashlib.sha256(d).hexdigest()}  small/{rel}\n" for rel, d in made)
    assert [out.decode() for out, _ in outs] == [want, want]
    # Four workers stored the same files at once: the .meta lock made one record per
    # object (same path, same provenance), and the index agrees with the files.
    found = check_store(tmp_path / ".casstore")
    assert len(found["objects"]) == 1200
    assert len(found["records"]) == 1200
