"""Build ``.casstore.example/``, the small store the README walks through.

It holds one generated daily dump (gzipped JSON-lines), a 100-record sample derived from it,
and a CSV derived from the sample, with refs ``sources/systems``, ``samples/systems/head-100``
and ``tags/systems-csv``. Run it again to rebuild the store from scratch:

    .venv/bin/python scripts/make_example.py
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _dumps import jsonl_gz, systems

from casstore import Store

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / ".casstore.example"


def main() -> None:
    """Rebuild the example store."""
    if EXAMPLE.exists():
        shutil.rmtree(EXAMPLE)
    with tempfile.TemporaryDirectory() as work:
        _build(Path(work))
        # A store holds no absolute path of its own, so it can be moved into place.
        shutil.move(Path(work) / ".casstore", EXAMPLE)
    # The index is a cache (rebuilt on first use) and tmp/ holds nothing: keep neither.
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (EXAMPLE / name).unlink(missing_ok=True)
    print(f"example store written to {EXAMPLE.relative_to(ROOT)}")


def _build(work: Path) -> None:
    with Store.init(work) as store:
        dump = work / "systems.jsonl.gz"
        dump.write_bytes(jsonl_gz(systems(2000)))
        raw = store.add(dump, source_id="systems", dataset="star_systems", ref="sources/systems")

        lines = gzip.decompress(dump.read_bytes()).splitlines(keepends=True)[:100]
        sample = work / "systems-head-100.jsonl"
        sample.write_bytes(b"".join(lines))
        head = store.add(
            sample,
            parents=[raw.id],
            transform="head",
            params={"n": "100"},
            source_id="systems",
            dataset="star_systems",
            ref="samples/systems/head-100",
        )

        table = work / "systems-head-100.csv"
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["id64", "name", "x", "y", "z", "population"])
        for line in lines:
            r = json.loads(line)
            c = r["coords"]
            writer.writerow([r["id64"], r["name"], c["x"], c["y"], c["z"], r["population"]])
        table.write_text(buf.getvalue())
        flat = store.add(
            table,
            parents=[head.id],
            transform="jsonl-to-csv",
            params={"columns": "id64,name,x,y,z,population"},
            dataset="star_systems",
        )
        store.set_ref("tags/systems-csv", flat.id)
    for label, result in (("dump", raw), ("sample", head), ("csv", flat)):
        print(f"  {label:<7}{result.id}  {result.size} bytes")


if __name__ == "__main__":
    main()
