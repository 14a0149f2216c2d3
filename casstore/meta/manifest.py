"""Manifests: an ETL pipeline's ledger of files, exported from a store and imported into one.

A manifest is one JSON file, ``<domain>_<process>.manifest.json``, in the shape of the
ETL manifest strategy (see ``docs/manifests.md``)::

    {"metadata": {"process": "extractor", "etl_version": "0.1.0", "root_dir": "/abs/dir",
                  "total_records": 1, "ts_created": "...", "ts_updated": "..."},
     "records": {"<sha256>": {"source_id": "systems", "dataset": "star_systems",
                              "checksum": "<sha256>", "file_path": "systems/dump.json.gz",
                              "file_size": 123, "etag": "\\"abc\\"",
                              "ts_downloaded": "...", "version": "0.1.0"}}}

:func:`export_manifest` lists the objects that have a record of one type (``download`` by
default) and can put their bytes beside the manifest; :func:`import_manifest` reads a
manifest written by another pipeline (or by us), checks all of it before storing anything,
and stores each file it finds with an ``import`` record that keeps the manifest entry
(:class:`casstore.records.ManifestOrigin`).

``process`` means two things, kept apart on purpose. The *selector* (``download``,
``import``, ``derive``, ``run``, ``sample``) is the casstore record type listed and the
second half of the file name (``systems_download.manifest.json``). ``metadata.process``
is the ETL stage as the strategy's ``ETLProcess`` enum has it (``extractor``,
``transformer``, ``loader``): downloads and imports are extraction, the rest
transformation, so the pipeline's own ``ManifestManager`` loads what we write.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import stat
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)

from casstore import _fs
from casstore._version import __version__
from casstore.errors import (
    IntegrityError,
    InvalidRefName,
    ManifestError,
    RefConflict,
    UsageError,
)
from casstore.export import (
    FileStatus,
    Wanted,
    dedupe,
    materialise,
    object_file_hint,
    safe_name,
)
from casstore.records import ManifestOrigin, iso_utc, utcnow
from casstore.refs import check_ref_name

if TYPE_CHECKING:
    from casstore.store import Store

SUFFIX = ".manifest.json"
# A file's directory in an export when its record names no source.
NO_SOURCE_DIR = "objects"


class ETLProcess(StrEnum):
    """The ETL stage a manifest belongs to (the strategy's enum, values unchanged)."""

    EXTRACTOR = "extractor"
    TRANSFORMER = "transformer"
    LOADER = "loader"


# The record types ``export_manifest`` can list, and the stage each one is.
PROCESSES: dict[str, ETLProcess] = {
    "download": ETLProcess.EXTRACTOR,
    "import": ETLProcess.EXTRACTOR,
    "derive": ETLProcess.TRANSFORMER,
    "run": ETLProcess.TRANSFORMER,
    "sample": ETLProcess.TRANSFORMER,
}


def _as_utc(value: datetime) -> datetime:
    # Naive times are read as UTC, as the metadata repository does.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ManifestMetadata(BaseModel):
    """The manifest file's own state: which stage wrote it, where, when, how many records."""

    model_config = ConfigDict(populate_by_name=True)

    process: ETLProcess
    etl_version: str
    root_dir: Path  # the directory the manifest lives in; relative file paths start here
    total_records: int = Field(default=0, ge=0)
    ts_created: datetime = Field(default_factory=utcnow)
    ts_updated: datetime = Field(default_factory=utcnow)

    @field_validator("ts_created", "ts_updated")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)

    @field_serializer("ts_created", "ts_updated")
    def _iso(self, value: datetime) -> str:
        return iso_utc(value)


class ManifestRecord(BaseModel):
    """One file the pipeline produced, keyed in the manifest by its checksum; immutable."""

    model_config = ConfigDict(frozen=True)

    source_id: str
    dataset: str
    checksum: str = Field(..., pattern=r"^[a-fA-F0-9]{64}$")
    file_path: Path
    file_size: int = Field(gt=0)
    etag: str | None = None
    ts_downloaded: datetime
    version: str  # the version of the program that produced the file

    @field_validator("file_path")
    @classmethod
    def _names_a_file(cls, value: Path) -> Path:
        if value == Path(".") or "\x00" in str(value):
            raise ValueError("must name a file")
        return value

    @field_validator("ts_downloaded")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)

    @field_serializer("ts_downloaded")
    def _iso(self, value: datetime) -> str:
        return iso_utc(value)


class ManifestDocument(BaseModel):
    """A whole manifest file: ``{"metadata": {...}, "records": {checksum: {...}}}``."""

    metadata: ManifestMetadata
    records: dict[str, ManifestRecord] = Field(default_factory=dict)


# ---- results ----------------------------------------------------------------------------
class ExportedEntry(BaseModel):
    """One record written to a manifest, and what happened to its file."""

    checksum: str
    source_id: str
    file_path: str
    file: Literal["written", "unchanged"] | None = None  # None: files were not asked for


class SkippedObject(BaseModel):
    """An object that matched but cannot be a manifest record."""

    id: str
    reason: str


class ManifestExport(BaseModel):
    """What ``cas manifest export`` wrote."""

    path: str  # the manifest file
    process: str  # the record type listed
    metadata: ManifestMetadata
    entries: list[ExportedEntry]
    skipped: list[SkippedObject]


class ImportedEntry(BaseModel):
    """One manifest record and what ``cas manifest import`` did with it."""

    checksum: str
    source_id: str
    file_path: str  # as the manifest lists it
    status: Literal["stored", "exists", "missing"]  # exists: the object was already stored
    found: str | None = None  # where the file was read from
    record_id: str | None = None
    new_record: bool = False


class RefOutcome(BaseModel):
    """A ``sources/<id>`` ref after an import: moved to the newest object, or kept."""

    ref: str
    object: str  # the newest imported object of that source
    moved: bool
    current: str | None  # where the ref points now


class ManifestImport(BaseModel):
    """What ``cas manifest import`` did."""

    manifest: str
    process: str
    etl_version: str
    entries: list[ImportedEntry]
    refs: list[RefOutcome]
    stored: int
    exists: int
    missing: int


# ---- reading ----------------------------------------------------------------------------
class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _reason(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    if where == "checksum" and err["type"] == "string_pattern_mismatch":
        return "checksum is not a SHA-256 (64 hex digits)"
    if where == "file_size" and err["type"] == "greater_than":
        return f"file_size must be more than 0, not {err.get('input')!r}"
    return f"{where or 'record'}: {err['msg']}"


def _short(key: str) -> str:
    return repr(key if len(key) <= 80 else key[:77] + "...")


class _Loaded:
    """A validated manifest, plus the values exactly as the file wrote them."""

    def __init__(self, doc: ManifestDocument, raw: dict[str, dict[str, Any]]) -> None:
        self.doc = doc
        self.raw = raw


def _load(path: Path, shown: str) -> _Loaded:
    def refuse(reason: str) -> ManifestError:
        return ManifestError(f"manifest {shown}: {reason}; nothing imported")

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"manifest {shown}: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(data, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise refuse(f"duplicate key {_short(str(exc))}") from exc
    except (ValueError, RecursionError) as exc:
        raise refuse(f"not JSON ({exc})") from exc
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("metadata"), dict)
        or not isinstance(doc.get("records"), dict)
    ):
        raise refuse('not a manifest: expected {"metadata": {...}, "records": {...}}')
    try:
        metadata = ManifestMetadata.model_validate(doc["metadata"])
    except ValidationError as exc:
        raise refuse(f"metadata: {_reason(exc)}") from exc
    records: dict[str, ManifestRecord] = {}
    raw: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    seen: dict[str, str] = {}
    for key, value in doc["records"].items():
        reason = None
        if not isinstance(value, dict):
            reason = "not an object"
        else:
            try:
                rec = ManifestRecord.model_validate(value)
            except ValidationError as exc:
                reason = _reason(exc)
            else:
                # The checksum is case-blind hex; the key must be that same checksum.
                if key.lower() != rec.checksum.lower():
                    reason = f"key is not the record's checksum {rec.checksum}"
                elif rec.checksum.lower() in seen:
                    reason = f"same checksum as record {_short(seen[rec.checksum.lower()])}"
                elif rec.source_id:
                    try:
                        check_ref_name(rec.source_id, what="source id")
                    except InvalidRefName as exc:
                        reason = str(exc)
                if reason is None:
                    seen[rec.checksum.lower()] = key
                    records[key] = rec
                    raw[key] = value
        if reason is not None:
            problems.append(f"record {_short(key)}: {reason}")
    if problems:
        more = f" (and {len(problems) - 1} more refused)" if len(problems) > 1 else ""
        raise refuse(problems[0] + more)
    return _Loaded(ManifestDocument(metadata=metadata, records=records), raw)


def load_manifest(path: str | os.PathLike[str]) -> ManifestDocument:
    """Read and validate a whole manifest file.

    Raises:
        ManifestError: unreadable, not JSON, not the manifest shape, or a record that fails
            validation (malformed checksum, key not its checksum, size not above 0, a
            source id that is not a valid ref name); the message names the record key.
    """
    return _load(Path(path), os.fspath(path)).doc


# ---- export -----------------------------------------------------------------------------
def _check_domain(domain: str) -> None:
    # The domain becomes part of a file name: the same rules as a ref name segment.
    try:
        check_ref_name(domain, what="domain")
    except InvalidRefName as exc:
        raise UsageError(str(exc)) from exc
    if "/" in domain:
        raise UsageError(f"invalid domain {domain!r}: it is part of a file name, no '/'")


def _listed(record: Any, process: str) -> bool:
    if record.type == process:
        return True
    # Files imported from a manifest were downloads somewhere else: list them as such, so
    # that export -> import -> export gives the same records.
    return process == "download" and record.type == "import" and record.manifest is not None


def _pick(records: list[Any], process: str) -> Any:
    """The record an object is listed by: its newest of the type (a real download wins
    over a manifest import of the same bytes)."""
    if process == "download":
        downloads = [r for r in records if r.type == "download"]
        if downloads:
            return downloads[-1]
    return records[-1]  # oldest first


def _describe(record: Any) -> tuple[datetime, str | None, str]:
    """``(ts_downloaded, etag, version)`` of the record an object is listed by."""
    if record.type == "download":
        return record.finished, record.etag or record.weak_etag, record.producer.version
    origin = getattr(record, "manifest", None)
    if origin is not None:
        try:
            when = _as_utc(datetime.fromisoformat(origin.ts_downloaded.replace("Z", "+00:00")))
        except ValueError:
            when = record.created
        return when, origin.etag, origin.version
    return record.created, None, record.producer.version


def _hint(record: Any, records: list[Any]) -> str | None:
    """The file name the listed record itself gives, else any of the object's records."""
    origin = getattr(record, "manifest", None)
    if origin is not None:
        return posixpath.basename(origin.file_path.replace("\\", "/"))
    if record.type == "run":
        return posixpath.basename(record.output)
    if record.type == "download":
        return object_file_hint([record])
    if getattr(record, "path", None):
        return posixpath.basename(record.path)
    return object_file_hint(records)


def _existing_created(path: Path) -> datetime | None:
    """``ts_created`` of a valid manifest already at ``path``, else None."""
    try:
        doc = json.loads(path.read_bytes())
        return ManifestMetadata.model_validate(doc["metadata"]).ts_created
    except (OSError, ValueError, TypeError, KeyError):
        return None


def export_manifest(
    store: Store,
    *,
    domain: str,
    process: str = "download",
    out_dir: str | os.PathLike[str] = ".",
    source_id: str | None = None,
    dataset: str | None = None,
    files: bool = False,
) -> ManifestExport:
    """Write ``out_dir/<domain>_<process>.manifest.json`` listing stored objects.

    ``process`` picks the record type listed: ``download`` (the default; also files
    imported from a manifest), ``import``, ``derive``, ``run`` or ``sample``. Each object
    appears once, described by its newest record of that type; ``source_id`` and
    ``dataset`` keep only records that carry them (``""`` matches records without one).
    Empty objects are skipped: a manifest record needs ``file_size > 0``. Objects whose
    bytes gc pruned are not listed.

    ``file_path`` is ``<source id or 'objects'>/<file name>``, relative to ``out_dir``; the
    name comes from the download URL or imported path, made safe and de-duplicated. With
    ``files`` the objects are written there too (streamed, verified, renamed into place;
    a file already holding the right bytes is left alone) before the manifest.

    The manifest is replaced atomically under ``<name>.lock``; its ``ts_created`` is kept
    from a valid manifest already there.

    Raises:
        UsageError: an unknown ``process`` or a domain that cannot be a file name.
        IntegrityError: stored bytes that do not hash to their id (with ``files``).
    """
    stage = PROCESSES.get(process)
    if stage is None:
        raise UsageError(
            f"unknown process {process!r}: use one of {', '.join(PROCESSES)}"
            " (the record type to list)"
        )
    _check_domain(domain)
    root = Path(out_dir).absolute()
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{domain}_{process}{SUFFIX}"
    types = ("download", "import") if process == "download" else (process,)
    marks = ",".join("?" * len(types))
    planned: list[tuple[datetime, str, Any, list[Any]]] = []
    skipped: list[SkippedObject] = []
    with store.lock.hold():  # shared: gc cannot drop an object or record while we read
        rows = store.index.db.execute(
            "SELECT DISTINCT r.object_id FROM records r JOIN objects o ON o.id = r.object_id"
            f" WHERE r.type IN ({marks}) ORDER BY r.object_id",
            types,
        ).fetchall()
        for (oid,) in rows:
            records = [r for _, r in store.records(oid)]
            matching = [
                r
                for r in records
                if _listed(r, process)
                and (source_id is None or (r.source_id or "") == source_id)
                and (dataset is None or (r.dataset or "") == dataset)
            ]
            if not matching:
                continue
            chosen = _pick(matching, process)
            if chosen.size == 0:
                skipped.append(SkippedObject(id=oid, reason="empty: file_size must be > 0"))
                continue
            planned.append((_describe(chosen)[0], oid, chosen, records))
        planned.sort(key=lambda p: (p[0], p[1]))  # stable names: oldest claims a name first
        taken: set[str] = set()
        records_out: dict[str, ManifestRecord] = {}
        wanted: list[Wanted] = []
        for _, oid, record, records in planned:
            when, etag, version = _describe(record)
            folder = record.source_id or NO_SOURCE_DIR
            name = safe_name(_hint(record, records), oid)
            rel = dedupe(f"{folder}/{name}", oid, taken)
            records_out[oid] = ManifestRecord(
                source_id=record.source_id or "",
                dataset=record.dataset or "",
                checksum=oid,
                file_path=Path(rel),
                file_size=record.size,
                etag=etag,
                ts_downloaded=when,
                version=version,
            )
            wanted.append(Wanted(oid, root / rel, record.size))
        statuses: list[FileStatus | None] = [None] * len(wanted)
        if files:
            statuses = list(materialise(store, wanted, root))
    entries = [
        ExportedEntry(
            checksum=w.object_id,
            source_id=records_out[w.object_id].source_id,
            file_path=str(records_out[w.object_id].file_path),
            file=s,
        )
        for w, s in zip(wanted, statuses, strict=True)
    ]
    with _fs.LockFile(path) as lock:
        now = utcnow()
        metadata = ManifestMetadata(
            process=stage,
            etl_version=__version__,
            root_dir=root,
            total_records=len(records_out),
            ts_created=_existing_created(path) or now,
            ts_updated=now,
        )
        doc = ManifestDocument(metadata=metadata, records=dict(sorted(records_out.items())))
        text = json.dumps(doc.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
        lock.write(text.encode())
        lock.commit()  # fsync, rename over the manifest, fsync the directory
    return ManifestExport(
        path=str(path), process=process, metadata=metadata, entries=entries, skipped=skipped
    )


# ---- import -----------------------------------------------------------------------------
class _Mismatch(IntegrityError):
    """The file's bytes are not the ones its manifest record lists."""


class _Checked(io.RawIOBase):
    """A file read once, checked against a manifest record's size and SHA-256 as it goes.

    The check fires when the store reads the end of the input, before it places the
    object or writes a record, so bytes that differ from the record are never stored
    as that record's file; the file is still read only once.
    """

    def __init__(self, f: io.FileIO, name: str, size: int, checksum: str) -> None:
        super().__init__()
        self._f = f
        self.name = name  # the store records it as the imported path
        self._size = size
        self._checksum = checksum.lower()
        self._sha = hashlib.sha256()
        self._n = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:  # type: ignore[override]
        n = self._f.readinto(buf) or 0
        if n:
            self._sha.update(memoryview(buf)[:n])
            self._n += n
            if self._n > self._size:
                raise _Mismatch(f"is longer than file_size {self._size}", what="size")
            return n
        if self._n != self._size:
            raise _Mismatch(f"has {self._n} bytes, file_size says {self._size}", what="size")
        actual = self._sha.hexdigest()
        if actual != self._checksum:
            raise _Mismatch(
                f"hashes to {actual}, not its checksum",
                what="sha256",
                expected=self._checksum,
                actual=actual,
            )
        return 0


def _candidates(
    rec: ManifestRecord, root_dir: Path, manifest_dir: Path, files_root: Path | None
) -> list[Path]:
    if rec.file_path.is_absolute():
        return [rec.file_path]
    if files_root is not None:
        return [files_root / rec.file_path]
    out = [root_dir / rec.file_path, manifest_dir / rec.file_path]
    return out if out[0] != out[1] else out[:1]


def import_manifest(
    store: Store,
    path: str | os.PathLike[str],
    *,
    files_root: str | os.PathLike[str] | None = None,
) -> ManifestImport:
    """Store the files a manifest lists, each with a record of its manifest entry.

    The whole manifest is validated first (see :func:`load_manifest`), and every file
    found is checked for size: any failure raises :class:`ManifestError` and nothing is
    stored. Then records go in ``ts_downloaded`` order. A file is looked for at its
    ``file_path``: as is when absolute; else under ``files_root`` when given; else under
    ``metadata.root_dir``, then beside the manifest. A file that is nowhere is reported
    ``missing`` (not an error). A found file is stored with an ``import`` record carrying
    the source id, dataset and a :class:`ManifestOrigin`; its bytes are checked against the
    checksum as they are stored, and a mismatch raises :class:`ManifestError` naming the
    record (files stored before it stay stored, refs are not moved).

    Afterwards ``sources/<source_id>`` is pointed at the newest imported object of each
    source, only where that ref does not exist yet. Importing the same manifest again
    stores nothing new: objects dedupe by content and records by provenance.

    Raises:
        ManifestError: the manifest or one of its records is refused (named).
    """
    shown = os.fspath(path)
    manifest_path = Path(path).absolute()
    loaded = _load(manifest_path, shown)
    meta = loaded.doc.metadata
    manifest_dir = manifest_path.parent
    root_dir = meta.root_dir if meta.root_dir.is_absolute() else manifest_dir / meta.root_dir
    files = Path(files_root).absolute() if files_root is not None else None
    order = sorted(loaded.doc.records.items(), key=lambda kv: (kv[1].ts_downloaded, kv[0]))

    def refuse(key: str, reason: str, *, stored: bool = False) -> ManifestError:
        tail = "records before it are stored, refs were not moved" if stored else "nothing imported"
        return ManifestError(f"manifest {shown}: record {_short(key)}: {reason}; {tail}")

    # Every file's size is checked before the first is stored: a wrong file refuses the
    # manifest while the store is still untouched. Only the hash needs a full read.
    located: dict[str, Path | None] = {}
    for key, rec in order:
        found = None
        for candidate in _candidates(rec, root_dir, manifest_dir, files):
            try:
                st = os.stat(candidate)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise refuse(key, f"{candidate}: {exc.strerror or exc}") from exc
            if not stat.S_ISREG(st.st_mode):
                raise refuse(key, f"{candidate} is not a regular file")
            if st.st_size != rec.file_size:
                raise refuse(
                    key, f"{candidate} has {st.st_size} bytes, file_size says {rec.file_size}"
                )
            found = candidate
            break
        located[key] = found

    entries: list[ImportedEntry] = []
    newest: dict[str, str] = {}
    done: list[str] = []  # objects stored (or already there) so far
    for key, rec in order:
        raw = loaded.raw[key]
        found = located[key]
        entry = ImportedEntry(
            checksum=rec.checksum.lower(),
            source_id=rec.source_id,
            file_path=str(raw.get("file_path", rec.file_path)),
            status="missing",
        )
        if found is None:
            entries.append(entry)
            continue
        ts_raw = raw.get("ts_downloaded")
        origin = ManifestOrigin(
            manifest=str(manifest_path),
            process=meta.process.value,
            etl_version=meta.etl_version,
            file_path=entry.file_path,
            etag=rec.etag,
            ts_downloaded=ts_raw if isinstance(ts_raw, str) else iso_utc(rec.ts_downloaded),
            version=rec.version,
        )
        shown_path = os.path.abspath(found)
        try:
            with open(found, "rb", buffering=0) as f:
                result = store.add(
                    _Checked(f, shown_path, rec.file_size, rec.checksum),
                    source_id=rec.source_id or None,
                    dataset=rec.dataset or None,
                    manifest=origin,
                )
        except _Mismatch as exc:
            raise refuse(key, f"{found} {exc}", stored=bool(done)) from exc
        except OSError as exc:
            raise refuse(key, f"{found}: {exc.strerror or exc}", stored=bool(done)) from exc
        done.append(result.id)
        entries.append(
            entry.model_copy(
                update={
                    "status": "stored" if result.new_object else "exists",
                    "found": shown_path,
                    "record_id": result.record_id,
                    "new_record": result.new_record,
                }
            )
        )
        if rec.source_id:
            newest[rec.source_id] = result.id  # records go oldest first: the last wins

    refs: list[RefOutcome] = []
    for sid, oid in sorted(newest.items()):
        name = f"sources/{sid}"
        current = store.refs.get(name)
        moved = False
        if current is None:
            try:
                store.set_ref(name, oid, expected=None, message=f"manifest {manifest_path.name}")
                current, moved = oid, True
            except RefConflict:  # made by someone else a moment ago: theirs stands
                current = store.refs.get(name)
        refs.append(RefOutcome(ref=name, object=oid, moved=moved, current=current))

    counts = {s: sum(1 for e in entries if e.status == s) for s in ("stored", "exists", "missing")}
    return ManifestImport(
        manifest=str(manifest_path),
        process=meta.process.value,
        etl_version=meta.etl_version,
        entries=entries,
        refs=refs,
        **counts,
    )
