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
import subprocess
from pathlib import Path

from tests.e2e.conftest import _find_cas
from tests.fetch.conftest import FaultServer, Resource, sha256


def _cas(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CAS_STORE", "CAS_DEBUG")}
    env["NETRC"] = str(cwd / "no-such-netrc")
    return subprocess.run(
        [_find_cas(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


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
