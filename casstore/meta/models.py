"""The metadata record: one structured fact a producer emits about its work.

``MetadataTarget`` names the artifact the fact is about, ``MetadataContext`` the execution
that produced it, and ``MetadataRecord`` ties them to a ``kind`` and a ``payload``. A
record's identity is (tenant, kind, target, context.run_id, produced_at): storing the same
identity again merges into the stored record instead of adding a second one, which is what
makes a backfill safe to re-run.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from casstore.records import iso_utc, utcnow

DEFAULT_TENANT = "default"


class MetadataTarget(BaseModel):
    """The physical artifact a record describes: a source, or a schema and table."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    source_id: str | None = None
    schema_: str | None = Field(default=None, alias="schema")
    table: str | None = None
    extras: dict[str, Any] | None = None

    @field_validator("extras")
    @classmethod
    def _sorted(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # extras take part in the target's identity: one key order for equal extras
        return None if value is None else json.loads(json.dumps(value, sort_keys=True))

    def key(self) -> str:
        """The target as compact JSON in field order: equal targets have equal keys."""
        return self.model_dump_json(by_alias=True, exclude_none=True)


class MetadataContext(BaseModel):
    """The execution a record came from: job, run, namespace, anything else."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    job_id: str | None = None
    run_id: str | None = None
    namespace: str | None = None
    extras: dict[str, Any] | None = None


class MetadataRecord(BaseModel):
    """One fact: ``kind`` says what it is, ``payload`` holds it, ``target`` what it is about.

    ``tenant_id`` is filled with the store's default tenant when not given; every read
    filters by it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    target: MetadataTarget = Field(default_factory=MetadataTarget)
    kind: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")
    payload: dict[str, Any] = Field(default_factory=dict)
    produced_at: datetime = Field(default_factory=utcnow)
    producer_id: str = "unknown"
    context: MetadataContext = Field(default_factory=MetadataContext)
    version: str | None = None
    quality: str | None = None
    extras: dict[str, Any] | None = None
    tenant_id: str | None = None

    @field_validator("produced_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # naive times are read as UTC
        return value.astimezone(UTC)

    @field_serializer("produced_at")
    def _iso(self, value: datetime) -> str:
        return iso_utc(value)

    def to_json(self) -> str:
        """Compact JSON with ``None`` fields left out: one line of the metadata log."""
        return self.model_dump_json(by_alias=True, exclude_none=True)
