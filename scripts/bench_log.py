"""Benchmark: `cas log` on a store of 100,000 objects, a node 50 levels deep.

Not a test: it prints wall times (median of several runs after one warm-up), start-up
included, with `cas` run from the venv's bin directly (a pyenv shim would add ~90 ms).
The target (issue 4) is under 0.3 s for `cas log` of a node 50 levels deep.

    .venv/bin/python scripts/bench_log.py                      # build in a temp dir, time, delete
    .venv/bin/python scripts/bench_log.py --dir /tmp/bl        # keep the store, reuse it next time
    .venv/bin/python scripts/bench_log.py --objects 20000 --extra 0.2

The graph: objects are laid out in blocks of DEPTH+1; in each block, the object at level
k > 0 is derived from the one at level k-1 (a chain DEPTH levels deep), and with
probability EXTRA it has one more parent at a lower level in a random earlier (or the same)
block, so chains cross. Level-0 objects are imports. The deep node asked about is the
last block's level-DEPTH object; the root asked about for `--children` is block 0's
level-0 object, which the extra edges make the most widely used; `cas why` goes from the
deep node to its own chain's level-0 object.

How the store is built: `Store.add_many` takes one parent list for all its inputs, so it
cannot make this graph, and 100,000 `Store.add` calls cost a filesystem barrier each.
This script takes the same write path as `add_many` without the per-call overhead:
`ObjectStore.write(durable=False)` and `write_record(durable=False)` for every object,
one `syncfs` barrier, then one index transaction with `Index.put_object`/`put_record`
(under the store lock, with a pending-writer token, as `add_many` does). The files on disk
are exactly what `cas add --parent` would have written; `cas verify` accepts the store.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from casstore import _fs
from casstore.records import DeriveRecord, ImportRecord, write_record
from casstore.refs import whoami
from casstore.store import Store

VENV_BIN = Path(sys.executable).parent
CAS = str(VENV_BIN / "cas")
PLAN_FILE = "bench_log.json"


def layout(n: int, depth: int, extra: float, seed: int) -> list[list[int]]:
    """Parents (indices) of each of ``n`` objects: see the module docstring."""
    rng = random.Random(seed)
    width = depth + 1
    parents: list[list[int]] = []
    for i in range(n):
        block, level = divmod(i, width)
        if level == 0:
            parents.append([])
            continue
        ps = [i - 1]
        if rng.random() < extra:
            j = rng.randrange(block + 1) * width + rng.randrange(level)
            if j not in ps:
                ps.append(j)
        parents.append(ps)
    return parents


def build(root: Path, n: int, depth: int, extra: float, seed: int) -> dict[str, object]:
    """Make the store under ``root``; return what to ask about."""
    parents = layout(n, depth, extra, seed)
    width = depth + 1
    user, host = whoami()
    started = time.perf_counter()
    with Store.init(root) as store:
        idx = store.index
        rows = []
        with store.lock.hold():
            token = idx.begin_pending()
            ids: list[str] = []
            for i, ps in enumerate(parents):
                stored = store.objects.write(io.BytesIO(f"bench {i}\n".encode()), durable=False)
                common = {
                    "object": stored.id,
                    "size": stored.size,
                    "blake3": stored.blake3,
                    "user": user,
                    "host": host,
                }
                if ps:
                    record = DeriveRecord(
                        **common,
                        parents=tuple(ids[p] for p in ps),
                        transform="step",
                        params={"level": str(i % width)},
                    )
                else:
                    record = ImportRecord(**common, path=f"/data/block-{i // width}")
                rid, _ = write_record(store.objects.dir, store.tmp, record, durable=False)
                rows.append((stored, rid, record))
                ids.append(stored.id)
            _fs.syncfs(store.root)  # one barrier before the index points at anything
            with idx.transaction() as db:
                for obj, rid, record in rows:
                    idx.put_object(db, obj.id, obj.size, obj.stored_size, obj.compression)
                    idx.put_record(db, rid, record)
                idx.end_pending(db, token)
        counts = idx.counts()
    last_full = (n // width) - 1
    if last_full < 0:
        raise SystemExit(f"bench: {n} objects make no chain {depth} levels deep")
    plan = {
        "objects": n,
        "depth": depth,
        "extra": extra,
        "seed": seed,
        "deep": ids[last_full * width + depth],
        "root": ids[0],
        "chain_root": ids[last_full * width],
        "counts": counts,
        "build_s": round(time.perf_counter() - started, 1),
    }
    (root / PLAN_FILE).write_text(json.dumps(plan, indent=2))
    return plan


def timed(args: list[str], runs: int) -> tuple[float, list[float], int]:
    """Median wall seconds of ``cas ARGS`` over ``runs`` (after a warm-up), and line count."""
    warm = subprocess.run([CAS, *args], capture_output=True, check=False)
    if warm.returncode != 0:
        raise SystemExit(f"bench: cas {' '.join(args)} failed: {warm.stderr.decode().strip()}")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([CAS, *args], stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, len(warm.stdout.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--extra", type=float, default=0.05, help="chance of a second parent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, help="keep the store here (reused when it exists)")
    opts = parser.parse_args()

    work = opts.dir or Path(tempfile.mkdtemp(prefix="bench-log-"))
    try:
        plan_file = work / PLAN_FILE
        if plan_file.exists():
            plan = json.loads(plan_file.read_text())
            print(f"reusing the store in {work}")
        else:
            print(f"building {opts.objects:,} objects in {work} ...", flush=True)
            plan = build(work, opts.objects, opts.depth, opts.extra, opts.seed)
            print(f"built in {plan['build_s']} s")
        print(
            f"store: {plan['counts']['objects']:,} objects, {plan['counts']['edges']:,} edges,"
            f" chains {plan['depth']} deep, extra-parent chance {plan['extra']}"
        )
        store = ["--store", str(work)]
        cases = [
            ("cas --version (start-up only)", ["--version"]),
            (f"cas log <node {plan['depth']} levels deep>", [*store, "log", plan["deep"]]),
            ("cas log --json <same>", [*store, "log", "--json", plan["deep"]]),
            ("cas log --graph <same>", [*store, "log", "--graph", plan["deep"]]),
            ("cas log --children <root>", [*store, "log", "--children", plan["root"]]),
            ("cas why <deep> <chain root>", [*store, "why", plan["deep"], plan["chain_root"]]),
        ]
        print(f"\nmedian of {opts.runs} runs after a warm-up, wall time, start-up included:")
        for label, args in cases:
            median, times, lines = timed(args, opts.runs)
            spread = ", ".join(f"{t:.3f}" for t in sorted(times))
            print(f"  {label:<34} {median:7.3f} s   ({lines:,} lines; runs {spread})")
    finally:
        if opts.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
