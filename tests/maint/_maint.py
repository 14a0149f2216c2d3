"""Helpers for the verify and gc tests: a small store with imports, derives and refs,
ways to damage it, a listing of its files, and a tiny HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import io
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from casstore.records import SampleRecord, meta_dir, record_names
from casstore.refs import ReflogEntry
from casstore.store import Store
from tests._helpers import json_lines, object_files, put_download, random_bytes, sha256

if TYPE_CHECKING:
    from tests.conftest import CasResult, CasRunner

HOUR = 3600.0
DAY = 86400.0


@dataclass
class Built:
    """A small store: three imports, two derivations, refs with history."""

    root: Path  # the .casstore directory
    raw: str  # import stored raw (incompressible bytes)
    zst: str  # import stored as zstd (JSON lines)
    small: str  # a tiny import
    derived: str  # derived from raw and zst, ref tags/d
    top: str  # derived from derived, ref tags/top
    data: dict[str, bytes]  # object id -> original bytes

    def file(self, oid: str) -> Path:
        """The object file of ``oid``."""
        return object_files(self.root)[oid]

    def record_files(self, oid: str) -> list[Path]:
        """The record files of ``oid``."""
        d = meta_dir(self.root / "objects", oid)
        return [d / f"{rid}.json" for rid in record_names(self.root / "objects", oid)]


@pytest.fixture
def built(store: Store) -> Built:
    """The small store, built through the library and closed (commands open their own)."""
    raw_bytes = random_bytes(3000, seed=1)
    zst_bytes = json_lines(8000, seed=2)
    small_bytes = b"small\n"
    raw = store.add(io.BytesIO(raw_bytes)).id
    zst = store.add(io.BytesIO(zst_bytes)).id
    small = store.add(io.BytesIO(small_bytes), ref="tags/raw").id
    store.set_ref("tags/raw", raw)  # the reflog now has two lines
    derived_bytes = b"derived from raw and zst\n"
    derived = store.add(
        io.BytesIO(derived_bytes), parents=[raw, zst], transform="join", ref="tags/d"
    ).id
    top_bytes = b"derived from derived\n"
    top = store.add(io.BytesIO(top_bytes), parents=[derived], transform="top", ref="tags/top").id
    store.close()
    b = Built(
        root=store.root,
        raw=raw,
        zst=zst,
        small=small,
        derived=derived,
        top=top,
        data={
            raw: raw_bytes,
            zst: zst_bytes,
            small: small_bytes,
            derived: derived_bytes,
            top: top_bytes,
        },
    )
    assert b.file(raw).suffix == "" and b.file(zst).suffix == ".zst"
    return b


# ---- damage -----------------------------------------------------------------------------


def writable(path: Path) -> Path:
    """Objects and records are written read-only; a drill needs to change them."""
    os.chmod(path, 0o644)
    return path


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Invert one byte of a file (the middle one by default)."""
    data = bytearray(writable(path).read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def age(path: Path, seconds: float) -> None:
    """Set a file's mtime ``seconds`` into the past."""
    t = time.time() - seconds
    os.utime(path, (t, t))


# ---- looking at the store ---------------------------------------------------------------

# The lock file holds the name of its last exclusive holder, and the index is a cache that
# verify writes its "last verified" times into: neither is part of what must not change.
# Nor is the metadata log, where each verify and gc run records its result on purpose.
_VOLATILE = re.compile(r"^(lock|index\.sqlite(-wal|-shm)?|log/metadata\.jsonl)$")


def listing(root: Path, *, volatile: bool = False) -> dict[str, bytes]:
    """``{relative path: bytes}`` of every file in the store (directories as ``/``-ended)."""
    out: dict[str, bytes] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not volatile and _VOLATILE.match(rel):
            continue
        out[rel + "/" if p.is_dir() else rel] = b"" if p.is_dir() else p.read_bytes()
    return out


def verify_problems(cas: CasRunner, *args: object) -> tuple[int, list[tuple[str, str, str]]]:
    """Run ``cas verify ARGS`` twice, as text and as JSON, and check the two agree.

    Returns the exit code and the problems as ``(kind, id, detail)``.
    """
    text = cas("verify", *args)
    as_json = cas("verify", *args, "--json")
    assert text.exit_code == as_json.exit_code, (text, as_json)
    assert as_json.stdout and text.stdout, f"verify printed no report: {text!r}"
    report = as_json.json()
    problems = [(p["kind"], p["id"], p["detail"]) for p in report["problems"]]
    for kind, oid, detail in problems:
        line = f"{kind:<15} {oid}  {detail}"
        # details may name times ("left 2.0 h ago") or digests that are the same in both runs
        assert line in text.lines, (line, text)
    assert text.lines[-1].startswith("verified "), text
    assert (text.exit_code == 0) == (not problems), (text, problems)
    return text.exit_code, problems


def kinds_of(problems: list[tuple[str, str, str]], oid: str) -> set[str]:
    """The kinds of problem reported for one id."""
    return {k for k, i, _ in problems if i == oid}


# ---- records with controlled times ------------------------------------------------------


def write_reflog(root: Path, name: str, moves: list[tuple[datetime, str | None, str | None]]):
    """Replace ref ``name``'s reflog with one line per ``(time, old, new)``."""
    lines = []
    for when, old, new in moves:
        entry = ReflogEntry(
            time=when, ref=name, action="set" if new else "delete", old=old, new=new
        )
        lines.append(
            json.dumps(entry.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        )
    path = root / "logs" / "refs" / name.replace("/", "%2F")
    path.write_text("".join(line + "\n" for line in lines))


def add_download(store: Store, data: bytes, url: str, *, created: datetime | None = None) -> str:
    """Store ``data`` with a download record (as ``cas fetch`` would) made at ``created``."""
    return put_download(store, data, url=url, created=created)


def add_sample(store: Store, parent: str, data: bytes) -> str:
    """Store ``data`` as a sample of ``parent`` with a sample record."""
    stored = store.objects.write(io.BytesIO(data))
    record = SampleRecord(
        object=stored.id,
        size=stored.size,
        blake3=stored.blake3,
        parents=(parent,),
        regime="head",
        n_taken=1,
        input_format="jsonl",
        output_format="jsonl",
        sampler_version="1",
        recipe=sha256(parent.encode() + data),
    )
    store.record_object(stored, record)
    return stored.id


def days_ago(n: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=n)


# ---- a tiny HTTP server -------------------------------------------------------------------


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """``(directory, base URL)``: files put in the directory are served on 127.0.0.1."""
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def gc_ok(cas: CasRunner, *args: object) -> CasResult:
    """``cas gc ARGS`` succeeds, and the store verifies clean afterwards."""
    result = ok(cas("gc", *args))
    assert verify_problems(cas) == (0, []), "verify found problems after gc"
    return result


def present(store: Store) -> set[str]:
    """Ids of the objects whose bytes are in the store."""
    return set(object_files(store.root))


def ok(result: CasResult) -> CasResult:
    """Assert a command succeeded; return it."""
    assert result.exit_code == 0, result
    return result
