"""Benchmarks: casstore against the standard tools, run side by side on the same files.

Not a test: it prints wall times (median of alternating runs), throughput, peak memory and
ratios. Run from the repository root:

    .venv/bin/python scripts/bench.py            # everything
    .venv/bin/python scripts/bench.py add small  # some groups
    .venv/bin/python scripts/bench.py --size-mib 256 --runs 5 add

Groups:
  help   `cas --help` start-up time
  add    `cas add` of a 1 GiB incompressible file against `openssl dgst -sha256 && cp`, and of
         a 1 GiB compressible JSON-lines file against `openssl dgst -sha256 && zstd -3`
         (and `dvc add`, `git annex add` when installed)
  small  `cas add` of a directory of 20,000 files of 1-8 KiB against `git add` (and `dvc add`),
         and against the floor of the store's layout (scripts/bench_layout.py)
  verify `cas verify` (SHA-256, and --fast with BLAKE3) of 2 GiB of stored objects against
         `sha256sum` and `openssl dgst -sha256` over the same files
  sample `cas sample --head/--random 1000` of a 1 GiB gzipped JSON array against zcat
         (runs scripts/bench_sample.py)
  log    `cas log` of a node 50 levels deep in a 100,000-object store (runs
         scripts/bench_log.py; building the store takes about a minute)
  meta   the metadata repository: bulk_store of 1,000,000 records, then latest and a
         filtered 7-day query (runs scripts/bench_meta.py)
  fetch  `cas fetch` of a 1 GiB file from nginx on 127.0.0.1 against
         `curl -s -o FILE URL && openssl dgst -sha256 FILE` and plain curl; the re-fetch of
         the unchanged file (a 304); `cas fetch --all -j 8` over 50 small sources against
         50 single fetches

Every tool reads its input from the page cache (a warm-up read comes first). `cas` is run
from the venv's bin directly (a pyenv shim would add ~90 ms per start). cas ends each add
with a filesystem barrier (syncfs) for durability; cp, zstd and git add do not sync, so the
comparison is conservative for cas.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
CAS = str(VENV_BIN / "cas")


def run(cmd: list[str] | str, *, cwd: Path | None = None) -> tuple[float, int]:
    """Run a command; return (wall seconds, peak RSS in MiB of the largest process)."""
    shell = isinstance(cmd, str)
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, shell=shell, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"bench: {cmd!r} failed ({proc.returncode}): {err.strip()}")
    return wall, usage.ru_maxrss // 1024


def compare(
    label: str,
    contenders: dict[str, Callable[[], list[str] | str]],
    runs: int,
    reset: Callable[[], None],
    size_bytes: int | None = None,
) -> dict[str, float]:
    """Alternate the contenders ``runs`` times; print medians and ratios to the first."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    mem: dict[str, int] = dict.fromkeys(contenders, 0)
    for _ in range(runs):
        for name, make_cmd in contenders.items():
            reset()
            wall, rss = run(make_cmd())
            times[name].append(wall)
            mem[name] = max(mem[name], rss)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    first = next(iter(medians))
    print(f"\n{label}")
    for name, med in medians.items():
        rate = f"{size_bytes / med / 1e6:8.0f} MB/s" if size_bytes else ""
        rel = "" if name == first else f"  cas/this = {medians[first] / med:.2f}x"
        print(f"  {name:<34} {med:7.3f} s {rate}  peak {mem[name]:5d} MiB{rel}")
    return medians


def warm(path: Path) -> None:
    """Read a file or tree once so every contender starts with it in the page cache."""
    subprocess.run(f"cat $(find {path} -type f) > /dev/null", shell=True, check=True)


def make_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 24)
            f.write(os.urandom(n))
            left -= n


def make_jsonl(path: Path, size: int) -> None:
    rng = random.Random(7)
    names = ["Synuefe", "Col 285", "HIP", "Wregoe", "Pru Euq", "Eol Prou", "Swoilz", "Hypio"]
    with open(path, "w") as f:
        written, i = 0, 0
        while written < size:
            lines = []
            for _ in range(10000):
                i += 1
                lines.append(
                    f'{{"id64":{rng.getrandbits(40)},"name":"{rng.choice(names)} '
                    f'{rng.choice("ABCDEFGH")}{rng.randint(1, 99)}-{i}","coords":{{"x":'
                    f'{rng.uniform(-4e4, 4e4):.3f},"y":{rng.uniform(-3e3, 3e3):.3f},'
                    f'"z":{rng.uniform(-1e4, 7e4):.3f}}},"population":{rng.randint(0, 10**9)},'
                    f'"updated":"2026-11-{rng.randint(1, 28):02d}T00:00:00Z"}}\n'
                )
            chunk = "".join(lines)
            f.write(chunk)
            written += len(chunk)


def bench_help(runs: int) -> None:
    times = []
    for _ in range(max(runs, 10)):
        times.append(run([CAS, "--help"])[0])
    print(f"\ncas --help: median {statistics.median(times) * 1000:.0f} ms over {len(times)} runs")


def bench_add(work: Path, size: int, runs: int) -> None:
    dest = work / "dest"
    store = work / "store"

    def reset() -> None:
        for p in (dest, store, work / "dvc", work / "annex"):
            shutil.rmtree(p, ignore_errors=True)
        subprocess.run([CAS, "init", str(store)], check=True, stdout=subprocess.DEVNULL)
        dest.mkdir()
        # Deleting the last run's GiB queues discards on this filesystem; let them land
        # before the clock starts, so no contender pays for another's cleanup.
        os.sync()

    for kind, maker, other_label, other in (
        ("incompressible", make_random, "openssl dgst -sha256 && cp", "cp {f} {d}/copy"),
        (
            "compressible JSON-lines",
            make_jsonl,
            "openssl dgst -sha256 && zstd -3",
            "zstd -3 -q -f {f} -o {d}/copy.zst",
        ),
    ):
        src = work / f"input-{kind.split()[0]}"
        if not src.exists():
            maker(src, size)
        os.sync()
        warm(src)
        contenders: dict[str, Callable[[], list[str] | str]] = {
            "cas add": lambda src=src: [CAS, "--store", str(store), "add", str(src)],
            other_label: lambda src=src, other=other: (
                f"openssl dgst -sha256 {src} && " + other.format(f=src, d=dest)
            ),
            "openssl dgst -sha256 (hash only)": lambda src=src: [
                "openssl",
                "dgst",
                "-sha256",
                str(src),
            ],
            # cas makes its writes durable before it answers; this is the like-for-like pair
            other_label + " && sync": lambda src=src, other=other: (
                f"openssl dgst -sha256 {src} && " + other.format(f=src, d=dest) + " && sync"
            ),
        }
        if shutil.which("dvc"):
            contenders["dvc add"] = lambda src=src: (
                f"mkdir -p {work}/dvc && cd {work}/dvc && git init -q && dvc init -q"
                f" && cp --reflink=auto {src} data && dvc add -q data"
            )
        else:
            print("(dvc not installed: skipped)")
        if shutil.which("git-annex"):
            contenders["git annex add"] = lambda src=src: (
                f"mkdir -p {work}/annex && cd {work}/annex && git init -q && git annex init -q"
                f" && cp {src} data && git annex add -q data"
            )
        else:
            print("(git-annex not installed: skipped)")
        compare(f"add {size >> 20} MiB {kind}", contenders, runs, reset, size)


def bench_small(work: Path, runs: int, count: int = 20000) -> None:
    tree = work / "small"
    if not tree.exists():
        rng = random.Random(3)
        for i in range(count):
            d = tree / f"d{i % 100:02d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i:05d}.json").write_bytes(os.urandom(8) + b"x" * rng.randint(1024, 8192))
    os.sync()
    warm(tree)
    # Every run writes into new directories, and the old ones are deleted only at the
    # end: on ext4, creating files soon after a mass delete costs much more CPU in the
    # kernel (its recently-deleted inode check), which would inflate whichever ran next.
    runs_dir = work / "small-runs"
    shutil.rmtree(runs_dir, ignore_errors=True)
    runs_dir.mkdir()
    n = itertools.count()
    store = gitdir = layout = runs_dir

    def reset() -> None:
        nonlocal store, gitdir, layout
        i = next(n)
        store, gitdir = runs_dir / f"store{i}", runs_dir / f"git{i}"
        layout = runs_dir / f"layout{i}"
        subprocess.run([CAS, "init", str(store)], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["git", "init", "-q", str(gitdir)], check=True)
        os.sync()
        time.sleep(1)

    contenders: dict[str, Callable[[], list[str] | str]] = {
        "cas add DIR": lambda: [CAS, "--store", str(store), "add", str(tree)],
        "git add": lambda: f"cd {tree} && git --git-dir={gitdir}/.git --work-tree=. add -A .",
        # the store's files and directories alone, made with bare system calls
        "layout floor (bench_layout.py)": lambda: [
            sys.executable,
            str(Path(__file__).parent / "bench_layout.py"),
            str(tree),
            str(layout),
        ],
    }
    if shutil.which("dvc"):
        contenders["dvc add"] = lambda: f"cd {work} && dvc add -q small"
    else:
        print("(dvc not installed: skipped)")
    try:
        compare(f"add a directory of {count} files of 1-8 KiB", contenders, runs, reset)
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)


class Nginx:
    """nginx serving ``root`` on a free loopback port, config and logs in ``work``."""

    def __init__(self, work: Path, root: Path) -> None:
        import socket

        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(exe).exists():
            raise SystemExit("bench: nginx is needed for the fetch group (apt-get install nginx)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = work / "nginx"
        conf.mkdir(exist_ok=True)
        (conf / "nginx.conf").write_text(
            f"""
worker_processes 1;
pid {conf}/nginx.pid;
error_log {conf}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {conf}/body;
    proxy_temp_path {conf}/proxy;
    fastcgi_temp_path {conf}/fastcgi;
    uwsgi_temp_path {conf}/uwsgi;
    scgi_temp_path {conf}/scgi;
    server {{ listen 127.0.0.1:{self.port}; root {root}; }}
}}
"""
        )
        self.proc = subprocess.Popen(
            [exe, "-p", str(conf), "-c", str(conf / "nginx.conf"), "-g", "daemon off;"]
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def bench_fetch(work: Path, size: int, runs: int) -> None:
    site = work / "site"
    site.mkdir(exist_ok=True)
    for d in (work, site):  # nginx workers run as nobody: they must be able to read here
        d.chmod(0o755)
    big = site / "big.bin"
    if not big.exists():
        make_random(big, size)
    for i in range(50):
        (site / f"small{i:02d}.json").write_text(f'{{"n": {i}}}\n' * 100)
    os.sync()
    warm(big)
    server = Nginx(work, site)
    store = work / "store"
    out = work / "curl.out"
    try:

        def reset() -> None:
            shutil.rmtree(store, ignore_errors=True)
            out.unlink(missing_ok=True)
            subprocess.run([CAS, "init", str(store)], check=True, stdout=subprocess.DEVNULL)
            os.sync()

        url = f"{server.base}/big.bin"
        contenders: dict[str, Callable[[], list[str] | str]] = {
            "cas fetch": lambda: [CAS, "--store", str(store), "fetch", url],
            "curl -o && openssl dgst -sha256": lambda: (
                f"curl -s -o {out} {url} && openssl dgst -sha256 {out}"
            ),
            "curl -o (no hash)": lambda: ["curl", "-s", "-o", str(out), url],
            "curl -o && openssl && sync": lambda: (
                f"curl -s -o {out} {url} && openssl dgst -sha256 {out} && sync"
            ),
        }
        compare(f"fetch {size >> 20} MiB from nginx on 127.0.0.1", contenders, runs, reset, size)

        reset()
        run([CAS, "--store", str(store), "fetch", url])
        times = [run([CAS, "--store", str(store), "fetch", url])[0] for _ in range(max(runs, 5))]
        print(
            f"\nre-fetch of the unchanged {size >> 20} MiB file (304):"
            f" median {statistics.median(times) * 1000:.0f} ms"
        )

        reset()
        for i in range(50):
            run(
                [
                    CAS,
                    "--store",
                    str(store),
                    "source",
                    "add",
                    f"s{i:02d}",
                    f"{server.base}/small{i:02d}.json",
                ]
            )
        t_all = []
        t_one = []
        for _ in range(runs):
            for ref in Path(store, "refs", "sources").glob("*"):
                ref.unlink()
            t_all.append(run([CAS, "--store", str(store), "fetch", "--all", "-j", "8"])[0])
            for ref in Path(store, "refs", "sources").glob("*"):
                ref.unlink()
            start = time.perf_counter()
            for i in range(50):
                run([CAS, "--store", str(store), "fetch", f"s{i:02d}"])
            t_one.append(time.perf_counter() - start)
        print(
            f"\n50 small sources: cas fetch --all -j 8 {statistics.median(t_all):.2f} s,"
            f" 50 single cas fetch runs {statistics.median(t_one):.2f} s"
        )
    finally:
        server.stop()


def bench_verify(work: Path, size: int, runs: int) -> None:
    """``cas verify`` of ``2 * size`` bytes of stored objects against sha256sum and openssl."""
    store = work / "vstore"
    if not (store / ".casstore").exists():
        subprocess.run([CAS, "init", str(store)], check=True, stdout=subprocess.DEVNULL)
        parts = 8
        for i in range(parts):
            part = work / f"vpart{i}"
            make_random(part, 2 * size // parts)
            run([CAS, "--store", str(store), "add", str(part)])
            part.unlink()
    files = sorted(str(p) for p in (store / ".casstore" / "objects").glob("??/*") if p.is_file())
    total = sum(os.path.getsize(f) for f in files)
    os.sync()
    for f in files:
        warm(Path(f))

    def reset() -> None:
        pass

    contenders: dict[str, Callable[[], list[str] | str]] = {
        "cas verify": lambda: [CAS, "--store", str(store), "verify"],
        "cas verify --fast (BLAKE3)": lambda: [CAS, "--store", str(store), "verify", "--fast"],
        "sha256sum (coreutils)": lambda: ["sha256sum", *files],
        "openssl dgst -sha256": lambda: ["openssl", "dgst", "-sha256", *files],
    }
    compare(f"verify {total >> 20} MiB of stored objects", contenders, runs, reset, total)


def main() -> None:
    """Parse arguments and run the chosen groups."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "groups",
        nargs="*",
        default=["help", "add", "small", "fetch", "verify", "sample", "log", "meta"],
    )
    ap.add_argument("--size-mib", type=int, default=1024, help="size of the big files")
    ap.add_argument("--runs", type=int, default=3, help="alternating runs per contender")
    ap.add_argument("--work", help="scratch directory (default: a temp dir, removed after)")
    args = ap.parse_args()
    if not shutil.which("openssl"):
        sys.exit("bench: openssl is needed as the reference")
    work_ctx = tempfile.TemporaryDirectory(dir=args.work) if not args.work else None
    work = Path(work_ctx.name) if work_ctx else Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"casstore benchmarks: {os.cpu_count()} cores, work dir {work}")
    try:
        if "help" in args.groups:
            bench_help(args.runs)
        if "add" in args.groups:
            bench_add(work, args.size_mib << 20, args.runs)
        if "small" in args.groups:
            bench_small(work, args.runs)
        if "fetch" in args.groups:
            bench_fetch(work, args.size_mib << 20, args.runs)
        if "verify" in args.groups:
            bench_verify(work, args.size_mib << 20, args.runs)
        here = Path(__file__).parent
        if "sample" in args.groups:
            subprocess.run(
                [
                    sys.executable,
                    str(here / "bench_sample.py"),
                    "--work",
                    str(work / "sample"),
                    "--size-mib",
                    str(args.size_mib),
                    "--runs",
                    str(args.runs),
                ],
                check=True,
            )
        if "log" in args.groups:
            subprocess.run(
                [
                    sys.executable,
                    str(here / "bench_log.py"),
                    "--dir",
                    str(work / "log"),
                    "--runs",
                    str(max(args.runs, 5)),
                ],
                check=True,
            )
        if "meta" in args.groups:
            subprocess.run(
                [sys.executable, str(here / "bench_meta.py"), "--dir", str(work / "meta")],
                check=True,
            )
    finally:
        if work_ctx:
            work_ctx.cleanup()


if __name__ == "__main__":
    main()
