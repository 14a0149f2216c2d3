"""The registered kinds of metadata record, and the JSON schema each payload must meet.

Each registered kind is a pydantic model of its payload. Required fields are typed and
checked; further fields are allowed, so a producer can say more than the schema knows.
The JSON schema files (``casstore/meta/schemas/kinds/<kind>.json``, copied into
``docs/schemas/``) are generated from these models by ``scripts/gen_schemas.py`` and a test
keeps them equal, so the documents users read are the rules the code applies.

A kind that is not registered is accepted as a free payload, unless the store's config
says ``[meta] strict = true``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from casstore.errors import PayloadError

SCHEMA_DIR = Path(__file__).parent / "schemas"

Count = Field(ge=0)


class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow")


class IngestionVolume(_Payload):
    """How much one load brought in: bytes and, when known, records and lines.

    ``bytes`` is the size of the data the source now serves, also when the load found it
    unchanged (so a baseline sees every run); ``not_modified`` says the server answered
    304 and no body was transferred.
    """

    bytes: int = Count
    uncompressed_bytes: int | None = Field(default=None, ge=0)  # of a gzip/bz2/xz body
    records: int | None = Field(default=None, ge=0)
    lines: int | None = Field(default=None, ge=0)
    url: str | None = None  # with secrets redacted, as in the download record
    source_id: str | None = None
    dataset: str | None = None
    object_id: str | None = None
    status: str | None = None  # cas fetch: downloaded, content-unchanged, unchanged
    not_modified: bool | None = None
    filter: str | None = None  # the slice filter, when the load took a slice
    watermark: str | None = None


class IngestionRuntime(_Payload):
    """How long one load took and how hard it was."""

    duration_ms: int = Count
    retries: int = Field(default=0, ge=0)
    resumes: int = Field(default=0, ge=0)
    started: str | None = None
    finished: str | None = None
    status: str | None = None


class ReconResult(_Payload):
    """One reconciliation check: outcome, observed metric, thresholds, baseline runs."""

    outcome: Literal["PASS", "WARNING", "FAIL", "ERROR"]
    metric: str | None = None
    observed: float | None = None
    expected: float | None = None
    threshold: float | None = None
    variability: dict[str, Any] | None = None
    drill_down: list[str] | None = None  # e.g. ["year_month", "day"]
    baseline_run_ids: list[str] | None = None


class Column(BaseModel):
    """One column of a schema snapshot."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1)
    type: str = Field(min_length=1)
    nullable: bool | None = None


class SchemaSnapshot(_Payload):
    """The columns of a table (or the fields of a record stream) at one moment."""

    columns: list[Column]


class DqResult(_Payload):
    """A data-quality validation: counts of expectations and the failures."""

    expectations_passed: int = Count
    expectations_failed: int = Count
    failed_expectations: list[Any] | None = None
    overall_status: Literal["PASS", "WARNING", "FAIL"]


class VerifyResult(_Payload):
    """What one ``cas verify`` found (emitted by cas itself)."""

    status: Literal["ok", "failed"]
    objects: int = Count
    records: int = Field(default=0, ge=0)
    bytes: int = Count
    problems: int = Count
    problem_kinds: dict[str, int] | None = None  # e.g. {"corrupt-object": 1}
    quarantined: int = Field(default=0, ge=0)
    fast: bool = False
    full: bool = True  # False when only some objects were checked (ids, subset, budget)
    duration_ms: int | None = Field(default=None, ge=0)


class GcResult(_Payload):
    """What one ``cas gc`` removed or would remove (emitted by cas itself).

    ``cas gc --dry-run`` changes nothing, the metadata log included, so cas itself only
    emits ``dry_run: false``; the field lets other tools report plans too.
    """

    dry_run: bool
    objects: int = Count  # objects deleted
    pruned: int = Field(default=0, ge=0)  # objects whose bytes were dropped, records kept
    bytes: int = Count  # bytes reclaimed by both
    reflog_entries: int = Field(default=0, ge=0)
    refs: int = Field(default=0, ge=0)  # refs removed by retention
    kept: int | None = Field(default=None, ge=0)
    protected_sources: int | None = Field(default=None, ge=0)
    stray_tmp: int = Field(default=0, ge=0)


KINDS: dict[str, type[_Payload]] = {
    "dq_result": DqResult,
    "gc_result": GcResult,
    "ingestion_runtime": IngestionRuntime,
    "ingestion_volume": IngestionVolume,
    "recon_result": ReconResult,
    "schema_snapshot": SchemaSnapshot,
    "verify_result": VerifyResult,
}


class KindInfo(BaseModel):
    """A registered kind as ``cas meta kinds`` shows it."""

    kind: str
    description: str
    required: list[str]
    schema_file: str


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON schema of a registered kind's payload."""
    model = KINDS[kind]
    schema = model.model_json_schema()
    schema["$id"] = f"https://casstore.dev/schemas/kinds/{kind}.json"
    schema["title"] = kind
    return schema


def schema_text(kind: str) -> str:
    """The schema file's content: stable, indented JSON with a final newline."""
    return json.dumps(json_schema(kind), indent=2, sort_keys=True) + "\n"


def kinds() -> list[KindInfo]:
    """Every registered kind, sorted by name."""
    out = []
    for name, model in sorted(KINDS.items()):
        schema = json_schema(name)
        out.append(
            KindInfo(
                kind=name,
                description=(model.__doc__ or "").strip().splitlines()[0],
                required=list(schema.get("required", [])),
                schema_file=str(SCHEMA_DIR / "kinds" / f"{name}.json"),
            )
        )
    return out


def check_payload(kind: str, payload: dict[str, Any], *, strict: bool = False) -> None:
    """Raise :class:`PayloadError` when ``payload`` does not meet ``kind``'s schema.

    Unknown kinds pass unless ``strict``.
    """
    model = KINDS.get(kind)
    if model is None:
        if strict:
            raise PayloadError(
                f"unknown kind {kind!r} (this store is strict; see cas meta kinds)", kind=kind
            )
        return
    try:
        model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise PayloadError(f"{kind} payload: {where}: {first['msg']}", kind=kind) from None
