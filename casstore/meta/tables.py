"""The run-log tables: ``pipeline_runs``, ``step_logs`` and ``dq_results``.

Their columns are defined once, in JSON schema files shipped with the package
(``casstore/meta/schemas/tables/<table>.json``, copied to ``docs/schemas/tables/``), in the
BigQuery shape: a list of ``{name, type, mode, description}``. The SQLite tables of
``index.sqlite`` are generated from those files (STRING, TIMESTAMP, DATE and JSON become
TEXT; INTEGER stays INTEGER; BOOLEAN becomes INTEGER; REQUIRED becomes NOT NULL), with
indexes that play the part of BigQuery's clustering and partitioning. So the documented
schema is the one the code creates; a test keeps the row models below equal to it.

The allowed values (statuses, trigger types, DQ outcomes) are checked by the pydantic row
models when a row is written. Lines of the log are applied without that check: a line that
was valid when written must replay even if a later version tightens a rule.

A log line is ``{"table": <table>, "row": <the full row after the change>}``; applying it
is an upsert by the table's id, so the last image of a row wins.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

from casstore.errors import MetadataError
from casstore.records import iso_utc

TABLES_DIR = Path(__file__).parent / "schemas" / "tables"

RunStatus = Literal["PENDING", "RUNNING", "COMPLETED", "FAILED"]
StepStatus = Literal["PENDING", "RUNNING", "COMPLETED", "FAILED", "SKIPPED"]
TriggerType = Literal["api", "scheduler", "manual", "webhook", "retry"]
DqStatus = Literal["PASS", "WARNING", "FAIL"]
RUN_STATUSES: tuple[str, ...] = RunStatus.__args__  # type: ignore[attr-defined]
STEP_STATUSES: tuple[str, ...] = StepStatus.__args__  # type: ignore[attr-defined]
TRIGGER_TYPES: tuple[str, ...] = TriggerType.__args__  # type: ignore[attr-defined]
DQ_STATUSES: tuple[str, ...] = DqStatus.__args__  # type: ignore[attr-defined]
FINAL = frozenset({"COMPLETED", "FAILED", "SKIPPED"})


def utc(value: datetime) -> datetime:
    """A time in UTC; a naive time is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# A time in UTC, written as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (so text order is time order).
UtcTime = Annotated[
    datetime, AfterValidator(utc), PlainSerializer(iso_utc, return_type=str, when_used="json")
]


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PipelineRun(_Row):
    """One row of ``pipeline_runs``: one execution of a pipeline."""

    pipeline_logging_id: str
    pipeline_id: str = Field(min_length=1)
    tenant_id: str = Field(min_length=1)
    status: RunStatus
    trigger_type: TriggerType
    trigger_by: str
    start_time: UtcTime
    end_time: UtcTime | None = None
    duration_ms: int | None = Field(default=None, ge=0)
    config_version: str | None = None
    worker_instance: str | None = None
    error_message: str | None = None
    parameters: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        """The run's id (``pipeline_logging_id``), a UUID4 string."""
        return self.pipeline_logging_id


class StepLog(_Row):
    """One row of ``step_logs``: one step of a run."""

    step_logging_id: str
    pipeline_logging_id: str
    tenant_id: str = Field(min_length=1)
    step_name: str = Field(min_length=1)
    step_type: str = Field(min_length=1)
    step_index: int = Field(ge=0)
    status: StepStatus
    start_time: UtcTime
    end_time: UtcTime | None = None
    duration_ms: int | None = Field(default=None, ge=0)
    rows_processed: int | None = Field(default=None, ge=0)
    error_message: str | None = None
    metadata: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        """The step's id (``step_logging_id``), a UUID4 string."""
        return self.step_logging_id


class DqResult(_Row):
    """One row of ``dq_results``: the outcome of one data-quality check in a run."""

    dq_result_id: str
    pipeline_logging_id: str
    tenant_id: str = Field(min_length=1)
    target_table: str = Field(min_length=1)
    dq_config_id: str
    executed_at: UtcTime
    expectations_passed: int = Field(ge=0)
    expectations_failed: int = Field(ge=0)
    failed_expectations: list[Any] | None = None
    overall_status: DqStatus
    ingestion_date: date


@dataclass(frozen=True)
class Column:
    """One column of a schema file."""

    name: str
    type: str
    mode: str
    description: str


@dataclass(frozen=True)
class Table:
    """A run-log table: its schema file's columns, its id column, its row model, its
    indexes (standing in for the seed's clustering, then partitioning, keys)."""

    name: str
    key: str
    model: type[_Row]
    indexes: tuple[tuple[str, ...], ...]

    @property
    def columns(self) -> tuple[Column, ...]:
        """The columns as the shipped schema file lists them."""
        return load_columns(self.name)


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "pipeline_runs",
            "pipeline_logging_id",
            PipelineRun,
            (("tenant_id", "pipeline_id", "status", "start_time"), ("tenant_id", "start_time")),
        ),
        Table(
            "step_logs",
            "step_logging_id",
            StepLog,
            (("pipeline_logging_id", "status"), ("tenant_id", "start_time")),
        ),
        Table(
            "dq_results",
            "dq_result_id",
            DqResult,
            (
                ("tenant_id", "target_table", "overall_status", "ingestion_date"),
                ("tenant_id", "executed_at"),
                ("pipeline_logging_id",),
            ),
        ),
    )
}
TABLE_OF = {t.model: t for t in TABLES.values()}

_SQL_TYPES = {
    "STRING": "TEXT",
    "TIMESTAMP": "TEXT",
    "DATE": "TEXT",
    "JSON": "TEXT",
    "INTEGER": "INTEGER",
    "INT64": "INTEGER",
    "BOOLEAN": "INTEGER",
    "BOOL": "INTEGER",
}


@cache
def load_columns(table: str) -> tuple[Column, ...]:
    """The columns of ``table`` from its shipped schema file.

    Raises:
        MetadataError: the file is missing, malformed, or names a type SQLite has no
            counterpart for.
    """
    path = TABLES_DIR / f"{table}.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        columns = tuple(
            Column(
                c["name"], c["type"].upper(), c.get("mode", "NULLABLE").upper(), c["description"]
            )
            for c in raw
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MetadataError(f"table schema {path} cannot be read: {exc}") from exc
    for c in columns:
        if c.type not in _SQL_TYPES:
            raise MetadataError(f"table schema {path}: column {c.name}: unknown type {c.type}")
    return columns


def create_sql(table: Table) -> str:
    """``CREATE TABLE`` and ``CREATE INDEX`` statements for ``table`` (idempotent)."""
    cols = []
    for c in table.columns:
        sql = f"    {c.name} {_SQL_TYPES[c.type]}"
        if c.mode == "REQUIRED":
            sql += " NOT NULL"
        if c.name == table.key:
            sql += " PRIMARY KEY"
        cols.append(sql)
    out = [f"CREATE TABLE IF NOT EXISTS {table.name} (\n" + ",\n".join(cols) + "\n);"]
    for cluster in table.indexes:
        name = f"{table.name}_by_{'_'.join(cluster)}"
        out.append(f"CREATE INDEX IF NOT EXISTS {name} ON {table.name} ({', '.join(cluster)});")
    return "\n".join(out) + "\n"


def schema_sql() -> str:
    """The DDL of every run-log table."""
    return "".join(create_sql(t) for t in TABLES.values())


@cache
def _upsert(table: str) -> tuple[str, tuple[Column, ...]]:
    t = TABLES[table]
    cols = t.columns
    names = ", ".join(c.name for c in cols)
    marks = ", ".join("?" for _ in cols)
    sets = ", ".join(f"{c.name}=excluded.{c.name}" for c in cols if c.name != t.key)
    sql = (
        f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT({t.key}) DO UPDATE SET {sets}"
    )
    return sql, cols


def _cell(column: Column, value: Any) -> Any:
    if value is None:
        return None
    if column.type == "JSON":
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if column.type in ("BOOLEAN", "BOOL"):
        return int(bool(value))
    return value


def encode(row: _Row) -> bytes:
    """The log line of a row: which table, and the full row image."""
    doc = {"table": TABLE_OF[type(row)].name, "row": row.model_dump(mode="json")}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def apply_lines(db: sqlite3.Connection, lines: list[bytes]) -> int:
    """Upsert each line's row into its table; return how many lines could not be read."""
    skipped = 0
    for line in lines:
        try:
            doc = json.loads(line)
            table, row = doc["table"], doc["row"]
            sql, cols = _upsert(table)
            if not row.get(TABLES[table].key):
                raise KeyError(TABLES[table].key)
            db.execute(sql, [_cell(c, row.get(c.name)) for c in cols])
        except (ValueError, KeyError, TypeError, AttributeError, sqlite3.IntegrityError):
            skipped += 1
    return skipped


def clear_tables(db: sqlite3.Connection) -> None:
    """Empty every run-log table before a full replay."""
    for table in TABLES:
        db.execute(f"DELETE FROM {table}")


def read_rows(
    db: sqlite3.Connection, model: type[_Row], where: str, args: list[Any], tail: str = ""
) -> list[Any]:
    """Rows of ``model``'s table matching ``where`` (SQL with ``?`` placeholders), as models."""
    table = TABLE_OF[model]
    cols = table.columns
    sql = f"SELECT {', '.join(c.name for c in cols)} FROM {table.name} WHERE {where} {tail}"
    out = []
    for values in db.execute(sql, args):
        doc = {}
        for c, v in zip(cols, values, strict=True):
            if v is not None and c.type == "JSON":
                v = json.loads(v)
            elif v is not None and c.type in ("BOOLEAN", "BOOL"):
                v = bool(v)
            doc[c.name] = v
        out.append(model.model_validate(doc))
    return out
