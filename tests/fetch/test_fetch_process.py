"""The installed ``cas`` fetching in real processes.

The in-process ``cas`` fixture shares one interpreter with the tests, where httpx and anyio
are long imported. A real ``cas`` process keeps out the dependency modules it never runs
(httpx's own command-line client always, anyio for a single blocking fetch): these tests
run each kind of fetch in its own process, so a module kept out that a path does need
would show here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from casstore._fs import LockFile, StoreLock
from tests.e2e.conftest import _find_cas
from tests.fetch.conftest import FaultServer, Request, Resource, sha256


def _env(cwd: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CAS_STORE", "CAS_DEBUG")}
    env["NETRC"] = str(cwd / "no-such-netrc")
    return env


def _cas(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_find_cas(), *args], cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=120
    )


def _start_fetch_all(cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [_find_cas(), "fetch", "--all", "-j", "2"],
        cwd=cwd,
        env=_env(cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _interrupt(proc: subprocess.Popen[str]) -> str:
    """Ctrl-C, then the process's stderr; fails when it does not end within 15 s."""
    proc.send_signal(signal.SIGINT)
    try:
        _out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("cas fetch --all did not stop on Ctrl-C") from None
    return err


def test_single_fetch_probe_check_and_all_each_in_a_process(faults: FaultServer, tmp_path):
    bodies = {name: f'{{"source": "{name}"}}\n'.encode() * 50 for name in ("a", "b", "c")}
    urls = {
        name: faults.route(f"/{name}.json", Resource(body, etag=f'"{name}1"'))
        for name, body in bodies.items()
    }
    assert _cas(tmp_path, "init").returncode == 0

    single = _cas(tmp_path, "fetch", urls["a"])
    probe = _cas(tmp_path, "probe", "--json", urls["a"])
    check = _cas(tmp_path, "fetch", "--check", "a")
    for name in ("a", "b", "c"):  # a, fetched by URL so far, is registered too
        assert _cas(tmp_path, "source", "add", name, urls[name]).returncode == 0
    every = _cas(tmp_path, "fetch", "--all", "-j", "2")
    again = _cas(tmp_path, "fetch", "a")

    assert single.returncode == 0, single.stderr
    assert single.stdout.startswith(f"downloaded {sha256(bodies['a'])}  sources/a")
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout)["etag"] == '"a1"'
    assert check.returncode == 0 and check.stdout.startswith("unchanged a"), check
    assert every.returncode == 0, every.stderr
    lines = every.stdout.splitlines()  # --all fetches the sources in id order
    assert len(lines) == 3, every.stdout
    assert lines[0] == f"unchanged {sha256(bodies['a'])}  sources/a"
    assert lines[1].startswith(f"downloaded {sha256(bodies['b'])}  sources/b")
    assert lines[2].startswith(f"downloaded {sha256(bodies['c'])}  sources/c")
    assert again.stdout.strip() == f"unchanged {sha256(bodies['a'])}  sources/a"


def test_ctrl_c_during_fetch_all_stops_at_once_and_leaves_nothing_behind(
    faults: FaultServer, tmp_path
):
    # One fetch streams a body that never ends; the other waits for its source's fetch
    # lock, held here. Ctrl-C must end both now (not after the lock's 6 hours), remove
    # the partial body, and leave no lock of the command's behind.
    def endless(req: Request) -> None:
        req.start(200, {"Content-Length": str(100 << 20)})
        req.write(b"x" * 65536)
        faults.pause(30)

    faults.route("/endless.bin", endless)
    faults.route("/locked.json", Resource(b"[1]\n", etag='"l"'))
    assert _cas(tmp_path, "init").returncode == 0
    for name, path in (("endless", "/endless.bin"), ("locked", "/locked.json")):
        assert _cas(tmp_path, "source", "add", name, faults.url(path)).returncode == 0
    store = tmp_path / ".casstore"
    held = LockFile(store / "locks" / "fetch" / "locked")
    held.acquire()
    try:
        proc = _start_fetch_all(tmp_path)
        deadline = time.monotonic() + 20
        while not faults.seen("/endless.bin", "GET") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the body is streaming, the other fetch waits for the lock
        err = _interrupt(proc)
    finally:
        held.release()

    assert proc.returncode == 130, err
    assert err.strip() == "cas: error: interrupted", err
    assert list((store / "tmp").iterdir()) == []
    assert [p.name for p in (store / "locks" / "fetch").iterdir()] == []
    again = _cas(tmp_path, "fetch", "locked")
    assert again.returncode == 0 and again.stdout.startswith("downloaded "), again


def test_ctrl_c_while_gc_holds_the_store_lock_stops_fetch_all_at_once(
    faults: FaultServer, tmp_path
):
    # gc (or an index rebuild) holds the store lock exclusively for as long as it runs;
    # every fetch of the batch waits for it, and Ctrl-C must end those waits now.
    faults.route("/a.json", Resource(b"[1]\n", etag='"a"'))
    faults.route("/b.json", Resource(b"[2]\n", etag='"b"'))
    assert _cas(tmp_path, "init").returncode == 0
    for name in ("a", "b"):
        assert _cas(tmp_path, "source", "add", name, faults.url(f"/{name}.json")).returncode == 0
    store = tmp_path / ".casstore"
    with StoreLock(store / "lock").hold(exclusive=True):
        proc = _start_fetch_all(tmp_path)
        time.sleep(1.5)  # started, and waiting for the store lock
        err = _interrupt(proc)

    assert proc.returncode == 130, err
    assert err.strip() == "cas: error: interrupted", err
    assert faults.seen("/a.json") == [] and faults.seen("/b.json") == []
    assert _cas(tmp_path, "fetch", "--all").returncode == 0
