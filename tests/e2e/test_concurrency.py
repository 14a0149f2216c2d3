"""Several `cas` processes writing one store at once."""

import collections
import itertools
import json
import subprocess
import sys
import textwrap

import pytest

from tests._helpers import check_store, sha256

WORKERS = 4
FILES = 200
SHARED = 20  # files with the same bytes in every worker's directory


def content(worker: int, i: int) -> bytes:
    if i < SHARED:
        return f"shared file {i}\n".encode() * (i + 1)
    return f"worker {worker} file {i}\n".encode() * (1 + i % 50)


def make_dirs(tmp_path):
    expected: dict[int, dict[str, bytes]] = {}
    for w in range(WORKERS):
        d = tmp_path / f"in{w}"
        d.mkdir()
        expected[w] = {}
        for i in range(FILES):
            (d / f"f{i:03d}").write_bytes(content(w, i))
            expected[w][f"in{w}/f{i:03d}"] = content(w, i)
    return expected


@pytest.mark.slow
def test_four_cas_add_processes_at_once(run, tmp_path, cas_exe, env):
    run("init")
    expected = make_dirs(tmp_path)
    script = textwrap.dedent(
        """
        set -e
        "$CAS" add "in$1" > "out$1"
        "$CAS" ref set "workers/w$1" "$2" > /dev/null
        "$CAS" ref set --expect "$2" "workers/w$1" "$3" > /dev/null
        "$CAS" ref set shared/last "$3" > /dev/null
        """
    )
    procs = []
    for w in range(WORKERS):
        first, last = sha256(content(w, SHARED)), sha256(content(w, FILES - 1))
        procs.append(
            subprocess.Popen(
                ["sh", "-c", script, "sh", str(w), first, last],
                cwd=tmp_path,
                env={**env, "CAS": cas_exe},
                stderr=subprocess.PIPE,
            )
        )
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()

    for w in range(WORKERS):
        lines = (tmp_path / f"out{w}").read_text().splitlines()
        assert sorted(lines) == sorted(f"{sha256(d)}  {p}" for p, d in expected[w].items())

    found = check_store(tmp_path / ".casstore")
    all_ids = {sha256(d) for files in expected.values() for d in files.values()}
    assert set(found["objects"]) == all_ids
    assert len(all_ids) == WORKERS * (FILES - SHARED) + SHARED
    # one import record per (object, path): shared bytes have one per worker
    assert len(found["records"]) == WORKERS * FILES
    for w in range(WORKERS):
        assert found["refs"][f"workers/w{w}"] == sha256(content(w, FILES - 1))
        log = found["reflogs"][f"workers/w{w}"]
        assert [(e["old"], e["new"]) for e in log] == [
            (None, sha256(content(w, SHARED))),
            (sha256(content(w, SHARED)), sha256(content(w, FILES - 1))),
        ]
    assert found["refs"]["shared/last"] in {sha256(content(w, FILES - 1)) for w in range(WORKERS)}
    shared_log = found["reflogs"]["shared/last"]
    assert len(shared_log) == WORKERS  # every worker's last file differs: 4 moves
    for prev, entry in itertools.pairwise(shared_log):
        assert entry["old"] == prev["new"]

    listed = json.loads(run("ls", "--json").stdout)
    assert {o["id"] for o in listed} == all_ids
    for w in range(WORKERS):
        assert run("cat", f"workers/w{w}").stdout == content(w, FILES - 1)


WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from casstore import RefConflict, Store

    root, worker, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    with Store.open(root) as store:
        for f in sorted(folder.iterdir()):
            result = store.add(f, ref=f"workers/w{worker}")
            while True:  # compare-and-swap retry loop on one ref shared by everyone
                current = store.refs.get("shared/chain")
                try:
                    store.set_ref("shared/chain", result.id, expected=current)
                    break
                except RefConflict:
                    continue
    print("done", flush=True)
    """
)


@pytest.mark.slow
def test_four_api_processes_moving_refs_per_file(run, tmp_path, env):
    """Every add moves the worker's ref, then a compare-and-swap on one shared ref."""
    run("init")
    expected = {}
    for w in range(WORKERS):
        d = tmp_path / f"api{w}"
        d.mkdir()
        for i in range(FILES):
            data = f"api worker {w} file {i}\n".encode()
            (d / f"f{i:03d}").write_bytes(data)
            expected.setdefault(w, []).append(sha256(data))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path), str(w), str(tmp_path / f"api{w}")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for w in range(WORKERS)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        assert out == b"done\n"

    found = check_store(tmp_path / ".casstore")
    assert set(found["objects"]) == {i for ids in expected.values() for i in ids}
    assert len(found["records"]) == WORKERS * FILES
    for w in range(WORKERS):
        assert found["refs"][f"workers/w{w}"] == expected[w][-1]
        log = found["reflogs"][f"workers/w{w}"]
        assert [e["new"] for e in log] == expected[w]
    chain = found["reflogs"]["shared/chain"]
    assert len(chain) == WORKERS * FILES  # no successful compare-and-swap was lost
    assert chain[0]["old"] is None
    for prev, entry in itertools.pairwise(chain):
        assert entry["old"] == prev["new"]
    assert found["refs"]["shared/chain"] == chain[-1]["new"]
    assert sorted(e["new"] for e in chain) == sorted(i for ids in expected.values() for i in ids)


def test_four_processes_adding_the_same_files_leave_one_record_each(run, tmp_path, cas_exe, env):
    """Same bytes, same path, same user: identical provenance is one record, even in a race."""
    run("init")
    common = tmp_path / "common"
    common.mkdir()
    ids = set()
    for i in range(100):
        data = f"common file {i}\n".encode()
        (common / f"c{i:03d}").write_bytes(data)
        ids.add(sha256(data))
    procs = [
        subprocess.Popen([cas_exe, "add", "common"], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(WORKERS)
    ]  # fmt: skip
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        outputs.append(out)
    assert all(out == outputs[0] for out in outputs)
    found = check_store(tmp_path / ".casstore")
    assert set(found["objects"]) == ids
    assert len(found["records"]) == len(ids)
    per_object = collections.Counter(r.object for r in found["records"].values())
    assert per_object == dict.fromkeys(ids, 1)
    some = sorted(ids)[0]
    assert len(json.loads(run("show", "--json", some).stdout)["records"]) == 1
