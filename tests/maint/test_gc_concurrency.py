"""gc alongside four processes that add files and move their refs: nothing a ref or a kept
reflog entry reaches may go missing, and every add must succeed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests._helpers import check_store, sha256

WORKERS = 4
FILES = 100
BATCH = 25  # files a worker adds per round; one gc run is started alongside each round


def content(worker: int, i: int) -> bytes:
    if i % 5 == 0:
        # The same bytes in every worker and again every 20 files: adds that find the object
        # already there (or collected a round ago) while a gc may be deciding its fate.
        return f"shared file {i % 20}\n".encode()
    return f"worker {worker} file {i}\n".encode() * (1 + i % 7)


def cas_exe() -> str:
    beside = Path(sys.executable).parent / "cas"
    found = str(beside) if beside.is_file() else shutil.which("cas")
    assert found, "the `cas` command is not installed"
    return found


# Each worker is one process that runs the `cas` entry point once per file, exactly as
# `cas add FILE --ref workers/wN` would: 400 separate interpreter start-ups would take a
# minute on two cores, and what is under test is the store's locking, not start-up.
# Workers add in rounds of BATCH files, each started by a line on stdin and reported done by
# a line on stdout, and a gc run is started with every round (no sleeps). Four writers that
# take turns with the shared lock keep a waiting gc out until they all stop, so without
# rounds every gc would run after the last add.
WORKER = textwrap.dedent(
    """
    import sys
    from casstore.cli import main
    from casstore.store import Store

    worker, files, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ref = f"workers/w{worker}"
    control, sys.stdout = sys.stdout, open(f"out{worker}", "w")
    for i in range(files):
        if i % batch == 0 and not sys.stdin.readline():
            sys.exit("the test went away")
        path = f"in{worker}/f{i:03d}"
        try:
            main(["add", path, "--ref", ref])
        except SystemExit as exc:
            if exc.code:
                sys.exit(exc.code)
        # Right after the move, outside any lock: the ref's object is there, intact.
        with Store.discover() as store, open(path, "rb") as f:
            if store.read(ref) != f.read():
                sys.exit(f"{ref} does not hold the bytes of {path}")
        if i % batch == batch - 1:
            sys.stdout.flush()
            print(i, file=control, flush=True)
    """
)


@pytest.mark.slow
def test_gc_alongside_four_adding_processes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("CAS_STORE", "CAS_DEBUG")}
    cas = cas_exe()
    subprocess.run([cas, "init"], cwd=tmp_path, env=env, check=True, capture_output=True)
    for w in range(WORKERS):
        d = tmp_path / f"in{w}"
        d.mkdir()
        for i in range(FILES):
            (d / f"f{i:03d}").write_bytes(content(w, i))

    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(w), str(FILES), str(BATCH)],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for w in range(WORKERS)
    ]
    # Harsh settings every other run: anything no ref names at that moment may go.
    harsh = ["gc", "--grace", "0", "--include-sources", "--reflog-expire", "0"]
    gc_runs = []
    try:
        for r in range(FILES // BATCH):
            for p in workers:
                p.stdin.write(b"go\n")
                p.stdin.flush()
            args = harsh if r % 2 == 0 else ["gc", "--grace", "0"]
            gc = subprocess.Popen(
                [cas, *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for p in workers:
                done = p.stdout.readline()
                assert done == f"{(r + 1) * BATCH - 1}\n".encode(), p.stderr.read().decode()
            out, err = gc.communicate(timeout=120)
            assert gc.returncode == 0, err.decode()
            gc_runs.append(out.decode())
    except BaseException:
        for p in workers:
            p.kill()
            p.wait()
        raise
    for p in workers:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    removed = [int(run.splitlines()[-1].split()[1]) for run in gc_runs]
    assert sum(removed) > 0, f"no gc run collected anything: {gc_runs}"

    for w in range(WORKERS):
        lines = (tmp_path / f"out{w}").read_text().splitlines()
        assert lines == [f"{sha256(content(w, i))}  in{w}/f{i:03d}" for i in range(FILES)]

    root = tmp_path / ".casstore"
    found = check_store(root)
    for w in range(WORKERS):
        assert found["refs"][f"workers/w{w}"] == sha256(content(w, FILES - 1))
    reached = set(found["refs"].values())
    for entries in found["reflogs"].values():
        reached |= {e[k] for e in entries for k in ("old", "new") if e[k]}
    missing = reached - set(found["objects"])
    assert not missing, f"objects a ref or reflog entry reaches are gone: {sorted(missing)}"

    verify = subprocess.run(
        [cas, "verify", "--json"], cwd=tmp_path, env=env, capture_output=True, timeout=120
    )
    assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()
    assert json.loads(verify.stdout)["problems"] == []
