"""``cas verify``: prove that nothing in the store changed, or say exactly what did.

Every object's bytes are re-hashed (decompressed first when stored as zstd) and must equal
its id; its size must equal its records'. Every record must hash to its file name and
validate; parents must exist or be marked pruned; every ref and reflog entry must point to
an object; the index must agree with the files; stray temporary files older than an hour
are reported. Nothing is ever deleted: ``quarantine=True`` moves a corrupt object aside.

Objects are hashed by a small pool of threads (hashlib and blake3 release the GIL), so both
cores work. ``fast=True`` checks size and BLAKE3 instead of SHA-256.

Each run emits a ``verify_result`` metadata record about the store (see
:mod:`casstore.meta.emit`), except when the index itself is unreadable: the record could
not be indexed, and reporting the damage is what matters then.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import blake3
import zstandard
from pydantic import BaseModel

from casstore import _fs
from casstore.errors import BadRecord, CasError, UsageError
from casstore.ids import is_object_id
from casstore.objects import CHUNK
from casstore.records import meta_dir, parse_record, record_names, valid_records

if TYPE_CHECKING:
    from casstore.store import Store

ProblemKind = Literal[
    "corrupt-object",
    "size-mismatch",
    "bad-record",
    "missing-parent",
    "dangling-ref",
    "index-mismatch",
    "stray-tmp",
]
STRAY_AGE = 3600.0
PRUNED_SUFFIX = ".pruned"
_THREADS = 2


class Problem(BaseModel):
    """One thing wrong, with the id (object, record, ref or path) it concerns."""

    kind: ProblemKind
    id: str
    detail: str


class VerifyReport(BaseModel):
    """The outcome of a verify run."""

    objects: int
    records: int
    bytes: int
    seconds: float
    mb_per_s: float
    method: Literal["sha256", "blake3"]
    problems: list[Problem]
    quarantined: list[str] = []
    index_rebuilt: bool = False

    @property
    def clean(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def is_pruned(objects_dir: Path, object_id: str) -> bool:
    """True when gc dropped this object's bytes on purpose (its records stay)."""
    p = meta_dir(objects_dir, object_id)
    return p.with_name(p.name.removesuffix(".meta") + PRUNED_SUFFIX).exists()


def _hash_object(path: Path, compressed: bool, fast: bool) -> tuple[str, int]:
    """(digest, size of the original bytes) of a stored object file."""
    h: Any = blake3.blake3() if fast else hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as raw:
        _fs.read_ahead(raw.fileno())
        src: Any = raw
        if compressed:
            src = zstandard.ZstdDecompressor().stream_reader(raw, read_size=CHUNK)
        while True:
            n = src.readinto(view)
            if not n:
                break
            h.update(view[:n])
            size += n
    return h.hexdigest(), size


def parse_subset(text: str) -> tuple[int, int]:
    """``N/M`` -> (N, M) with 1 <= N <= M."""
    try:
        n, m = (int(x) for x in text.split("/"))
    except ValueError as exc:
        raise UsageError(f"--subset wants N/M, got {text!r}") from exc
    if not 1 <= n <= m:
        raise UsageError(f"--subset wants 1 <= N <= M, got {text!r}")
    return n, m


def verify(
    store: Store,
    *,
    ids: Iterable[str] | None = None,
    subset: tuple[int, int] | None = None,
    max_bytes: int | None = None,
    fast: bool = False,
    quarantine: bool = False,
    repair_index: bool = False,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Check the store (or the objects in ``ids``); see the module docstring."""
    started = time.monotonic()
    problems: list[Problem] = []
    objects_dir = store.objects.dir
    everything = ids is None
    targets = sorted(set(ids)) if ids is not None else list(store.objects.ids())
    if subset is not None:
        n, m = subset
        targets = [t for t in targets if int(t[:8], 16) % m == n - 1]
    if max_bytes is not None:
        targets = _least_recently_verified(store, targets, max_bytes)

    # 1. object bytes, in parallel
    def check(oid: str) -> tuple[str, str | None, int, Problem | None]:
        where = store.objects.locate(oid)
        if where is None:
            if is_pruned(objects_dir, oid):
                return oid, None, 0, None
            return oid, None, 0, Problem(kind="corrupt-object", id=oid, detail="bytes missing")
        path, compression = where
        try:
            digest, size = _hash_object(path, compression == "zstd", fast)
        except (OSError, zstandard.ZstdError) as exc:
            return oid, None, 0, Problem(kind="corrupt-object", id=oid, detail=f"unreadable: {exc}")
        if progress is not None:
            progress(path.stat().st_size)
        return oid, digest, size, None

    sizes: dict[str, int] = {}
    digests: dict[str, str] = {}
    total_bytes = 0
    with ThreadPoolExecutor(_THREADS, thread_name_prefix="cas-verify") as pool:
        for oid, digest, size, problem in pool.map(check, targets):
            if problem is not None:
                problems.append(problem)
                continue
            if digest is not None:
                digests[oid] = digest
                sizes[oid] = size
                total_bytes += size

    # 2. records: names, schema, sizes, digests, parents
    record_count = 0
    for oid in targets:
        d = meta_dir(objects_dir, oid)
        for rid in record_names(objects_dir, oid):
            record_count += 1
            try:
                if not is_object_id(rid):
                    raise BadRecord(f"record file {rid!r} has a malformed name")
                record = parse_record((d / f"{rid}.json").read_bytes(), name=rid, object_id=oid)
            except (BadRecord, OSError) as exc:
                problems.append(Problem(kind="bad-record", id=rid, detail=str(exc)))
                continue
            if oid in sizes and record.size != sizes[oid]:
                problems.append(
                    Problem(
                        kind="size-mismatch",
                        id=oid,
                        detail=f"record {rid[:12]} says {record.size} bytes,"
                        f" object has {sizes[oid]}",
                    )
                )
            if fast and oid in digests and record.blake3 != digests[oid]:
                problems.append(
                    Problem(
                        kind="corrupt-object",
                        id=oid,
                        detail=f"BLAKE3 {digests[oid][:16]}… differs from record {rid[:12]}",
                    )
                )
            for parent in record.parents:
                if not store.objects.exists(parent) and not is_pruned(objects_dir, parent):
                    problems.append(
                        Problem(
                            kind="missing-parent",
                            id=oid,
                            detail=f"record {rid[:12]} names parent {parent} that is not here",
                        )
                    )
    if not fast:
        for oid, digest in digests.items():
            if digest != oid:
                problems.append(
                    Problem(
                        kind="corrupt-object",
                        id=oid,
                        detail=f"bytes hash to {digest}",
                    )
                )
    # objects with records but no bytes, found by walking .meta directories (full runs:
    # a slice or a byte budget leaves most objects out on purpose)
    full = everything and subset is None and max_bytes is None
    if full:
        problems.extend(_orphan_records(store, set(targets)))

    # 3. refs and reflogs, 4. the index, 5. stray temp files
    rebuilt = False
    if everything:
        problems.extend(_check_refs(store))
        index_problems = _check_index(store)
        if index_problems and repair_index:
            store.rebuild_index()
            rebuilt = True
        else:
            problems.extend(index_problems)
        problems.extend(_stray_tmp(store))

    quarantined = []
    if quarantine:
        for p in problems:
            # Only bytes that fail their hash: a record that lies about the size is a
            # record problem, and moving good bytes away would leave refs dangling.
            if p.kind == "corrupt-object" and store.objects.exists(p.id):
                quarantined.append(_quarantine(store, p.id))
    index_ok = not any(p.kind == "index-mismatch" and p.id == "index.sqlite" for p in problems)
    if index_ok:
        bad = {p.id for p in problems}
        _remember_verified(store, [oid for oid in digests if oid not in bad])
    seconds = time.monotonic() - started
    report = VerifyReport(
        objects=len(targets),
        records=record_count,
        bytes=total_bytes,
        seconds=round(seconds, 3),
        mb_per_s=round(total_bytes / seconds / 1e6, 1) if seconds else 0,
        method="blake3" if fast else "sha256",
        problems=problems,
        quarantined=sorted(set(quarantined)),
        index_rebuilt=rebuilt,
    )
    if index_ok:
        _emit_result(store, report, full=full)
    return report


def _emit_result(store: Store, report: VerifyReport, *, full: bool) -> None:
    """Emit the run's ``verify_result`` metadata record (about the store itself)."""
    from casstore.meta.emit import emit
    from casstore.meta.kinds import VerifyResult

    kinds: dict[str, int] = {}
    for p in report.problems:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    result = VerifyResult(
        status="ok" if report.clean else "failed",
        objects=report.objects,
        records=report.records,
        bytes=report.bytes,
        problems=len(report.problems),
        problem_kinds=kinds or None,
        quarantined=len(report.quarantined),
        fast=report.method == "blake3",
        full=full,
        duration_ms=round(report.seconds * 1000),
    )
    emit(store, "verify", {"verify_result": result}, producer_id="cas.verify")


def _orphan_records(store: Store, seen: set[str]) -> list[Problem]:
    out = []
    objects_dir = store.objects.dir
    for head in sorted(os.listdir(objects_dir)):
        if len(head) != 2:
            continue
        for name in sorted(os.listdir(objects_dir / head)):
            if not name.endswith(".meta"):
                continue
            oid = head + name[: -len(".meta")]
            if oid in seen or not is_object_id(oid) or is_pruned(objects_dir, oid):
                continue
            if record_names(objects_dir, oid):
                out.append(
                    Problem(
                        kind="corrupt-object",
                        id=oid,
                        detail="records exist but the bytes are missing",
                    )
                )
    return out


def _check_refs(store: Store) -> list[Problem]:
    out = []
    refs = store.refs
    for name in refs.names():
        try:
            target = refs.get(name)
        except Exception as exc:
            out.append(Problem(kind="dangling-ref", id=name, detail=str(exc)))
            continue
        if target is not None and not store.objects.exists(target):
            out.append(Problem(kind="dangling-ref", id=name, detail=f"points to missing {target}"))
    for name in refs.logged_names():
        try:
            path = refs._log_path(name)
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, ValueError) as exc:
            out.append(Problem(kind="dangling-ref", id=name, detail=f"reflog unreadable: {exc}"))
            continue
        for i, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
                new = entry.get("new") if isinstance(entry, dict) else None
                if not isinstance(entry, dict) or (new is not None and not is_object_id(new)):
                    raise ValueError("not a reflog entry")
            except ValueError:
                out.append(
                    Problem(
                        kind="dangling-ref", id=name, detail=f"reflog line {i} is not a valid entry"
                    )
                )
                continue
            if new and not store.objects.exists(new) and not is_pruned(store.objects.dir, new):
                out.append(
                    Problem(
                        kind="dangling-ref",
                        id=name,
                        detail=f"reflog line {i} points to missing {new}",
                    )
                )
    return out


def _check_index(store: Store) -> list[Problem]:
    """The index against the files: objects, records and refs, as sets."""

    path = store.root / "index.sqlite"
    if not path.exists():
        store.index  # noqa: B018 - a missing index is simply rebuilt
        return []
    try:
        db = store.index.db
        idx_objects = {r[0] for r in db.execute("SELECT id FROM objects")}
        idx_records = {r[0] for r in db.execute("SELECT id FROM records")}
        idx_refs = dict(db.execute("SELECT name, object_id FROM refs").fetchall())
    except Exception as exc:  # a damaged index is reported, whatever sqlite says
        return [Problem(kind="index-mismatch", id="index.sqlite", detail=f"unreadable: {exc}")]
    files = set(store.objects.ids())
    file_records = {rid for oid in files for rid, _ in valid_records(store.objects.dir, oid)}
    out = []
    for oid in sorted(files - idx_objects):
        out.append(Problem(kind="index-mismatch", id=oid, detail="object missing from the index"))
    for oid in sorted(idx_objects - files):
        out.append(Problem(kind="index-mismatch", id=oid, detail="index lists a missing object"))
    for rid in sorted(file_records - idx_records):
        out.append(Problem(kind="index-mismatch", id=rid, detail="record missing from the index"))
    if store.refs.items() != idx_refs:
        out.append(Problem(kind="index-mismatch", id="refs", detail="refs differ from the files"))
    return out


def stray_tmp(store: Store, older_than: float, now: float) -> list[tuple[os.DirEntry[str], float]]:
    """Entries of ``tmp/`` untouched for longer than ``older_than`` seconds, with their age.

    Commands never read ``tmp/`` as data; what a killed process left there is reported
    by verify and removed by gc.
    """
    out = []
    try:
        entries = list(os.scandir(store.tmp))
    except FileNotFoundError:
        return out
    for entry in entries:
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue
        if age > older_than:
            out.append((entry, age))
    return sorted(out, key=lambda pair: pair[0].name)


def _stray_tmp(store: Store) -> list[Problem]:
    return [
        Problem(kind="stray-tmp", id=f"tmp/{entry.name}", detail=f"left {age / 3600:.1f} h ago")
        for entry, age in stray_tmp(store, STRAY_AGE, time.time())
    ]


def _quarantine(store: Store, oid: str) -> str:
    """Move a corrupt object's bytes to ``quarantine/``; its records stay."""
    where = store.objects.locate(oid)
    if where is None:
        return oid
    dest = store.root / "quarantine" / where[0].name.replace(oid[2:], oid)
    dest.parent.mkdir(exist_ok=True)
    shutil.move(str(where[0]), dest)
    with contextlib.suppress(CasError), store.index.transaction() as db:
        db.execute("DELETE FROM objects WHERE id=?", (oid,))
    return oid


def _least_recently_verified(store: Store, targets: list[str], budget: int) -> list[str]:
    try:
        db = store.index.db
        db.execute("CREATE TABLE IF NOT EXISTS verified (id TEXT PRIMARY KEY, at REAL NOT NULL)")
        seen = dict(db.execute("SELECT id, at FROM verified").fetchall())
    except CasError:  # a damaged index: every object counts as never verified
        seen = {}
    ordered = sorted(targets, key=lambda oid: (seen.get(oid, 0.0), oid))
    out, used = [], 0
    for oid in ordered:
        where = store.objects.locate(oid)
        size = where[0].stat().st_size if where else 0
        if out and used + size > budget:
            break
        out.append(oid)
        used += size
    return out


def _remember_verified(store: Store, ids: list[str]) -> None:
    if not ids:
        return
    now = time.time()
    idx = store.index
    with idx.transaction() as db:
        db.execute("CREATE TABLE IF NOT EXISTS verified (id TEXT PRIMARY KEY, at REAL NOT NULL)")
        db.executemany(
            "INSERT OR REPLACE INTO verified (id, at) VALUES (?, ?)", [(oid, now) for oid in ids]
        )


def verify_file(store: Store, path: str, spec: str) -> VerifyReport:
    """Check a file outside the store against a stored object (``cas verify FILE --against``)."""
    started = time.monotonic()
    oid = store.resolve(spec)
    digest, size = _hash_object(Path(path), False, False)
    problems = []
    if digest != oid:
        problems.append(
            Problem(kind="corrupt-object", id=oid, detail=f"{path} hashes to {digest}, not {oid}")
        )
    seconds = time.monotonic() - started
    return VerifyReport(
        objects=1,
        records=0,
        bytes=size,
        seconds=round(seconds, 3),
        mb_per_s=round(size / seconds / 1e6, 1) if seconds else 0,
        method="sha256",
        problems=problems,
    )


def refetch(store: Store, object_id: str) -> bool:
    """Bring back a missing or quarantined download from its URL, if it still serves the
    same SHA-256. Returns whether the object is present afterwards."""
    from casstore.errors import CasError
    from casstore.fetch.download import download
    from casstore.fetch.http import HttpOptions, make_client
    from casstore.fetch.redact import REDACTED

    if store.objects.exists(object_id):
        return True
    urls = [
        r.url
        for _, r in reversed(valid_records(store.objects.dir, object_id))
        if r.type == "download" and REDACTED not in r.url
    ]
    opts = HttpOptions()
    for url in dict.fromkeys(urls):
        try:
            with make_client(opts) as http:
                got = download(http, url, store.objects, opts=opts, expected_sha256=object_id)
            stored = got.stored
            if stored is None:
                continue
            idx = store.index
            with idx.transaction() as db:
                idx.put_object(db, stored.id, stored.size, stored.stored_size, stored.compression)
            pruned = meta_dir(store.objects.dir, object_id)
            pruned.with_name(pruned.name.removesuffix(".meta") + PRUNED_SUFFIX).unlink(
                missing_ok=True
            )
            return True
        except CasError:
            continue
    return False
