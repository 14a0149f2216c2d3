"""Benchmark: the metadata repository with 1,000,000 records.

Not a test: it prints throughput and latencies (medians). Targets (issue 6): bulk ingest at
50,000 records/s or more, ``latest`` under 5 ms, a filtered 7-day ``query`` under 100 ms.

    .venv/bin/python scripts/bench_meta.py                    # 1M records in a temp store
    .venv/bin/python scripts/bench_meta.py --records 200000 --dir /tmp/bm

The records: ``ingestion_volume`` payloads (bytes, records, status; 5% FAIL) about 1,000
sources, one every 30 s going back in time (so about 347 days), each with its own run id:
the shape a year of a busy pipeline's fetches has. They are made as plain dicts, the way
``cas meta import`` or a producer hands them over, and validated and stored by
``bulk_store``; the time to make the dicts is measured apart and quoted.

Then, in the same process (the repository is open, as in a long-running consumer):
``latest`` for random targets, and ``query(kind, payload.status = FAIL, since 7 days)``;
and the same two through the ``cas`` command (start-up included).
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from casstore.meta.models import MetadataTarget
from casstore.meta.repository import Condition
from casstore.store import Store

CAS = str(Path(sys.executable).parent / "cas")
TARGETS = 1000


def records(n: int, now: datetime, seed: int = 7) -> Iterator[dict[str, Any]]:
    """``n`` ingestion_volume records, newest first, as plain dicts."""
    rng = random.Random(seed)
    for i in range(n):
        yield {
            "kind": "ingestion_volume",
            "target": {"source_id": f"source-{i % TARGETS:04d}"},
            "produced_at": (now - timedelta(seconds=30 * i)).isoformat(),
            "producer_id": "bench",
            "context": {"run_id": f"run-{i:07d}"},
            "payload": {
                "bytes": rng.randrange(1 << 30),
                "records": rng.randrange(1 << 20),
                "status": "FAIL" if rng.random() < 0.05 else "ok",
            },
        }


def median_ms(fn: Any, runs: int) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    """Build the store, time the bulk load, then the reads."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--dir", help="where to make the store (default: a temp dir, removed)")
    ap.add_argument("--runs", type=int, default=50, help="calls per read measurement")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory() if not args.dir else None
    root = Path(tmp.name if tmp else args.dir) / "store"
    if root.exists():
        shutil.rmtree(root)
    try:
        store = Store.init(root)
        repo = store.metadata()
        now = datetime.now(UTC)
        n = args.records

        t = time.perf_counter()
        for _ in records(n, now):
            pass
        make_s = time.perf_counter() - t

        t = time.perf_counter()
        result = repo.bulk_store(records(n, now))
        load_s = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        log_mib = repo.log_path.stat().st_size / (1 << 20)
        print(f"bulk_store of {n:,} records: {load_s:.2f} s = {n / load_s:,.0f} records/s")
        print(
            f"  (making the dicts alone: {make_s:.2f} s; without it {n / (load_s - make_s):,.0f}/s)"
        )
        print(
            f"  stored {result.stored:,}, new {result.new:,}; log {log_mib:.0f} MiB;"
            f" peak RSS {peak:.0f} MiB"
        )

        rng = random.Random(1)
        targets = [
            MetadataTarget(source_id=f"source-{rng.randrange(TARGETS):04d}")
            for _ in range(args.runs)
        ]
        it = iter(targets)
        latest = median_ms(lambda: repo.latest(next(it), "ingestion_volume"), args.runs)
        print(f"latest (in process): median {latest:.2f} ms over {args.runs} targets")

        week = now - timedelta(days=7)
        cond = [Condition("payload.status", "=", "FAIL")]
        found = repo.query(kind="ingestion_volume", where=cond, since=week)
        query = median_ms(
            lambda: repo.query(kind="ingestion_volume", where=cond, since=week),
            max(5, args.runs // 5),
        )
        print(
            f"query kind + payload.status=FAIL + 7 days (in process): median {query:.1f} ms,"
            f" {len(found):,} records"
        )
        store.close()

        base = [CAS, "--store", str(root), "meta"]
        cli_latest = median_ms(
            lambda: subprocess.run(
                [
                    *base,
                    "latest",
                    "--kind",
                    "ingestion_volume",
                    "--target",
                    "source_id=source-0001",
                ],
                check=True,
                capture_output=True,
            ),
            5,
        )
        cli_query = median_ms(
            lambda: subprocess.run(
                [
                    *base,
                    "query",
                    "--kind",
                    "ingestion_volume",
                    "--where",
                    "payload.status=FAIL",
                    "--since",
                    "7d",
                    "--json",
                ],
                check=True,
                capture_output=True,
            ),
            5,
        )
        print(f"cas meta latest (process, start-up included): median {cli_latest:.0f} ms")
        print(f"cas meta query … --since 7d --json (process): median {cli_query:.0f} ms")
    finally:
        if tmp:
            tmp.cleanup()


if __name__ == "__main__":
    main()
