import os
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from casstore.errors import StoreFormatError
from casstore.index import Index
from casstore.store import Store
from tests._helpers import json_lines, random_bytes

TABLES = ("objects", "records", "edges", "refs")


def dump(store: Store) -> dict[str, list[tuple]]:
    db = store.index.db
    return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in TABLES}


def populate(store: Store, tmp_path) -> dict[str, str]:
    files = {
        "a.jsonl": json_lines(50_000),
        "b.bin": random_bytes(20_000),
        "c.txt": b"small\n",
        "empty": b"",
    }
    ids = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        ids[name] = store.add(tmp_path / name, source_id="src", dataset="ds").id
    store.add(tmp_path / "c.txt", dataset="another")  # a second record for one object
    (tmp_path / "d.txt").write_bytes(b"derived\n")
    ids["d.txt"] = store.add(
        tmp_path / "d.txt",
        parents=[ids["a.jsonl"], ids["b.bin"]],
        transform="merge",
        params={"k": "v"},
    ).id
    store.set_ref("tags/v1", ids["a.jsonl"])
    store.set_ref("tags/v1", ids["b.bin"])
    store.set_ref("sources/src", ids["c.txt"])
    store.set_ref("tmp/gone", ids["c.txt"])
    store.delete_ref("tmp/gone")
    return ids


def test_rebuild_equals_incremental(store, tmp_path):
    ids = populate(store, tmp_path)
    incremental = dump(store)
    assert len(incremental["objects"]) == 5
    assert len(incremental["records"]) == 6
    assert len(incremental["edges"]) == 2
    assert [r[0] for r in incremental["refs"]] == ["sources/src", "tags/v1"]
    counts = store.rebuild_index()
    assert dump(store) == incremental
    assert counts.model_dump() == {"objects": 5, "records": 6, "edges": 2, "refs": 2}
    assert store.index.children(ids["a.jsonl"]) == [ids["d.txt"]]
    assert store.index.children(ids["d.txt"]) == []


def test_missing_index_is_rebuilt_on_first_use(store, tmp_path):
    populate(store, tmp_path)
    before = dump(store)
    listed = store.list_objects()
    root = store.root
    store.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{root}/index.sqlite{suffix}"):
            os.unlink(f"{root}/index.sqlite{suffix}")
    with Store.open(root) as again:
        assert again.list_objects() == listed
        assert dump(again) == before
    assert (root / "index.sqlite").exists()


def test_an_empty_index_file_is_rebuilt(store, tmp_path):
    populate(store, tmp_path)
    listed = store.list_objects()
    root = store.root
    store.close()
    for suffix in ("-wal", "-shm"):
        if os.path.exists(f"{root}/index.sqlite{suffix}"):
            os.unlink(f"{root}/index.sqlite{suffix}")
    (root / "index.sqlite").write_bytes(b"")
    with Store.open(root) as again:
        assert again.list_objects() == listed


def test_a_damaged_index_says_how_to_fix_it(store, tmp_path):
    root = store.root
    store.close()
    (root / "index.sqlite").write_bytes(b"this is not a database" * 100)
    with Store.open(root) as again:
        with pytest.raises(StoreFormatError, match="cas index rebuild"):
            again.list_objects()
        again.rebuild_index()
        assert again.list_objects() == []


def test_index_runs_in_wal_mode(store):
    assert store.index.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_list_objects_reports_first_record_type_and_time(store, tmp_path):
    (tmp_path / "p").write_bytes(b"parent")
    (tmp_path / "c").write_bytes(b"child")
    p = store.add(tmp_path / "p")
    c = store.add(tmp_path / "c", parents=[p.id])
    rows = {o.id: o for o in store.list_objects()}
    assert rows[p.id].type == "import"
    assert rows[c.id].type == "derive"
    assert rows[p.id].created <= rows[c.id].created
    assert [o.id for o in store.list_objects()] == [p.id, c.id]  # oldest first


def test_index_is_built_flag(tmp_path):
    idx = Index(tmp_path / "i.sqlite")
    assert idx.fresh is True
    assert idx.is_built() is False
    idx.rebuild(lambda: ([], [], {}))
    assert idx.is_built() is True
    idx.close()
    again = Index(tmp_path / "i.sqlite")
    assert again.fresh is False and again.is_built() is True
    again.close()


def test_rebuild_replaces_stale_rows(tmp_path):
    idx = Index(tmp_path / "i.sqlite")
    with idx.transaction() as db:
        idx.put_object(db, "0" * 64, 1, 1, "none")
    idx.rebuild(lambda: ([("1" * 64, 2, 2, "none")], [], {"x": "1" * 64}))
    assert idx.counts() == {"objects": 1, "records": 0, "edges": 0, "refs": 1}
    assert [r.id for r in idx.objects()] == ["1" * 64]
    idx.close()


def test_a_failed_transaction_leaves_nothing(tmp_path):
    idx = Index(tmp_path / "i.sqlite")
    with pytest.raises(RuntimeError), idx.transaction() as db:
        idx.put_object(db, "0" * 64, 1, 1, "none")
        raise RuntimeError
    assert idx.counts()["objects"] == 0
    idx.close()
    assert sqlite3.connect(tmp_path / "i.sqlite").execute("SELECT 1").fetchone() == (1,)


def test_a_writer_that_died_before_indexing_triggers_a_rebuild(store, tmp_path):
    """A pending token left by a dead process means files the index may not know."""
    (tmp_path / "f").write_bytes(b"written, never indexed")
    oid = store.add(tmp_path / "f").id
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(dead.stdout)
    with store.index.transaction() as db:
        db.execute("DELETE FROM objects")
        db.execute("DELETE FROM records")
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?, '0')",
            (f"pending:{socket.gethostname()}:{pid}:0000",),
        )
    root = store.root
    store.close()
    with Store.open(root) as again:
        assert [o.id for o in again.list_objects()] == [oid]


def test_a_writer_that_exited_unreaped_counts_as_dead():
    """A zombie still answers kill(pid, 0); its token must count as a dead writer's."""
    from casstore.index import _writer_dead

    alive = f"pending:{socket.gethostname()}:{os.getpid()}:0000"
    assert not _writer_dead(alive, 0.0)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(200):  # until it has exited (not reaped: no wait yet)
            with open(f"/proc/{child.pid}/stat", "rb") as f:
                if f.read().rpartition(b")")[2].split()[0] == b"Z":
                    break
            time.sleep(0.05)
        assert _writer_dead(f"pending:{socket.gethostname()}:{child.pid}:0000", 0.0)
    finally:
        child.wait()
