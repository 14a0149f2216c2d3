"""Four writer processes at once: no record lost, and the log replays to the same table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from casstore.store import Store
from tests.meta._model import log_docs, table_rows

WRITERS = 4
PER_WRITER = 300

# Each writer alternates single stores with small bulk stores, and stores some identities
# twice (the second time with one more field) so merges race too.
WRITER = """
import sys
from casstore.store import Store

root, w, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def record(i, **more):
    return {
        "kind": "ingestion_volume" if i % 2 else "custom",
        "target": {"source_id": f"w{w}", "table": f"t{i % 7}"},
        "payload": {"bytes": i, "writer": w, **more},
        "produced_at": f"2024-01-10T05:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "context": {"run_id": f"w{w}-r{i}"},
        "producer_id": f"writer-{w}",
    }

with Store.open(root) as store:
    repo = store.metadata()
    repo.count_all()  # index open and synced: ready
    print("ready", flush=True)
    sys.stdin.readline()  # go: every writer starts at once
    i = 0
    while i < n:
        if i % 50 < 40:
            repo.store(record(i))
            i += 1
        else:
            repo.bulk_store([record(j) for j in range(i, min(i + 5, n))], chunk=2)
            i += 5
    for i in range(0, n, 10):
        repo.store(record(i, again=True))
"""


def test_concurrent_writers_lose_nothing_and_the_log_replays_to_the_same_table(
    store: Store, tmp_path: Path
) -> None:
    root = store.root
    store.close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(w), str(PER_WRITER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for w in range(WRITERS)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.flush()
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()

    # every line complete, every store there: 300 records + 30 merges per writer
    docs = log_docs(root / "log" / "metadata.jsonl")
    assert len(docs) == WRITERS * (PER_WRITER + PER_WRITER // 10)
    with Store.open(root) as s:
        repo = s.metadata()
        records = repo.query()
        assert len(records) == WRITERS * PER_WRITER
        got = {(r.payload["writer"], r.payload["bytes"]) for r in records}
        assert got == {(w, i) for w in range(WRITERS) for i in range(PER_WRITER)}
        merged = {
            (r.payload["writer"], r.payload["bytes"]) for r in records if "again" in r.payload
        }
        assert merged == {(w, i) for w in range(WRITERS) for i in range(0, PER_WRITER, 10)}
        held = table_rows(root / "index.sqlite")

    # The index is a cache of the log: throw it away, and the replay holds the same rows.
    for suffix in ("", "-wal", "-shm"):
        (root / f"index.sqlite{suffix}").unlink(missing_ok=True)
    with Store.open(root) as s:
        assert len(s.metadata().query()) == WRITERS * PER_WRITER
    assert table_rows(root / "index.sqlite") == held
