"""Following the log: complete lines only, through compaction and deletion, and ``-f``."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from casstore.meta.admin import compact
from casstore.meta.models import MetadataRecord
from casstore.meta.repository import EmbeddedRepository
from casstore.meta.tail import LogFollower, last_lines
from casstore.store import Store

OLD = datetime(2020, 1, 1, tzinfo=UTC)


def put(repo: EmbeddedRepository, n: int, kind: str = "k", **kw) -> None:
    repo.store(MetadataRecord(kind=kind, payload={"n": n}, **kw))


def ns(lines: list[str]) -> list[int]:
    return [json.loads(line)["payload"]["n"] for line in lines]


def test_last_lines_are_complete_and_of_the_tenant(repo):
    for n in range(5):
        put(repo, n, tenant_id="acme" if n % 2 else None)
    with open(repo.log_path, "ab") as f:
        f.write(b'{"tenant_id": "default", "torn')
    assert ns(last_lines(repo.log_path, 10, "default")) == [0, 2, 4]
    assert ns(last_lines(repo.log_path, 2, "default")) == [2, 4]
    assert ns(last_lines(repo.log_path, 10, "acme")) == [1, 3]
    assert ns(last_lines(repo.log_path, 10)) == [0, 1, 2, 3, 4]
    assert last_lines(repo.log_path.with_name("none.jsonl"), 3) == []


def test_last_lines_across_many_blocks(repo):
    repo.bulk_store({"kind": "k", "payload": {"n": n, "pad": "x" * 300}} for n in range(2000))
    assert ns(last_lines(repo.log_path, 1500, "default")) == list(range(500, 2000))


def test_poll_returns_new_lines_once_they_are_complete(repo):
    put(repo, 0)
    with LogFollower(repo.log_path, "default") as follower:
        assert ns(follower.last(5)) == [0]
        assert follower.poll() == []
        put(repo, 1)
        put(repo, 2, tenant_id="acme")
        put(repo, 3)
        assert ns(follower.poll()) == [1, 3]
        line = MetadataRecord(kind="k", payload={"n": 4}, tenant_id="default").to_json()
        with open(repo.log_path, "ab") as f:
            f.write(line[:10].encode())
            f.flush()
            assert follower.poll() == []  # being written: not yet
            f.write(line[10:].encode() + b"\n")
        assert ns(follower.poll()) == [4]
        assert follower.poll() == []


def test_poll_survives_compaction_without_repeating_lines(repo):
    for n in range(4):
        put(repo, n, produced_at=OLD if n % 2 else datetime.now(UTC))
    with LogFollower(repo.log_path, "default") as follower:
        follower.last(2)
        put(repo, 10)  # appended before compaction, not yet seen
        inode = os.stat(repo.log_path).st_ino
        assert compact(repo, {"k": "30d"}).dropped == {"k": 2}
        assert os.stat(repo.log_path).st_ino != inode  # the log was replaced
        put(repo, 11)
        assert ns(follower.poll()) == [10, 11]
        put(repo, 12)
        assert ns(follower.poll()) == [12]


def test_poll_after_compaction_dropped_the_last_line_seen(repo):
    put(repo, 0)
    put(repo, 1, produced_at=OLD - timedelta(days=1))
    with LogFollower(repo.log_path, "default") as follower:
        assert ns(follower.last(5)) == [0, 1]
        compact(repo, {"k": "30d"})
        put(repo, 2)
        assert ns(follower.poll()) == [2]


def test_poll_waits_for_a_deleted_log_and_reads_the_next_one_whole(repo):
    put(repo, 0)
    with LogFollower(repo.log_path, "default") as follower:
        follower.last(1)
        repo.log_path.unlink()
        assert follower.poll() == []
        assert follower.poll() == []
        put(repo, 1)
        put(repo, 2)
        assert ns(follower.poll()) == [1, 2]


def test_follow_yields_what_arrives_between_polls_until_stopped(repo):
    numbers = iter(range(2))
    polls = 0

    def sleep(_: float) -> None:  # instead of waiting, store the next record
        put(repo, next(numbers))

    def stop() -> bool:
        nonlocal polls
        polls += 1
        return polls == 3

    with LogFollower(repo.log_path, "default") as follower:
        follower.last(0)
        assert ns(list(follower.follow(0, stop=stop, sleep=sleep))) == [0, 1]


def test_cas_meta_tail_follow_in_a_real_process(store: Store, tmp_path: Path):
    """``cas meta tail -f``: prints new records as they come, through a compaction and a
    deleted log, and Ctrl-C ends it quietly (exit 0)."""
    repo = store.metadata()
    put(repo, 0, produced_at=OLD)
    put(repo, 1)
    cas = Path(sys.executable).parent / "cas"
    proc = subprocess.Popen(
        [
            str(cas),
            "--store",
            str(store.root),
            "meta",
            "tail",
            "-f",
            "-n",
            "1",
            "--json",
            "--interval",
            "0.02",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            out.put(raw)

    threading.Thread(target=pump, daemon=True).start()

    def next_n() -> int:
        return json.loads(out.get(timeout=20))["payload"]["n"]

    try:
        assert next_n() == 1  # the last record at start
        put(repo, 2)
        assert next_n() == 2
        compact(repo, {"k": "30d"})  # drops n=0, replaces the log
        put(repo, 3)
        assert next_n() == 3  # nothing repeated after the log was replaced
        repo.log_path.unlink()
        put(repo, 4)
        assert next_n() == 4
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert err == b""
    assert out.empty()
