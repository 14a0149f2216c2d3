"""The main job, offline: a daily dump served over HTTP on 127.0.0.1, fetched into a store
with its chain of custody, fetched again unchanged (a 304), fetched with two more sources
at once (``cas fetch --all``), fetched when it changes inside
a logged pipeline run, sampled, processed, traced, verified, collected; then its metadata
queried, a manifest written, the files exported with checksums and the run exported as
OpenLineage events.

Run by ``scripts/demo.sh``. It works on ``demo-out/``, a copy of the example store
``.casstore.example/``, so you can explore it afterwards with
``.venv/bin/cas --store demo-out ls``. Each step prints the ``cas`` command it runs.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _dumps import jsonl_gz, systems

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-out"
CAS = str(Path(sys.executable).parent / "cas")


TO_CSV = """\
import csv, json, sys

with open(sys.argv[1]) as src, open(sys.argv[2], "w", newline="") as dst:
    out = csv.writer(dst)
    out.writerow(["id64", "name", "population"])
    for line in src:
        r = json.loads(line)
        out.writerow([r["id64"], r["name"], r["population"]])
"""


def cas(*args: str, stdin: bytes | None = None, show: int = 12) -> str:
    """Run ``cas`` on the demo store, print the command and (the head of) its output."""
    print(f"\n$ cas {' '.join(args)}", flush=True)
    proc = subprocess.run(
        [CAS, "--store", str(OUT), *args],
        input=stdin,
        capture_output=True,
        check=False,
        cwd=ROOT,
    )
    out = proc.stdout.decode(errors="replace")
    lines = out.splitlines()
    for line in lines[:show]:
        print(f"  {line}")
    if len(lines) > show:
        print(f"  … ({len(lines) - show} more lines)")
    if proc.returncode != 0:
        sys.exit(f"demo: 'cas {' '.join(args)}' failed: {proc.stderr.decode().strip()}")
    return out


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A static file server on a free loopback port."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """No access log on the demo's output."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def publish(site: Path, day: int, *, mtime: float) -> None:
    """Put day ``day``'s dump on the server, with a Last-Modified of ``mtime``."""
    path = site / "systems.jsonl.gz"
    path.write_bytes(jsonl_gz(systems(20000, day=day)))
    os.utime(path, (mtime, mtime))


def main() -> None:
    """Run the workflow and print what a user would see."""
    if OUT.exists():
        shutil.rmtree(OUT)
    shutil.copytree(ROOT / ".casstore.example", OUT / ".casstore")
    site = OUT / "site"
    site.mkdir()
    now = time.time()
    publish(site, 1, mtime=now - 86400)
    server, base = serve(site)
    url = f"{base}/systems.jsonl.gz"
    print(f"serving today's dump at {url}")
    try:
        cas("ls")
        cas("source", "add", "systems", url, "--dataset", "star_systems", "--replace")
        cas("probe", url)
        print("\n# download once, verified: gzip CRC and length checked, content hashed")
        cas("fetch", "systems")
        print("\n# again: a conditional GET, answered 304; no body crosses the wire")
        cas("fetch", "systems")
        cas("fetch", "--check", "systems")
        print("\n# every registered source at once, over one client: new ones are downloaded,")
        print("# known ones cost a conditional GET")
        (site / "stations.csv").write_text(
            "station,system,pads\n" + "".join(f"st-{i},{i % 97},{i % 3}\n" for i in range(500))
        )
        (site / "bodies.json").write_text(
            json.dumps([{"body": i, "system": i % 97} for i in range(300)]) + "\n"
        )
        cas("source", "add", "stations", f"{base}/stations.csv", "--dataset", "stations")
        cas("source", "add", "bodies", f"{base}/bodies.json", "--dataset", "bodies")
        cas("fetch", "--all", "-j", "4")
        print("\n# tomorrow's dump appears; this time the pipeline logs a run around its steps")
        publish(site, 2, mtime=now)
        run_id = cas("runs", "start", "daily_ingest", "--trigger-type", "scheduler").strip()
        mine = [CAS, "--store", str(OUT)]
        cas("runs", "step", run_id, "download", "--type", "fetch", "--", *mine, "fetch", "systems")
        cas("ref", "log", "sources/systems")
        cas("show", "sources/systems", show=30)
        print("\n# samples of today's dump: streamed, reproducible, recorded with their recipe")
        cas("runs", "step", run_id, "sample", "--type", "sample", "--",
            *mine, "sample", "sources/systems", "--head", "100")  # fmt: skip
        cas("runs", "finish", run_id)
        cas("runs", "show", run_id, show=20)
        print("\n# what the fetches told the metadata repository")
        cas("meta", "latest", "--kind", "ingestion_volume", "--target", "source_id=systems")
        cas("meta", "history", "--kind", "ingestion_runtime", "--target", "source_id=systems")
        cas("meta", "put", "--kind", "recon_result", "--target", "source_id=systems",
            "--payload", '{"outcome": "PASS", "metric": "rows", "observed": 2000}')  # fmt: skip
        cas("meta", "query", "--kind", "recon_result", "--where", "payload.outcome=PASS",
            "--since", "1d")  # fmt: skip
        cas("sample", "sources/systems", "--random", "1000", "--seed", "7")
        print("\n# the same recipe again: answered from the store, the parent is not read")
        cas("sample", "sources/systems", "--random", "1000", "--seed", "7")
        cas("show", "samples/systems/head-100")
        cas("cat", "samples/systems/head-100", show=2)
        print("\n# a processing step with full provenance; the second time it is a memo hit")
        (OUT / "to_csv.py").write_text(TO_CSV)
        run = [
            "run",
            "--input",
            "sample=samples/systems/head-100",
            "--output",
            "demo-out/systems.csv",
            "--transform",
            "to-csv",
            "--",
            "python3",
            "demo-out/to_csv.py",
            "{sample}",
            "demo-out/systems.csv",
        ]
        cas(*run)
        csv_id = cas(*run).split()[-2]
        print("\n# the chain of custody of the CSV, back to the download")
        cas("log", csv_id, "--graph")
        print("\n# what the new download made stale (built from yesterday's version)")
        cas("stale")
        print("\n# prove that nothing changed: every object re-hashed, records, refs, index")
        cas("verify")
        cas("tag", "systems-csv-v2", csv_id)
        print("\n# reclaim space: the plan first (yesterday's download is protected unless")
        print("# --include-sources), then the run; whatever a ref reaches keeps its lineage")
        cas("gc", "--dry-run", "--grace", "0", "--reflog-expire", "0")
        cas("gc", "--grace", "0", "--reflog-expire", "0", "--include-sources")
        cas("gc", "--explain", "samples/systems/head-100")
        cas("verify")
        cas("ls")
        print("\n# hand the downloads on: a manifest in the seed's shape, and checked copies")
        cas("manifest", "export", "--domain", "systems", "--process", "download",
            "-o", str(OUT / "manifest"))  # fmt: skip
        cas("export", "sources/systems", "--sha256sum", str(OUT / "export"))
        check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=OUT / "export",
                               capture_output=True, text=True, check=False)  # fmt: skip
        print(f"\n$ (cd demo-out/export && sha256sum -c SHA256SUMS)\n  {check.stdout.strip()}")
        if check.returncode != 0:
            sys.exit("demo: the exported files do not match their checksums")
        print("\n# the run as OpenLineage events, for Marquez or DataHub")
        cas("runs", "export", "--openlineage", run_id, show=3)
    finally:
        server.shutdown()
    print(f"\ndemo store: {OUT}/.casstore  (try: .venv/bin/cas --store demo-out ls)")


def cas_bytes(*args: str) -> bytes:
    """The stdout of a ``cas`` command, as bytes, without printing it."""
    proc = subprocess.run([CAS, "--store", str(OUT), *args], capture_output=True, check=True)
    return proc.stdout


if __name__ == "__main__":
    main()
