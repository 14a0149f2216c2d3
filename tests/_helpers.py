"""Helpers shared by the test packages: digests, store checks, test data."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import zstandard

from casstore.records import DownloadRecord, parse_record

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def sha256(data: bytes) -> str:
    """The hex SHA-256 of ``data``: what ``sha256sum`` prints and what an object id is."""
    return hashlib.sha256(data).hexdigest()


def json_lines(n_bytes: int, seed: int = 0) -> bytes:
    """Compressible JSON-lines text of about ``n_bytes`` bytes (varied, deterministic)."""
    rng = random.Random(seed)
    out = bytearray()
    i = 0
    while len(out) < n_bytes:
        doc = {"id": i, "name": f"system-{rng.randrange(10_000)}", "x": rng.random(), "ok": True}
        out += json.dumps(doc).encode() + b"\n"
        i += 1
    return bytes(out[:n_bytes])


def random_bytes(n: int, seed: int = 0) -> bytes:
    """Incompressible bytes, deterministic for a seed."""
    return random.Random(seed).randbytes(n)


def colliding_contents(prefix_len: int = 4) -> tuple[bytes, bytes]:
    """Two different contents whose SHA-256 ids share their first ``prefix_len`` hex digits."""
    seen: dict[str, bytes] = {}
    i = 0
    while True:
        data = f"blob {i}\n".encode()
        head = sha256(data)[:prefix_len]
        if head in seen:
            return seen[head], data
        seen[head] = data
        i += 1


def object_files(root: Path) -> dict[str, Path]:
    """``{object_id: file}`` for every object file under ``root/objects``."""
    out: dict[str, Path] = {}
    for head in sorted((root / "objects").iterdir()):
        for entry in sorted(head.iterdir()):
            if entry.name.endswith(".meta"):
                continue
            name = entry.name.removesuffix(".zst")
            oid = head.name + name
            assert oid not in out, f"object {oid} stored twice (raw and .zst)"
            out[oid] = entry
    return out


def object_bytes(path: Path) -> bytes:
    """The original bytes of one object file (raw, or one zstd frame)."""
    data = path.read_bytes()
    if path.name.endswith(".zst"):
        assert data.startswith(ZSTD_MAGIC), f"{path} is not a zstd frame"
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def check_store(root: Path, *, allow_tmp: bool = False, index: bool = True) -> dict[str, object]:
    """Check a store from its files alone, independently of casstore's own readers.

    Every object file re-hashes to its name; every record hashes to its name, validates,
    is canonical and names its object, which exists; every ref names an existing object;
    every reflog line is JSON; with ``index``, the index agrees with the files (right after a
    crash it may lag until the next command opens it). Returns what was found.
    """
    objects = object_files(root)
    for oid, path in objects.items():
        assert sha256(object_bytes(path)) == oid, f"object {oid} fails its hash"
    records: dict[str, object] = {}
    for meta in sorted((root / "objects").glob("*/*.meta")):
        oid = meta.parent.name + meta.name.removesuffix(".meta")
        assert oid in objects, f"records of {oid} but no object"
        for f in sorted(meta.iterdir()):
            assert f.name.endswith(".json"), f"stray file {f}"
            rid = f.name.removesuffix(".json")
            records[rid] = parse_record(f.read_bytes(), name=rid, object_id=oid)
    refs: dict[str, str] = {}
    refs_dir = root / "refs"
    for dirpath, _, filenames in os.walk(refs_dir):
        for name in filenames:
            assert not name.endswith(".lock"), f"lock file left behind: {dirpath}/{name}"
            full = Path(dirpath) / name
            ref = full.relative_to(refs_dir).as_posix()
            target = full.read_text().strip()
            assert target in objects, f"ref {ref} points to missing {target}"
            refs[ref] = target
    reflogs: dict[str, list[dict]] = {}
    logs = root / "logs" / "refs"
    if logs.is_dir():
        for f in sorted(logs.iterdir()):
            reflogs[f.name.replace("%2F", "/")] = [
                json.loads(line) for line in f.read_text().splitlines()
            ]
    tmp = sorted(p.name for p in (root / "tmp").iterdir())
    if not allow_tmp:
        assert tmp == [], f"files left in tmp/: {tmp}"
    if index and (root / "index.sqlite").exists():
        db = sqlite3.connect(root / "index.sqlite")
        try:
            indexed = {r[0] for r in db.execute("SELECT id FROM objects")}
            assert indexed == set(objects), "index objects differ from the files"
            indexed = {r[0] for r in db.execute("SELECT id FROM records")}
            assert indexed == set(records), "index records differ from the files"
            indexed_refs = dict(db.execute("SELECT name, object_id FROM refs").fetchall())
            assert indexed_refs == refs, "index refs differ from the files"
        finally:
            db.close()
    return {"objects": objects, "records": records, "refs": refs, "reflogs": reflogs, "tmp": tmp}


def put_download(
    store,
    data: bytes,
    *,
    url: str = "https://data.example.org/dump.json.gz",
    source_id: str | None = None,
    dataset: str | None = None,
    etag: str | None = None,
    weak_etag: str | None = None,
    created: datetime | None = None,
) -> str:
    """Store ``data`` with a download record, as ``cas fetch`` would; return its id."""
    stored = store.objects.write(io.BytesIO(data))
    when = created or datetime.now(UTC)
    record = DownloadRecord(
        object=stored.id,
        size=stored.size,
        blake3=stored.blake3,
        source_id=source_id,
        dataset=dataset,
        url=url,
        final_url=url,
        http_status=200,
        http_version="HTTP/1.1",
        etag=etag,
        weak_etag=weak_etag,
        started=when,
        finished=when,
        created=when,
    )
    store.record_object(stored, record)
    return stored.id
