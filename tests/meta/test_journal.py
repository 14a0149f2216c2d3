"""The log is the truth: torn lines, lost commits, a deleted log, compaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from casstore.meta.admin import compact
from casstore.meta.models import MetadataRecord, MetadataTarget
from casstore.meta.repository import EmbeddedRepository
from casstore.store import Store
from tests.meta._model import log_docs, normal, open_repo, table_rows

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def rec(
    kind: str = "k", days_ago: float = 0, n: int = 0, payload: dict | None = None, **kw
) -> MetadataRecord:
    """A record about source ``s``, ``days_ago`` (and ``n`` seconds) before NOW."""
    return MetadataRecord(
        kind=kind,
        target=MetadataTarget(source_id="s"),
        payload={"n": n} if payload is None else payload,
        produced_at=NOW - timedelta(days=days_ago, seconds=n),
        **kw,
    )


def fresh(repo: EmbeddedRepository, tmp_path: Path, name: str = "fresh") -> EmbeddedRepository:
    """Another repository over the same log with a brand-new index (a full replay)."""
    return open_repo(repo.log_path.parent, tmp_path / f"{name}.sqlite", repo.tenant)


def test_a_torn_last_line_is_ignored_by_readers_and_cut_by_the_next_writer(repo, tmp_path):
    for n in range(3):
        repo.store(rec(n=n))
    log = repo.log_path
    whole = log.read_bytes()
    torn = b'{"kind":"k","target":{},"payload":{"n":99},"produced_at":"2024-'
    with open(log, "ab") as f:
        f.write(torn)  # a writer killed in the middle of its write

    reader = fresh(repo, tmp_path)
    assert [r.payload["n"] for r in reader.query()] == [0, 1, 2]
    assert len(repo.tail_lines(10)) == 3
    assert [r.payload["n"] for r in repo.query()] == [0, 1, 2]
    assert log.read_bytes() == whole + torn, "a reader changed the log"

    repo.store(rec(n=3))
    assert log.read_bytes().startswith(whole)
    assert [d["payload"]["n"] for d in log_docs(log)] == [0, 1, 2, 3]  # cut, then appended
    assert [r.payload["n"] for r in fresh(repo, tmp_path, "again").query()] == [0, 1, 2, 3]


def test_lines_appended_but_never_committed_are_applied_by_the_next_reader(repo, tmp_path):
    """A writer that died between its append and its commit loses nothing."""
    repo.store(rec(n=0))
    assert len(repo.query()) == 1
    line = rec(n=1).model_copy(update={"tenant_id": "default"}).to_json()
    with open(repo.log_path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
    assert [r.payload["n"] for r in repo.query()] == [0, 1]
    repo.store(rec(n=2))
    assert [r.payload["n"] for r in repo.query()] == [0, 1, 2]
    assert table_rows(tmp_path / ".casstore" / "index.sqlite") == table_rows_of(
        fresh(repo, tmp_path)
    )


def table_rows_of(repo: EmbeddedRepository) -> list[tuple]:
    repo.count_all()  # replay
    return sorted(repo.db.execute("SELECT * FROM meta_records").fetchall())


def test_deleting_the_log_empties_the_table(repo):
    for n in range(3):
        repo.store(rec(kind=f"k{n}", n=n))
    assert repo.kinds_in_use() == {"k0": 1, "k1": 1, "k2": 1}
    repo.log_path.unlink()
    assert repo.query() == []
    assert repo.kinds_in_use() == {}
    assert repo.count_all() == 0
    repo.store(rec(kind="after", n=9))
    assert [r.kind for r in repo.query()] == ["after"]
    assert [d["kind"] for d in log_docs(repo.log_path)] == ["after"]


def test_a_lost_index_is_rebuilt_from_the_log(store, tmp_path):
    repo = store.metadata()
    repo.store(rec(n=1))
    repo.store(rec(n=1, payload={"n": 1, "extra": True}))  # same identity: a merge
    repo.store(rec(n=2, tenant_id="other"))
    before = table_rows(store.root / "index.sqlite")
    store.close()
    for suffix in ("", "-wal", "-shm"):
        (store.root / f"index.sqlite{suffix}").unlink(missing_ok=True)
    with Store.open(store.root) as again:
        repo2 = again.metadata()
        assert [r.payload for r in repo2.query()] == [{"n": 1, "extra": True}]
        assert table_rows(again.root / "index.sqlite") == before


def test_unreadable_lines_are_skipped_and_counted(repo, tmp_path):
    repo.store(rec(n=1))
    with open(repo.log_path, "ab") as f:
        f.write(b"not json at all\n[1, 2]\n")
    repo.store(rec(n=2))
    reader = fresh(repo, tmp_path)
    assert [r.payload["n"] for r in reader.query()] == [1, 2]  # newest (n=1) first
    assert reader.journal.skipped() == 2


# ---- compaction ------------------------------------------------------------------------


def _seed(repo: EmbeddedRepository) -> None:
    for n, days in enumerate((200, 100, 50, 10, 1)):
        repo.store(rec(kind="ingestion_volume", days_ago=days, n=n, payload={"bytes": n}))
        repo.store(rec(kind="schema_snapshot", days_ago=days, n=n, payload={"columns": []}))
        repo.store(rec(kind="custom", days_ago=days, n=n, tenant_id="acme"))


def test_compaction_drops_by_retention_and_the_table_agrees_with_the_log(store, tmp_path):
    repo = store.metadata()
    _seed(repo)
    log = repo.log_path
    before = log.read_bytes()
    retention = {"ingestion_volume": "90d", "custom": "30d"}

    plan = compact(repo, retention, dry_run=True, now=NOW)
    assert plan.dropped == {"custom": 3, "ingestion_volume": 2}
    assert log.read_bytes() == before, "a dry run changed the log"

    done = compact(repo, retention, now=NOW)
    assert done.dropped == plan.dropped
    assert done.total == 5
    docs = log_docs(log)
    assert len(docs) == 15 - 5
    kept = sorted((d["kind"], d["produced_at"][:10]) for d in docs)
    assert ("ingestion_volume", "2023-11-14") not in kept  # 200 days old
    assert ("schema_snapshot", "2023-11-14") in kept  # no retention: kept forever
    # the table is exactly the log, replayed
    assert table_rows(store.root / "index.sqlite") == table_rows_of(fresh(repo, tmp_path))
    assert normal(repo.query(kind="ingestion_volume")) == normal(
        d for d in reversed(docs) if d["kind"] == "ingestion_volume"
    )
    assert compact(repo, retention, now=NOW).dropped == {}  # nothing left to drop


def test_compaction_can_be_limited_to_one_tenant(repo):
    _seed(repo)
    report = compact(repo, {"custom": "30d", "ingestion_volume": "30d"}, tenant="acme", now=NOW)
    assert report.dropped == {"custom": 3}
    assert len(repo.query(kind="ingestion_volume")) == 5


def test_compaction_never_drops_what_it_cannot_read(repo):
    repo.store(rec(kind="k", days_ago=400))
    with open(repo.log_path, "ab") as f:
        f.write(b'{"no": "kind"}\n')
    assert compact(repo, {"k": "1d"}, now=NOW).dropped == {"k": 1}
    assert repo.log_path.read_bytes() == b'{"no": "kind"}\n'


def test_a_bad_retention_is_a_usage_error(repo):
    from casstore.errors import UsageError

    with pytest.raises(UsageError, match="not a duration"):
        compact(repo, {"k": "ninety days"}, now=NOW)


def test_records_stored_after_compaction_land_in_the_new_log(repo, tmp_path):
    _seed(repo)
    compact(repo, {"ingestion_volume": "1d"}, now=NOW)
    other = fresh(repo, tmp_path)  # another handle, synced before the next write
    assert len(other.query(kind="ingestion_volume")) == 0
    other.store(rec(kind="ingestion_volume", n=7, payload={"bytes": 7}))
    assert [r.payload for r in repo.query(kind="ingestion_volume")] == [{"bytes": 7}]
    assert json.loads(repo.tail_lines(1)[0])["payload"] == {"bytes": 7}
