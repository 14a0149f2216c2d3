"""Sidecar records: how an object came to be, as immutable canonical JSON.

A record is a pydantic model, one class per ``type``. Its canonical form is JSON with
sorted keys, no whitespace, UTF-8, times in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` and
``None`` fields left out (so a later version can add optional fields without changing the
bytes of old records). The SHA-256 of those bytes is the record's id and file name:
``objects/ab/cdef….meta/<record-id>.json``.

Loading checks three things and raises :class:`BadRecord` on any failure: the bytes hash to
the file name, they validate against the model, and they are canonical (re-serialising
gives the same bytes), so a record cannot be edited without being noticed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_serializer,
    field_validator,
)

from casstore import _fs
from casstore._version import __version__
from casstore.errors import BadRecord, LockError
from casstore.ids import is_object_id, object_path, object_path_str

SCHEMA_VERSION = 1
META_SUFFIX = ".meta"
HexId = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def iso_utc(value: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC, years zero-padded (strftime does not pad)."""
    v = value.astimezone(UTC)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
        f".{v.microsecond:06d}Z"
    )


class Producer(BaseModel):
    """The program that wrote a record."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = "cas"
    version: str = __version__


class PipelineLink(BaseModel):
    """The pipeline run (and step) that was in progress when a record was written."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    run_id: str
    step_id: str | None = None


class RecordBase(BaseModel):
    """Fields every record carries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    object: HexId
    size: int = Field(ge=0)
    blake3: HexId
    parents: tuple[HexId, ...] = ()
    created: datetime = Field(default_factory=utcnow)
    producer: Producer = Field(default_factory=Producer)
    user: str = ""
    host: str = ""
    source_id: str | None = None
    dataset: str | None = None
    pipeline: PipelineLink | None = None

    @field_validator("created")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("created must carry a timezone")
        return value.astimezone(UTC)

    @field_serializer("created")
    def _iso(self, value: datetime) -> str:
        return iso_utc(value)

    def provenance(self) -> dict[str, Any]:
        """Everything but the time: two records with equal provenance are one record."""
        return self.model_dump(mode="json", exclude={"created"}, exclude_none=True)


class ManifestOrigin(BaseModel):
    """Where an imported file was listed: one record of a manifest from another pipeline."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    manifest: str  # the manifest file, as given to cas manifest import
    process: str
    etl_version: str
    file_path: str
    etag: str | None = None
    ts_downloaded: str  # as the manifest wrote it (ISO-8601)
    version: str


class ImportRecord(RecordBase):
    """A file or stream brought in by ``cas add`` (or ``cas manifest import``), no parents."""

    type: Literal["import"] = "import"
    path: str | None = None
    manifest: ManifestOrigin | None = None


class DeriveRecord(RecordBase):
    """A file made from parent objects by a named transform with parameters."""

    type: Literal["derive"] = "derive"
    path: str | None = None
    transform: str | None = None
    params: dict[str, str] = Field(default_factory=dict)


class IntegrityCheck(BaseModel):
    """One integrity tier of a download and its outcome."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    tier: str  # content-length | content-md5 | stream | sha256
    outcome: Literal["passed", "failed", "skipped"]
    detail: str = ""


class DownloadRecord(RecordBase):
    """Bytes fetched over HTTP, exactly as served, with what the server said.

    URLs are stored redacted (no user:password, no secret query values); the server's
    headers are kept as sent, ETags split into strong and weak.
    """

    type: Literal["download"] = "download"
    url: str
    final_url: str
    http_status: int
    http_version: str
    etag: str | None = None  # a strong validator, usable for If-Range
    weak_etag: str | None = None  # W/"…": only good for If-None-Match
    last_modified: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    content_length: int | None = None  # as announced; ``size`` is what arrived
    content_md5: str | None = None
    content_sha256: str | None = None  # of the decompressed content, for compressed payloads
    uncompressed_size: int | None = None
    format: str | None = None
    line_count: int | None = None
    record_count: int | None = None
    integrity: tuple[IntegrityCheck, ...] = ()
    started: datetime
    finished: datetime
    retries: int = 0
    resumes: int = 0

    @field_validator("started", "finished")
    @classmethod
    def _utc_times(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("times must carry a timezone")
        return value.astimezone(UTC)

    @field_serializer("started", "finished")
    def _iso_times(self, value: datetime) -> str:
        return iso_utc(value)


class SampleRecord(RecordBase):
    """A sample cut from one parent object by a reproducible recipe.

    ``recipe`` is the SHA-256 of the canonical JSON of (parent, regime, n, seed, stride,
    offset, sampler version): asking for the same recipe again returns this object without
    reading the parent. The bytes can always be remade from the parent and the recipe.
    """

    type: Literal["sample"] = "sample"
    regime: Literal["head", "random", "systematic"]
    n_requested: int | None = None
    n_taken: int
    seed: int | None = None
    offset: int | None = None
    stride: int | None = None
    input_format: str
    output_format: str
    sampler_version: str
    recipe: HexId
    reproducible: bool = True


class RunRecord(RecordBase):
    """An output of a command run by ``cas run`` on stored inputs.

    ``action`` is the SHA-256 of the canonical JSON of (command, input ids, transform,
    params, named environment values): the same action again restores the outputs
    instead of running the command.
    """

    type: Literal["run"] = "run"
    command: tuple[str, ...]
    inputs: dict[str, HexId] = Field(default_factory=dict)  # name or path -> object id
    output: str  # the declared output path, as given
    exit_code: int
    duration_ms: int
    cwd: str | None = None
    git_commit: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    transform: str | None = None
    params: dict[str, str] = Field(default_factory=dict)
    action: HexId


AnyRecord = ImportRecord | DeriveRecord | DownloadRecord | SampleRecord | RunRecord
Record = Annotated[AnyRecord, Field(discriminator="type")]
RECORD_TYPES = ("import", "derive", "download", "sample", "run")
_ADAPTER: TypeAdapter[AnyRecord] = TypeAdapter(Record)


def canonical_bytes(record: RecordBase) -> bytes:
    """The canonical JSON bytes of a record."""
    doc = record.model_dump(mode="json", exclude_none=True)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_id(data: bytes) -> str:
    """A record's id: the SHA-256 of its canonical bytes."""
    return hashlib.sha256(data).hexdigest()


def parse_record(data: bytes, *, name: str | None = None, object_id: str | None = None) -> Any:
    """Validate record bytes; ``name`` and ``object_id`` are what they must match.

    Raises:
        BadRecord: with ``what`` naming the failed check.
    """
    label = f"record {name[:12] if name else '?'}" + (f" of {object_id[:12]}" if object_id else "")
    if name is not None and record_id(data) != name:
        raise BadRecord(
            f"{label}: bytes do not match its name",
            what="record-hash",
            expected=name,
            actual=record_id(data),
        )
    try:
        record = _ADAPTER.validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadRecord(f"{label}: invalid: {where}: {first['msg']}", what="record-schema") from exc
    if canonical_bytes(record) != data:
        raise BadRecord(f"{label}: not in canonical form", what="record-canonical")
    if object_id is not None and record.object != object_id:
        raise BadRecord(
            f"{label}: names object {record.object[:12]}",
            what="record-object",
            expected=object_id,
            actual=record.object,
        )
    return record


def meta_dir(objects_dir: Path, object_id: str) -> Path:
    """The directory holding an object's records."""
    p = object_path(objects_dir, object_id)
    return p.with_name(p.name + META_SUFFIX)


def meta_dir_str(objects_dir: str, object_id: str) -> str:
    """:func:`meta_dir` as a plain string, for the per-record write path."""
    return object_path_str(objects_dir, object_id) + META_SUFFIX


def record_names(objects_dir: Path, object_id: str) -> list[str]:
    """Ids of the records stored beside an object (unchecked), sorted."""
    try:
        names = os.listdir(meta_dir(objects_dir, object_id))
    except FileNotFoundError:
        return []
    return sorted(n[:-5] for n in names if n.endswith(".json"))


def load_records(objects_dir: Path, object_id: str) -> list[tuple[str, Any]]:
    """Every record of an object as ``(record_id, record)``, oldest first, all checked.

    Raises:
        BadRecord: on the first record that fails a check.
    """
    out = []
    d = meta_dir(objects_dir, object_id)
    for rid in record_names(objects_dir, object_id):
        if not is_object_id(rid):
            raise BadRecord(f"record file {rid!r} of {object_id[:12]} has a malformed name")
        data = (d / f"{rid}.json").read_bytes()
        out.append((rid, parse_record(data, name=rid, object_id=object_id)))
    out.sort(key=lambda pair: (pair[1].created, pair[0]))
    return out


def write_record(
    objects_dir: Path,
    tmp_dir: Path,
    record: RecordBase,
    *,
    durable: bool = True,
    abandon: _fs.interrupts_held | None = None,
) -> tuple[str, bool]:
    """Store a record beside its object unless one with the same provenance exists.

    Returns ``(record_id, written)``; an existing record with equal provenance (everything
    but ``created``) is reused, so adding the same thing twice leaves one record. A wait
    for another writer's lock on the ``.meta`` directory ends with ``KeyboardInterrupt``
    once ``abandon`` is set (a Ctrl-C held back by :func:`casstore._fs.interrupts_held`).
    """
    d = meta_dir_str(os.fspath(objects_dir), record.object)
    try:
        os.mkdir(d)
    except FileNotFoundError:  # no objects/ab/ yet
        os.makedirs(d, exist_ok=True)
    except OSError:
        if not os.path.isdir(d):
            raise
    # The check and the write happen under an flock on the .meta directory itself (no lock
    # file to create or leave behind), so concurrent writers of the same provenance make
    # one record between them. The kernel drops the flock if the process dies.
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _lock(fd, abandon)
        existing = _valid_records(d, record.object, listing=fd)
        if existing:
            want = record.provenance()
            for rid, other in existing:
                if other.provenance() == want:
                    return rid, False
        data = canonical_bytes(record)
        rid = record_id(data)
        _fs.atomic_write(f"{d}/{rid}.json", data, tmp_dir, durable=durable)
        return rid, True
    finally:
        os.close(fd)


def _lock(fd: int, abandon: _fs.interrupts_held | None) -> None:
    """flock ``fd`` exclusively; while another writer holds it, wait until ``abandon``."""
    if abandon is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    try:
        for _ in _fs.backoff(math.inf, None, abandon):
            with contextlib.suppress(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
    except LockError:  # the held-back Ctrl-C: let it end the add
        raise KeyboardInterrupt from None


def valid_records(objects_dir: Path, object_id: str) -> list[tuple[str, Any]]:
    """Records of an object that pass their checks; bad ones are for ``cas verify``."""
    return _valid_records(meta_dir_str(os.fspath(objects_dir), object_id), object_id)


def _valid_records(d: str, object_id: str, *, listing: int | None = None) -> list[tuple[str, Any]]:
    """:func:`valid_records` of the ``.meta`` directory ``d`` (listed through the open
    descriptor ``listing`` when given, which saves opening it again)."""
    try:
        names = os.listdir(d if listing is None else listing)
    except FileNotFoundError:
        return []
    out = []
    for rid in sorted(n[:-5] for n in names if n.endswith(".json")):
        try:
            with open(f"{d}/{rid}.json", "rb", buffering=0) as f:
                data = f.read()
            out.append((rid, parse_record(data, name=rid, object_id=object_id)))
        except (BadRecord, OSError):
            continue
    out.sort(key=lambda pair: (pair[1].created, pair[0]))
    return out


def summary(record: Any) -> str:
    """The one fact that matters about a record, for lineage listings.

    Downloads: URL and validator; derivations and runs: transform (or command) and
    parameters; samples: the regime; imports: the original path.
    """
    kind = record.type
    if kind == "import":
        return record.path or "-"
    if kind == "download":
        tag = record.etag or record.weak_etag
        return (
            f"{record.url}"
            + (f" etag {tag}" if tag else "")
            + (f" modified {record.last_modified}" if record.last_modified and not tag else "")
        )
    if kind == "sample":
        bits = [f"{record.regime}", f"n={record.n_taken}"]
        if record.seed is not None and record.regime == "random":
            bits.append(f"seed={record.seed}")
        if record.stride is not None:
            bits.append(f"every={record.stride}")
        if record.offset:
            bits.append(f"offset={record.offset}")
        return " ".join(bits)
    params = " ".join(f"{k}={v}" for k, v in sorted(getattr(record, "params", {}).items()))
    if kind == "run":
        command = " ".join(record.command)
        return (
            (f"{record.transform}: " if record.transform else "")
            + command
            + (f" [{params}]" if params else "")
        )
    if kind == "derive":
        return " ".join(x for x in (record.transform or "derived", params) if x)
    return record.path or "-"
