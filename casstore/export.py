"""``cas export``: copy chosen objects out of the store as plain files, with ``SHA256SUMS``.

The store keeps bytes under their hash; people and other programs want files with names.
This module gives objects names (from the ref, the download URL or the imported path),
writes them into a directory the way the store writes its own files (streamed into a
temporary file beside the target, hashed while written and compared to the id, one
barrier, then renamed into place), and keeps a ``SHA256SUMS`` there that
``sha256sum -c SHA256SUMS`` checks.

The naming and writing helpers are shared with :mod:`casstore.meta.manifest`, which
materialises manifest entries the same way. Names are made safe here, once: no ``/``, no
leading dot, no control characters, never empty, and a written file must land inside the
directory it was asked for (a symlinked subdirectory leading elsewhere is refused).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import posixpath
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

import zstandard
from pydantic import BaseModel

from casstore import _fs
from casstore.errors import IntegrityError, InvalidRefName, RefNotFound, UsageError
from casstore.ids import is_object_id
from casstore.objects import CHUNK, corrupt

if TYPE_CHECKING:
    from casstore.store import Store

SUMS_NAME = "SHA256SUMS"
# Temporary files live beside their target (same filesystem, so the rename is atomic); the
# leading dot keeps them out of plain ``ls`` and no sanitised name can start with one.
TMP_PREFIX = ".cas-export"
# Filesystems allow 255 bytes per name; leave room for a de-duplicating ``-<12 hex>``.
_MAX_NAME = 200
_COMPRESSED = r"gz|bz2|xz|zst|lz4|br"
_EXT = re.compile(rf"(?:\.[A-Za-z0-9]{{1,10}})?\.(?:{_COMPRESSED})$|\.[A-Za-z0-9]{{1,10}}$")
_SUM_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.*)", re.DOTALL)

FileStatus = Literal["written", "unchanged"]


# ---- names ------------------------------------------------------------------------------
def safe_name(raw: str | None, fallback: str) -> str:
    """``raw`` as one harmless file name, or ``fallback`` when nothing usable is left.

    ``/``, ``\\`` and control characters become ``_``; surrounding blanks and leading dots
    go (so ``..``, ``.`` and hidden names cannot come out); a name longer than 200 bytes
    is replaced by ``fallback`` plus its extension.
    """
    if not raw:
        return fallback
    name = "".join("_" if c in "/\\" or ord(c) < 32 or ord(c) == 127 else c for c in raw)
    name = name.strip().lstrip(".").strip()
    if not name:
        return fallback
    if len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME:
        ext = split_ext(name)[1]
        return fallback + ext
    return name


def split_ext(name: str) -> tuple[str, str]:
    """``dump.json.gz`` -> ``("dump", ".json.gz")``; ``a.b.txt`` -> ``("a.b", ".txt")``.

    A compression suffix takes the suffix before it along; a name that is all extension
    has none.
    """
    m = _EXT.search(name)
    if m is None or m.start() == 0:
        return name, ""
    return name[: m.start()], name[m.start() :]


def url_filename(url: str | None) -> str | None:
    """The last path segment of a URL, percent-decoded (not yet made safe), or None."""
    if not url:
        return None
    try:
        path = urlsplit(url).path
    except ValueError:
        return None
    segment = path.rsplit("/", 1)[-1]
    return unquote(segment) or None


def dedupe(name: str, object_id: str, taken: set[str]) -> str:
    """``name``, or ``name`` with the object's short id before its extension when taken.

    The chosen name is added to ``taken``.
    """
    if name not in taken:
        taken.add(name)
        return name
    stem, ext = split_ext(name)
    candidate = f"{stem}-{object_id[:12]}{ext}"
    n = 2
    while candidate in taken:
        candidate = f"{stem}-{object_id[:12]}-{n}{ext}"
        n += 1
    taken.add(candidate)
    return candidate


def _newest(records: list[Any], kind: str) -> Any | None:
    found = [r for r in records if r.type == kind]
    return found[-1] if found else None  # records come oldest first


def object_file_hint(records: list[Any]) -> str | None:
    """The name an object had before it was stored: download URL, else imported path.

    ``records`` are the object's records, oldest first; the newest that has a name wins.
    """
    download = _newest(records, "download")
    if download is not None:
        name = url_filename(download.url) or url_filename(download.final_url)
        if name:
            return name
    for record in reversed(records):
        path = getattr(record, "path", None)
        if record.type in ("import", "derive") and path:
            return posixpath.basename(path)
    return None


# ---- writing ----------------------------------------------------------------------------
@dataclass
class Wanted:
    """One object to put at ``target`` (``size`` when known, to skip hashing a misfit)."""

    object_id: str
    target: Path
    size: int | None = None


def _inside(root: Path, path: Path) -> bool:
    return _fs.is_within(os.path.realpath(path), os.path.realpath(root))


def _same_file(path: Path, object_id: str, size: int | None, buf: bytearray) -> bool:
    """Whether ``path`` is a regular file (not a symlink) holding exactly the object's bytes."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or (size is not None and st.st_size != size):
        return False
    sha = hashlib.sha256()
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            sha.update(view[:n])
    return sha.hexdigest() == object_id


def _copy_verified(store: Store, object_id: str, fd: int, buf: bytearray) -> None:
    """Stream an object into ``fd`` and check the bytes hash to its id (constant memory)."""
    sha = hashlib.sha256()
    view = memoryview(buf)
    with store.open_object(object_id) as src, io.FileIO(fd, "wb", closefd=True) as out:
        while True:
            try:
                n = src.readinto(view)
            except zstandard.ZstdError as exc:
                raise corrupt(object_id, exc) from exc
            if not n:
                break
            sha.update(view[:n])
            _fs.write_all(out.fileno(), view[:n])
    actual = sha.hexdigest()
    if actual != object_id:
        raise IntegrityError(
            f"object {object_id} read back as {actual}: its stored bytes are damaged;"
            " run 'cas verify'",
            what="sha256",
            expected=object_id,
            actual=actual,
        )


def materialise(store: Store, wanted: Iterable[Wanted], root: Path) -> list[FileStatus]:
    """Write each object to its target under ``root``; return ``written``/``unchanged`` each.

    A target that already holds the right bytes is left alone. Every other one is streamed
    into a temporary file beside it and verified; then one filesystem barrier makes them
    all durable, and each is renamed over its target (a reader sees the old file or the
    new one). On any error no temporary file is left behind and no target is touched.

    Raises:
        UsageError: a target outside ``root`` (through ``..`` or a symlinked directory).
        IntegrityError: an object whose stored bytes do not hash to its id.
    """
    items = list(wanted)
    buf = bytearray(CHUNK)
    statuses: list[FileStatus] = []
    pending: list[tuple[Path, Path]] = []  # (temporary file, target)
    published = 0
    try:
        for item in items:
            parent = item.target.parent
            if not _inside(root, parent):
                raise UsageError(f"{item.target} is outside {root}: refusing to write there")
            parent.mkdir(parents=True, exist_ok=True)
            if not _inside(root, parent):  # mkdir went through a symlink
                raise UsageError(f"{parent} leads outside {root} (a symlink?): refusing")
            if _same_file(item.target, item.object_id, item.size, buf):
                statuses.append("unchanged")
                continue
            fd, tmp = _fs.make_temp(parent, TMP_PREFIX)
            pending.append((tmp, item.target))
            _copy_verified(store, item.object_id, fd, buf)
            statuses.append("written")
        if pending:
            _fs.syncfs(root)  # one barrier for every file, as add_many does for a batch
        for tmp, target in pending:
            _fs.publish(tmp, target)
            published += 1
        for parent in sorted({target.parent for _, target in pending}):
            _fs.fsync_dir(parent)
    finally:
        for tmp, _ in pending[published:]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return statuses


# ---- SHA256SUMS -------------------------------------------------------------------------
def sums_line(digest: str, name: str) -> str:
    """A line as ``sha256sum`` prints it (a name with ``\\`` or a newline is escaped)."""
    if "\\" in name or "\n" in name or "\r" in name:
        escaped = name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        return f"\\{digest}  {escaped}"
    return f"{digest}  {name}"


def _sums_name(line: str) -> str | None:
    """The file name a ``sha256sum`` line checks, or None for a line that is not one."""
    escaped = line.startswith("\\")
    m = _SUM_LINE.fullmatch(line[1:] if escaped else line)
    if m is None:
        return None
    name = m.group(2)
    if escaped:
        name = re.sub(r"\\(.)", lambda g: {"n": "\n", "r": "\r"}.get(g[1], g[1]), name)
    return name


def merge_sums(path: Path, entries: Iterable[tuple[str, str]]) -> None:
    """Write ``(digest, name)`` lines into the ``SHA256SUMS`` at ``path``, atomically.

    Lines already there for other names are kept as they are, in their order; a line for
    a name given here is replaced in place; new names are appended. The read and the
    write happen under ``SHA256SUMS.lock``, so two exports into one directory do not lose
    each other's lines.
    """
    new = dict((name, digest) for digest, name in entries)
    with _fs.LockFile(path) as lock:
        try:
            old = path.read_bytes().decode("utf-8", "surrogateescape").splitlines()
        except FileNotFoundError:
            old = []
        lines: list[str] = []
        done: set[str] = set()
        for line in old:
            name = _sums_name(line)
            if name is not None and name in new:
                if name not in done:
                    lines.append(sums_line(new[name], name))
                    done.add(name)
                continue  # a replaced name (or a duplicate of one)
            lines.append(line)
        lines.extend(sums_line(d, n) for n, d in new.items() if n not in done)
        lock.write(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
        lock.commit()


# ---- cas export -------------------------------------------------------------------------
class ExportedFile(BaseModel):
    """One object written out by ``cas export``."""

    spec: str  # as asked for (a ref name, an id or a prefix)
    id: str
    name: str  # the file name inside the export directory
    status: FileStatus  # written, or unchanged (the file already held these bytes)


class ExportResult(BaseModel):
    """What ``cas export`` wrote."""

    out_dir: str
    files: list[ExportedFile]
    sha256sums: str | None  # the SHA256SUMS file, when one was written


def _ref_name(store: Store, spec: str, object_id: str) -> str | None:
    """The full ref name ``spec`` was resolved through, or None for an id or prefix."""
    if is_object_id(spec):
        return None
    try:
        info = store.get_ref(spec)
    except (RefNotFound, InvalidRefName):
        return None
    return info.name if info.object == object_id else None


def export_name(store: Store, spec: str, object_id: str, records: list[Any] | None = None) -> str:
    """The file name ``cas export`` gives an object asked for as ``spec``.

    A ref names the file after its last segment, plus the download URL's extension when
    the object was downloaded (``sources/systems`` -> ``systems.json.gz``). An id or prefix
    uses the download URL's or the imported path's file name, else the full id.
    """
    if records is None:
        records = [r for _, r in store.records(object_id)]
    hint = object_file_hint(records)
    ref = _ref_name(store, spec, object_id)
    if ref is not None:
        base = ref.rsplit("/", 1)[-1]
        download = _newest(records, "download")
        ext = ""
        if download is not None:
            ext = split_ext(safe_name(url_filename(download.url), ""))[1]
        return safe_name(base if base.endswith(ext) else base + ext, object_id)
    return safe_name(hint, object_id)


def export_objects(
    store: Store,
    specs: Iterable[str],
    out_dir: str | os.PathLike[str],
    *,
    sha256sum: bool = True,
) -> ExportResult:
    """Copy objects out of the store into ``out_dir`` as named files.

    ``specs`` are anything :meth:`Store.resolve` accepts; none means every ref under
    ``sources/``. Each file is streamed and verified against its id, then renamed into
    place; names are made safe and de-duplicated (``name-<12 hex>.ext`` for a second
    object wanting the same name). With ``sha256sum``, ``out_dir/SHA256SUMS`` gets one line
    per file, merged with the lines already there.

    Raises:
        UsageError: nothing to export (no specs and no ``sources/`` refs).
        ObjectNotFound, AmbiguousPrefix: a spec that names no single object.
        IntegrityError: stored bytes that do not hash to their id (nothing is renamed).
    """
    specs = list(specs) or [r.name for r in store.list_refs("sources/")]
    if not specs:
        raise UsageError("nothing to export: name objects, or fetch a source first")
    root = Path(out_dir).absolute()
    root.mkdir(parents=True, exist_ok=True)
    # Names the export itself needs are never given to an object.
    taken = {SUMS_NAME, SUMS_NAME + ".lock"}
    chosen: dict[tuple[str, str], str] = {}  # (spec's object, base name) -> final name
    files: list[ExportedFile] = []
    wanted: list[Wanted] = []
    with store.lock.hold():  # shared: gc cannot drop an object while it is copied
        for spec in specs:
            oid = store.resolve(spec)
            records = [r for _, r in store.records(oid)]
            base = export_name(store, spec, oid, records)
            key = (oid, base)
            if key in chosen:
                continue  # the same object under the same name: once is enough
            chosen[key] = dedupe(base, oid, taken)
            files.append(ExportedFile(spec=spec, id=oid, name=chosen[key], status="written"))
            wanted.append(Wanted(oid, root / chosen[key], records[0].size if records else None))
        statuses = materialise(store, wanted, root)
    files = [f.model_copy(update={"status": s}) for f, s in zip(files, statuses, strict=True)]
    sums = None
    if sha256sum:
        sums = root / SUMS_NAME
        merge_sums(sums, [(f.id, f.name) for f in files])
    return ExportResult(out_dir=str(root), files=files, sha256sums=str(sums) if sums else None)
