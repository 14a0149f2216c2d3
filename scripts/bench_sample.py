"""Benchmark ``cas sample`` on a large gzipped JSON array against zcat.

Not a test: it prints wall times (median of alternating runs) and peak memory. It builds
(once, cached in ``--work``) a gzipped JSON array of about ``--size-mib`` MiB with one
record per line, the layout of large public dumps, then times:

* ``cas sample OBJ --head 1000`` against ``zcat FILE | head -n 1000 > /dev/null``
* ``cas sample OBJ --random 1000`` against ``zcat FILE > /dev/null``

Each ``cas`` run gets a fresh store (hard links to a template holding the file), so no
run finds the previous one's sample in the recipe memo. ``cas`` runs from the venv's bin
directly; peak RSS comes from ``os.wait4``. Every tool reads from the page cache (a warm-up
read comes first).

The file is generated fast: 64 distinct blocks of records are gzipped once each and
written as gzip members, cycling until the size is reached (``zcat``, ``gzip -t`` and cas
read concatenated members as one stream); record ids keep growing across the file.

    .venv/bin/python scripts/bench_sample.py --size-mib 1024 --work /tmp/cas-bench
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
CAS = str(VENV_BIN / "cas")
# Until `cas sample` is registered in casstore.cli.commands, run it through its module.
_CAS_SAMPLE = [
    sys.executable,
    "-c",
    "import sys, casstore.cli.sample_cmds; from casstore.cli import main; main(sys.argv[1:])",
]


def cas_command() -> list[str]:
    """The command that runs ``cas`` with ``sample`` available."""
    probe = subprocess.run([CAS, "sample", "--help"], capture_output=True)
    return [CAS] if probe.returncode == 0 else _CAS_SAMPLE


BLOCKS = 64
BLOCK_RECORDS = 20_000


def _block(rng: random.Random, first_id: int) -> bytes:
    """One block of records, one per line, each followed by a comma."""
    lines = []
    for i in range(first_id, first_id + BLOCK_RECORDS):
        doc = {
            "id": i,
            "id64": rng.getrandbits(56),
            "name": f"Sector {rng.choice('ABCDEFGHJK')}{rng.choice('LMNPQRSTVWXYZ')}-"
            f"{rng.choice('abcdefgh')} d{rng.randrange(200)}-{rng.randrange(5000)}",
            "coords": {
                "x": round(rng.uniform(-45000, 45000), 5),
                "y": round(rng.uniform(-3000, 3000), 5),
                "z": round(rng.uniform(-20000, 70000), 5),
            },
            "requirePermit": rng.random() < 0.01,
            "date": f"20{rng.randrange(15, 25)}-{rng.randrange(1, 13):02d}-"
            f"{rng.randrange(1, 29):02d} {rng.randrange(24):02d}:{rng.randrange(60):02d}:00",
        }
        lines.append(b"    " + json.dumps(doc, separators=(",", ":")).encode() + b",\n")
    return b"".join(lines)


def _gzip_member(data: bytes, level: int = 6) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def build(path: Path, size_mib: int) -> None:
    """Write the gzipped JSON array (skipped when it already exists)."""
    if path.exists():
        return
    print(f"building {path} (~{size_mib} MiB gzipped)...", flush=True)
    rng = random.Random(42)
    target = size_mib << 20
    tmp = path.with_suffix(".part")
    members = []
    raw_sizes = []
    for b in range(BLOCKS):
        block = _block(rng, b * BLOCK_RECORDS)
        raw_sizes.append(len(block))
        members.append(_gzip_member(block))
    written = 0
    raw = 0
    with open(tmp, "wb") as f:
        f.write(_gzip_member(b"[\n"))
        i = 0
        while written < target:
            f.write(members[i % BLOCKS])
            written += len(members[i % BLOCKS])
            raw += raw_sizes[i % BLOCKS]
            i += 1
        last = {"id": i * BLOCK_RECORDS, "name": "last"}
        f.write(_gzip_member(b"    " + json.dumps(last).encode() + b"\n]\n"))
    os.replace(tmp, path)
    print(
        f"  {written / 2**20:.0f} MiB gzipped, {raw / 2**30:.2f} GiB of JSON,"
        f" {i * BLOCK_RECORDS + 1:,} records",
        flush=True,
    )


def run(cmd: list[str] | str) -> tuple[float, int]:
    """Run a command; return (wall seconds, peak RSS in MiB of its largest process)."""
    shell = isinstance(cmd, str)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"bench: {cmd!r} failed ({code}): {err.strip()}")
    return wall, usage.ru_maxrss // 1024


def template_store(work: Path, data: Path) -> tuple[Path, str]:
    """A store holding the file, made once; returns (store dir, object id)."""
    tpl = work / "template"
    id_file = work / "template.id"
    if not (tpl / ".casstore").is_dir() or not id_file.exists():
        shutil.rmtree(tpl, ignore_errors=True)
        subprocess.run([CAS, "init", str(tpl)], check=True, stdout=subprocess.DEVNULL)
        out = subprocess.run(
            [CAS, "--store", str(tpl), "add", str(data)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        id_file.write_text(out.split()[0])
    return tpl, id_file.read_text().strip()


def fresh_store(tpl: Path, dest: Path) -> None:
    """A copy of the template store: object files hard-linked, everything else copied."""
    shutil.rmtree(dest, ignore_errors=True)

    def copy(src: str, dst: str) -> object:
        if "/objects/" in src and not src.endswith(".json"):
            return os.link(src, dst)
        return shutil.copy2(src, dst)

    shutil.copytree(tpl, dest, copy_function=copy)


def main() -> None:
    """Parse arguments, build the data, run the comparisons, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024, help="gzipped size (default 1024)")
    ap.add_argument("--work", type=Path, help="work directory (cached data); default a temp dir")
    ap.add_argument("--runs", type=int, default=3, help="runs per contender (median)")
    ap.add_argument("-n", type=int, default=1000, help="records per sample (default 1000)")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cas-bench-sample-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"dump-{args.size_mib}.json.gz"
    if args.build_only:
        build(data, args.size_mib)
        return
    if not data.exists():
        # In a child process: a child's peak RSS, as os.wait4 reports it, starts from the
        # RSS of the process it was forked from, so this one must stay small.
        cmd = [sys.executable, __file__, "--build-only", "--size-mib", str(args.size_mib)]
        subprocess.run([*cmd, "--work", str(work)], check=True)
    tpl, oid = template_store(work / f"s{args.size_mib}", data)
    run(f"cat {data} > /dev/null")  # warm the page cache
    store = work / "run-store"
    n = args.n
    cas = cas_command()
    if cas != [CAS]:
        print("(cas has no 'sample' command registered yet: running it via its module)")
    contenders = {
        f"head {n}": (
            [*cas, "--store", str(store), "sample", oid, "--head", str(n)],
            f"zcat {data} | head -n {n} > /dev/null",
        ),
        f"random {n}": (
            [*cas, "--store", str(store), "sample", oid, "--random", str(n)],
            f"zcat {data} > /dev/null",
        ),
    }
    print(f"\n{data.name}: {data.stat().st_size / 2**20:.0f} MiB; median of {args.runs} runs")
    print(f"{'':24s} {'cas':>9s} {'baseline':>9s} {'ratio':>6s} {'cas RSS':>8s}  baseline")
    for label, (cas_cmd, base_cmd) in contenders.items():
        cas_t, base_t, rss = [], [], 0
        for _ in range(args.runs):
            fresh_store(tpl, store)
            wall, mem = run(cas_cmd)
            cas_t.append(wall)
            rss = max(rss, mem)
            base_t.append(run(base_cmd)[0])
        c, b = statistics.median(cas_t), statistics.median(base_t)
        print(f"cas sample --{label:13s} {c:8.2f}s {b:8.2f}s {c / b:6.2f} {rss:6d} MiB  {base_cmd}")
    shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    main()
