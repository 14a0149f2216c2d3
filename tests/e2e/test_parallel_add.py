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


def test_ctrl_c_during_a_parallel_add_indexes_what_was_stored(cas_exe, env, run, tmp_path):
    run("init")
    _tree(tmp_path / "small", 4000)
    objects = tmp_path / ".casstore" / "objects"
    # Its own process group, as a terminal's Ctrl-C reaches the workers too.
    proc = subprocess.Popen(
        [cas_exe, "add", "small"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while sum(1 for _ in objects.glob("*/*.meta")) < 300:
        assert proc.poll() is None, "the add ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("cas add did not stop on Ctrl-C") from None
    assert proc.returncode == 130, err
    assert err.decode().strip() == "cas: error: interrupted"
    # Chunks already with the workers were finished and indexed, the rest dropped; no
    # worker was left.
    found = check_store(tmp_path / ".casstore", allow_tmp=True)
    assert 300 <= len(found["objects"]) < 4000
    assert subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True).stdout == b""


def test_workers_end_with_a_killed_add_and_leave_the_store_usable(cas_exe, env, run, tmp_path):
    run("init")
    _tree(tmp_path / "small", 4000)
    objects = tmp_path / ".casstore" / "objects"
    proc = subprocess.Popen(
        [cas_exe, "add", "small"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while sum(1 for _ in objects.glob("*/*.meta")) < 300:
        assert proc.poll() is None, "the add ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.kill()  # the adding process only: its workers hold copies of the store lock
    proc.wait()
    deadline = time.monotonic() + 10
    while subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True).stdout:
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("worker processes outlived the killed add")
        time.sleep(0.05)
    # The store lock is free: a rebuild takes it exclusively; then the index agrees.
    run("index", "rebuild")
    check_store(tmp_path / ".casstore", allow_tmp=True)
