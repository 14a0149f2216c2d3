import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from casstore import _fs
from casstore.errors import CasError, LockError

HOLD_LOCK = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from casstore._fs import LockFile
    lock = LockFile(Path(sys.argv[1]))
    lock.acquire()
    print("locked", flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def tmpdir_(tmp_path):
    d = tmp_path / "tmp"
    d.mkdir()
    return d


@pytest.fixture
def holder(tmp_path):
    """Start a child process that takes the lock on a target and keeps it until killed."""
    procs = []

    def start(target: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(target)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


# ---- atomic_write ---------------------------------------------------------------------


def test_atomic_write_creates_the_file_and_its_directory(tmp_path, tmpdir_):
    final = tmp_path / "a" / "b" / "file"
    assert _fs.atomic_write(final, b"content", tmpdir_) is True
    assert final.read_bytes() == b"content"
    assert list(tmpdir_.iterdir()) == []


def test_atomic_write_replaces_existing_content(tmp_path, tmpdir_):
    final = tmp_path / "file"
    final.write_bytes(b"old")
    assert _fs.atomic_write(final, b"new", tmpdir_) is True
    assert final.read_bytes() == b"new"


def test_atomic_write_without_replace_keeps_the_first_writer(tmp_path, tmpdir_):
    final = tmp_path / "file"
    final.write_bytes(b"first")
    assert _fs.atomic_write(final, b"second", tmpdir_, replace=False) is False
    assert final.read_bytes() == b"first"
    assert list(tmpdir_.iterdir()) == []


def test_atomic_write_not_durable_still_writes(tmp_path, tmpdir_):
    final = tmp_path / "file"
    assert _fs.atomic_write(final, b"x" * 10_000, tmpdir_, durable=False)
    assert final.read_bytes() == b"x" * 10_000


def test_failed_atomic_write_leaves_nothing(tmp_path, tmpdir_):
    final = tmp_path / "file"
    with pytest.raises(TypeError):
        _fs.atomic_write(final, "not bytes", tmpdir_)  # type: ignore[arg-type]
    assert not final.exists()
    assert list(tmpdir_.iterdir()) == []


def test_make_temp_files_are_unique_and_inside_tmp(tmpdir_):
    made = [_fs.make_temp(tmpdir_, "t") for _ in range(20)]
    for fd, _ in made:
        os.close(fd)
    paths = {p for _, p in made}
    assert len(paths) == 20
    assert all(p.parent == tmpdir_ and p.name.startswith("t-") for p in paths)


def test_touch_refreshes_mtime_and_ignores_missing_files(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x")
    os.utime(f, (1_000_000, 1_000_000))
    _fs.touch(f)
    assert f.stat().st_mtime > 1_000_000
    _fs.touch(tmp_path / "missing")  # no error
    assert not (tmp_path / "missing").exists()


def test_fsync_dir_and_syncfs_accept_a_directory(tmp_path):
    _fs.fsync_dir(tmp_path)
    _fs.syncfs(tmp_path)


# ---- LockFile -------------------------------------------------------------------------


def test_lock_file_holds_its_owner_and_release_removes_it(tmp_path):
    target = tmp_path / "ref"
    lock = _fs.LockFile(target)
    lock.acquire()
    info = json.loads(lock.path.read_bytes())
    assert lock.path == tmp_path / "ref.lock"
    assert info["pid"] == os.getpid()
    assert info["host"] == socket.gethostname()
    lock.release()
    assert not lock.path.exists()
    assert not target.exists()


def test_lock_commit_renames_the_new_content_over_the_target(tmp_path):
    target = tmp_path / "sub" / "ref"
    lock = _fs.LockFile(target)
    lock.acquire()
    lock.write(b"first draft that is long")
    lock.write(b"final\n")
    lock.commit()
    assert target.read_bytes() == b"final\n"
    assert not lock.path.exists()
    lock.release()  # after commit: a no-op
    assert target.read_bytes() == b"final\n"


def test_lock_as_context_manager(tmp_path):
    target = tmp_path / "ref"
    with _fs.LockFile(target) as lock:
        assert lock.path.exists()
    assert not lock.path.exists()


def test_a_held_lock_is_waited_for_then_times_out_naming_the_holder(tmp_path):
    target = tmp_path / "ref"
    first = _fs.LockFile(target)
    first.acquire()
    waited = []
    second = _fs.LockFile(target, timeout=0.2)
    with pytest.raises(LockError) as info:
        second.acquire(on_wait=lambda: waited.append(True))
    err = info.value
    assert waited == [True], "the second taker must wait before giving up"
    assert isinstance(err, CasError)
    assert f"pid {os.getpid()} on {socket.gethostname()}" in str(err)
    assert str(first.path) in str(err)
    assert "timed out" in str(err)
    assert err.path == str(first.path)
    assert err.holder.startswith(f"pid {os.getpid()} on ")
    first.release()


def test_a_waiter_gets_the_lock_once_the_holder_releases_it(tmp_path):
    target = tmp_path / "ref"
    first = _fs.LockFile(target)
    first.acquire()
    second = _fs.LockFile(target, timeout=10)
    second.acquire(on_wait=first.release)  # the holder lets go while the second waits
    info = json.loads(second.path.read_bytes())
    assert info["pid"] == os.getpid()
    second.write(b"mine\n")
    second.commit()
    assert target.read_bytes() == b"mine\n"


def test_a_live_holder_in_another_process_is_not_taken_over(tmp_path, holder):
    target = tmp_path / "ref"
    proc = holder(target)
    with pytest.raises(LockError) as info:
        _fs.LockFile(target, timeout=0.2).acquire()
    assert f"pid {proc.pid} on {socket.gethostname()}" in str(info.value)
    assert json.loads((tmp_path / "ref.lock").read_bytes())["pid"] == proc.pid


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, holder):
    target = tmp_path / "ref"
    proc = holder(target)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    stale = tmp_path / "ref.lock"
    assert json.loads(stale.read_bytes())["pid"] == proc.pid  # left behind

    lock = _fs.LockFile(target, timeout=10)
    lock.acquire()
    assert json.loads(lock.path.read_bytes())["pid"] == os.getpid()
    lock.write(b"after takeover\n")
    lock.commit()
    assert target.read_bytes() == b"after takeover\n"
    assert not stale.exists()


def test_an_old_empty_lock_file_is_taken_over(tmp_path):
    target = tmp_path / "ref"
    stale = tmp_path / "ref.lock"
    stale.write_bytes(b"")
    os.utime(stale, (1_000_000, 1_000_000))
    lock = _fs.LockFile(target, timeout=10)
    lock.acquire()
    assert json.loads(stale.read_bytes())["pid"] == os.getpid()
    lock.release()


def test_a_fresh_empty_lock_file_may_belong_to_a_starting_process(tmp_path):
    (tmp_path / "ref.lock").write_bytes(b"")
    with pytest.raises(LockError) as info:
        _fs.LockFile(tmp_path / "ref", timeout=0.2).acquire()
    assert "an unknown process" in str(info.value)
    assert (tmp_path / "ref.lock").exists()


@pytest.mark.parametrize("raw", [b"", b"garbage", b'{"pid": 1}', b"[1, 2]"])
def test_describe_holder_tolerates_garbage(raw):
    assert _fs.describe_holder(raw) == "an unknown process"


def test_describe_holder():
    raw = json.dumps({"pid": 42, "host": "box", "time": 0}).encode()
    assert _fs.describe_holder(raw).startswith("pid 42 on box for ")


# ---- StoreLock ------------------------------------------------------------------------


def test_store_lock_shared_holders_coexist(tmp_path):
    a = _fs.StoreLock(tmp_path / "lock", timeout=0.2)
    b = _fs.StoreLock(tmp_path / "lock", timeout=0.2)
    with a.hold(), b.hold():
        pass


def test_store_lock_exclusive_waits_for_shared_holders(tmp_path):
    shared = _fs.StoreLock(tmp_path / "lock", timeout=0.2)
    excl = _fs.StoreLock(tmp_path / "lock", timeout=0.2)
    with shared.hold(), pytest.raises(LockError) as info, excl.hold(exclusive=True):
        pytest.fail("exclusive lock taken while a shared holder exists")
    assert "store lock" in str(info.value)
    assert info.value.path == str(tmp_path / "lock")
    with excl.hold(exclusive=True):  # free again once the shared holder is gone
        pass


def test_store_lock_shared_waits_for_an_exclusive_holder(tmp_path):
    excl = _fs.StoreLock(tmp_path / "lock", timeout=0.2)
    shared = _fs.StoreLock(tmp_path / "lock", timeout=0.2)
    with excl.hold(exclusive=True), pytest.raises(LockError), shared.hold():
        pytest.fail("shared lock taken while an exclusive holder exists")
    with shared.hold():
        pass


def test_store_lock_is_released_when_the_block_raises(tmp_path):
    lock = _fs.StoreLock(tmp_path / "lock", timeout=0.2)
    with pytest.raises(RuntimeError), lock.hold(exclusive=True):
        raise RuntimeError("boom")
    with _fs.StoreLock(tmp_path / "lock", timeout=0.2).hold(exclusive=True):
        pass


# ---- races with other processes, replayed deterministically -----------------------------


@pytest.mark.parametrize("replace", [True, False])
def test_publish_when_another_process_creates_the_directory_first(
    tmp_path, tmpdir_, monkeypatch, replace
):
    """Two writers of objects/ab/…: the rename fails for lack of ab/, the other makes it."""
    final = tmp_path / "objects" / "ab" / "cdef"
    fd, tmp = _fs.make_temp(tmpdir_)
    os.write(fd, b"bytes")
    os.close(fd)
    name = "replace" if replace else "link"
    real = getattr(os, name)
    calls = []

    def racing(src, dst, *args, **kwargs):
        calls.append(dst)
        try:
            return real(src, dst, *args, **kwargs)
        except FileNotFoundError:
            if len(calls) == 1:
                final.parent.mkdir(parents=True)  # the other process, in between
            raise

    monkeypatch.setattr(os, name, racing)
    assert _fs.publish(tmp, final, replace=replace) is True
    assert final.read_bytes() == b"bytes"
    assert list(tmpdir_.iterdir()) == []


def test_creating_a_lock_while_a_taker_inspects_it(tmp_path, monkeypatch):
    """Between O_EXCL create and flock, another process's take-over check may hold the flock.

    That taker sees an empty, young file, leaves it alone and lets go at once; the creator
    must not fail because of it.
    """
    import fcntl

    path = tmp_path / "ref.lock"
    real_flock = fcntl.flock
    state = {"rival": None, "calls": 0}

    def flock(fd, op):
        state["calls"] += 1
        if state["calls"] == 1:  # the creator's first flock: a taker got there first
            rival = os.open(path, os.O_RDWR)
            real_flock(rival, fcntl.LOCK_EX | fcntl.LOCK_NB)
            state["rival"] = rival
            if not op & fcntl.LOCK_NB:  # a blocking creator: the taker lets go promptly
                os.close(state.pop("rival"))
                return real_flock(fd, op)
            try:
                return real_flock(fd, op)
            finally:
                os.close(state.pop("rival"))  # the taker lets go right after its look
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    lock = _fs.LockFile(tmp_path / "ref", timeout=30)
    lock.acquire()
    monkeypatch.undo()
    assert json.loads(path.read_bytes())["pid"] == os.getpid()
    lock.write(b"done\n")
    lock.commit()
    assert (tmp_path / "ref").read_bytes() == b"done\n"
    assert not path.exists()


def test_interrupts_held_defers_ctrl_c_to_the_end_of_the_step():
    # Another thread runs: the kernel may deliver SIGINT to it; the step is still whole.
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    steps = []
    try:
        with pytest.raises(KeyboardInterrupt), _fs.interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # Python runs the handler here: it only takes note
            steps.append("finished")
    finally:
        stop.set()
        other.join()
    assert steps == ["finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interrupts_held_outside_the_main_thread_changes_nothing():
    seen = []

    def step():
        with _fs.interrupts_held():
            seen.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=step)
    t.start()
    t.join()
    assert seen == [signal.default_int_handler]
