"""Generated stand-ins for the public dumps casstore users download (used by the example
store, the demo and the benchmarks): gzipped JSON-lines of star systems, made the same way
every time for the same seed and day."""

from __future__ import annotations

import gzip
import io
import json
import random


def systems(n: int, *, seed: int = 1, day: int = 0) -> list[dict]:
    """``n`` star-system records; ``day`` shifts a few fields, as a daily dump would."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        out.append(
            {
                "id64": 10_000_000 + i,
                "name": f"Synuefe {rng.choice('ABCDEFGH')}{rng.randint(1, 99)}-{i}",
                "coords": {
                    "x": round(rng.uniform(-40000, 40000), 3),
                    "y": round(rng.uniform(-3000, 3000), 3),
                    "z": round(rng.uniform(-10000, 70000), 3),
                },
                "population": rng.randint(0, 10**9) + day * 1000,
                "allegiance": rng.choice(["Federation", "Empire", "Alliance", "Independent"]),
                "updated": f"2026-11-{1 + day:02d}T00:00:00Z",
            }
        )
    return out


def jsonl_gz(records: list[dict]) -> bytes:
    """Records as gzipped JSON-lines, with a fixed gzip timestamp (same input, same bytes)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        for r in records:
            gz.write(json.dumps(r, separators=(",", ":")).encode() + b"\n")
    return buf.getvalue()
