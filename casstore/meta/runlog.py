"""The run log: ``log/runs.jsonl`` mirrored into the run tables of ``index.sqlite``.

``log/runs.jsonl`` is the truth: every change of a run, a step or a DQ result appends the
row's full image after the change (``{"table": ..., "row": ...}``). The tables
``pipeline_runs``, ``step_logs`` and ``dq_results`` mirror it through
:class:`casstore.meta.journal.Journal`, exactly as the metadata repository does, so a
deleted (or version-dropped) index replays the runs. Columns come from the shipped schema
files (:mod:`casstore.meta.tables`).

A run goes PENDING → RUNNING → COMPLETED or FAILED; a step the same, or SKIPPED. Both
images of a start (PENDING, then RUNNING) are appended together, so the log keeps the whole
history at the cost of one ``fsync``. Every row carries ``tenant_id`` and every query of a
:class:`RunLog` filters by its tenant. Records written inside a run name it, and the index
keeps the run id in ``records.pipeline_run``, so :meth:`RunLog.objects` answers "what did
this run produce".
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sqlite3
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from casstore.errors import MetadataError, RunNotFound, UsageError
from casstore.meta.journal import Journal
from casstore.meta.models import DEFAULT_TENANT
from casstore.meta.tables import (
    DQ_STATUSES,
    FINAL,
    RUN_STATUSES,
    DqResult,
    PipelineRun,
    StepLog,
    apply_lines,
    clear_tables,
    encode,
    read_rows,
    schema_sql,
    utc,
)
from casstore.records import PipelineLink, iso_utc, utcnow

LOG_NAME = "runs.jsonl"
_ID_PREFIX = re.compile(r"^[0-9a-f-]{4,36}$")
_Row = TypeVar("_Row", PipelineRun, StepLog, DqResult)


class RunObject(BaseModel):
    """An object a run produced: one record written while the run (or a step) was open."""

    object: str
    record_id: str
    type: str
    created: str
    fact: str | None = None
    step_id: str | None = None
    step_name: str | None = None
    size: int | None = None
    source_id: str | None = None


class RunDetail(BaseModel):
    """A run with its steps, its DQ results and the objects it produced (``cas runs show``)."""

    run: PipelineRun
    steps: list[StepLog]
    dq_results: list[DqResult]
    objects: list[RunObject]


def new_id() -> str:
    """A fresh run, step or DQ result id: a UUID4 string."""
    return str(uuid.uuid4())


def worker_instance() -> str:
    """``host:pid`` of this process: where a run or step executed."""
    return f"{socket.gethostname()}:{os.getpid()}"


def dq_status(expectations_failed: int, failed_expectations: Sequence[Any] | None) -> str:
    """The overall outcome of a DQ check.

    PASS when nothing failed (a zero count and no failure listed); WARNING when failures
    are listed and every one is an object with ``"severity": "warning"``; FAIL otherwise,
    including a non-zero count with no details (nothing says those were only warnings).
    """
    failures = list(failed_expectations or [])
    if expectations_failed == 0 and not failures:
        return "PASS"
    if failures and all(
        isinstance(f, Mapping) and str(f.get("severity", "")).lower() == "warning" for f in failures
    ):
        return "WARNING"
    return "FAIL"


def _ms(start: datetime, end: datetime) -> int:
    return max(0, int((end - start).total_seconds() * 1000))


def _valid(model: type[_Row], fields: Mapping[str, Any]) -> _Row:
    """Build a row, turning a validation failure into one readable :class:`UsageError`."""
    try:
        return model.model_validate(dict(fields))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or model.__name__
        raise UsageError(f"{where}: {first['msg']} (got {first.get('input')!r})") from None


def _changed(row: _Row, **changes: Any) -> _Row:
    return _valid(type(row), {**row.model_dump(), **changes})


class RunLog:
    """The run log of a store for one tenant: write runs, steps and DQ results, query them.

    Get one with ``store.runs(tenant)``. Ids may be given as unique prefixes (at least 4
    characters) wherever a run or step is named.
    """

    def __init__(
        self,
        db: sqlite3.Connection,
        log_dir: Path,
        *,
        tenant: str = DEFAULT_TENANT,
        lock_timeout: float = 30.0,
    ) -> None:
        self.tenant = tenant
        self.db = db
        self.journal = Journal(
            db,
            log_dir / LOG_NAME,
            name="runs",
            schema=schema_sql(),
            apply=apply_lines,
            clear=clear_tables,
            lock_timeout=lock_timeout,
        )

    @property
    def log_path(self) -> Path:
        """The append-only log every change goes to."""
        return self.journal.path

    def _write(self, *rows: PipelineRun | StepLog | DqResult) -> None:
        self.journal.append([encode(r) for r in rows])

    def _rows(self, model: type[_Row], where: str, args: Sequence[Any], tail: str = "") -> list:
        self.journal.sync()
        return read_rows(self.db, model, f"tenant_id=? AND {where}", [self.tenant, *args], tail)

    # ---- writing runs --------------------------------------------------------------------
    def begin(
        self,
        pipeline_id: str,
        *,
        trigger_type: str = "manual",
        trigger_by: str = "",
        parameters: Mapping[str, Any] | None = None,
        config_version: str | None = None,
        worker: str | None = None,
    ) -> PipelineRun:
        """Start a run: append its PENDING and RUNNING images; return the RUNNING row."""
        pending = _valid(
            PipelineRun,
            {
                "pipeline_logging_id": new_id(),
                "pipeline_id": pipeline_id,
                "tenant_id": self.tenant,
                "status": "PENDING",
                "trigger_type": trigger_type,
                "trigger_by": trigger_by,
                "start_time": utcnow(),
                "config_version": config_version,
                "worker_instance": worker or worker_instance(),
                "parameters": dict(parameters) if parameters is not None else None,
            },
        )
        running = _changed(pending, status="RUNNING")
        self._write(pending, running)
        return running

    def finish(
        self, run: str | PipelineRun, status: str = "COMPLETED", error: str | None = None
    ) -> PipelineRun:
        """End a run as COMPLETED or FAILED, with its end time and duration.

        Raises:
            UsageError: a status other than COMPLETED or FAILED.
            MetadataError: the run has already ended (finishing twice is a mistake).
        """
        if status not in ("COMPLETED", "FAILED"):
            raise UsageError(f"a run finishes COMPLETED or FAILED, not {status!r}")
        row = self.get(run) if isinstance(run, str) else run
        if row.status in FINAL:
            raise MetadataError(f"run {row.id} has already finished ({row.status})")
        end = utcnow()
        done = _changed(
            row,
            status=status,
            end_time=end,
            duration_ms=_ms(row.start_time, end),
            error_message=error,
        )
        self._write(done)
        return done

    # ---- writing steps -------------------------------------------------------------------
    def _open_run(self, run: str) -> PipelineRun:
        row = self.get(run)
        if row.status in FINAL:
            raise MetadataError(f"run {row.id} has already finished ({row.status}): no new steps")
        return row

    def _next_index(self, run_id: str) -> int:
        # Steps started at once from separate processes may share an index: it is their
        # order of start as each saw the log, not a lock-protected counter.
        self.journal.sync()
        row = self.db.execute(
            "SELECT count(*) FROM step_logs WHERE tenant_id=? AND pipeline_logging_id=?",
            (self.tenant, run_id),
        ).fetchone()
        return int(row[0])

    def begin_step(
        self,
        run: str,
        name: str,
        *,
        step_type: str = "task",
        metadata: Mapping[str, Any] | None = None,
    ) -> StepLog:
        """Start a step of an open run: append its PENDING and RUNNING images."""
        row = self._open_run(run)
        pending = _valid(
            StepLog,
            {
                "step_logging_id": new_id(),
                "pipeline_logging_id": row.id,
                "tenant_id": self.tenant,
                "step_name": name,
                "step_type": step_type,
                "step_index": self._next_index(row.id),
                "status": "PENDING",
                "start_time": utcnow(),
                "metadata": dict(metadata) if metadata else None,
            },
        )
        running = _changed(pending, status="RUNNING")
        self._write(pending, running)
        return running

    def end_step(
        self,
        step: str | StepLog,
        status: str = "COMPLETED",
        *,
        rows_processed: int | None = None,
        error: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> StepLog:
        """End a started step as COMPLETED, FAILED or SKIPPED.

        Raises:
            UsageError: another status.
            MetadataError: the step has already ended.
        """
        if status not in FINAL:
            raise UsageError(f"a step ends COMPLETED, FAILED or SKIPPED, not {status!r}")
        row = self.step(step) if isinstance(step, str) else step
        if row.status in FINAL:
            raise MetadataError(f"step {row.id} has already ended ({row.status})")
        end = utcnow()
        done = _changed(
            row,
            status=status,
            end_time=end,
            duration_ms=_ms(row.start_time, end),
            rows_processed=rows_processed,
            error_message=error,
            metadata={**(row.metadata or {}), **(metadata or {})} or None,
        )
        self._write(done)
        return done

    def record_step(
        self,
        run: str,
        name: str,
        *,
        status: str,
        step_type: str = "task",
        rows_processed: int | None = None,
        error: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> StepLog:
        """Record a step that ran elsewhere, already ended (start and end are now)."""
        if status not in FINAL:
            raise UsageError(f"a recorded step is COMPLETED, FAILED or SKIPPED, not {status!r}")
        row = self._open_run(run)
        now = utcnow()
        step = _valid(
            StepLog,
            {
                "step_logging_id": new_id(),
                "pipeline_logging_id": row.id,
                "tenant_id": self.tenant,
                "step_name": name,
                "step_type": step_type,
                "step_index": self._next_index(row.id),
                "status": status,
                "start_time": now,
                "end_time": now,
                "rows_processed": rows_processed,
                "error_message": error,
                "metadata": dict(metadata) if metadata else None,
            },
        )
        self._write(step)
        return step

    # ---- writing DQ results --------------------------------------------------------------
    def dq_result(
        self,
        run: str,
        *,
        target_table: str,
        dq_config_id: str,
        expectations_passed: int,
        expectations_failed: int,
        failed_expectations: Sequence[Any] | None = None,
        executed_at: datetime | None = None,
    ) -> DqResult:
        """Record a DQ check of ``run``; ``overall_status`` follows :func:`dq_status` and
        ``ingestion_date`` is the (UTC) date of ``executed_at`` (default: now)."""
        row = self.get(run)
        failures = list(failed_expectations) if failed_expectations is not None else None
        at = utc(executed_at or utcnow())
        result = _valid(
            DqResult,
            {
                "dq_result_id": new_id(),
                "pipeline_logging_id": row.id,
                "tenant_id": self.tenant,
                "target_table": target_table,
                "dq_config_id": dq_config_id,
                "executed_at": at,
                "expectations_passed": expectations_passed,
                "expectations_failed": expectations_failed,
                "failed_expectations": failures,
                "overall_status": dq_status(expectations_failed, failures),
                "ingestion_date": at.date(),
            },
        )
        self._write(result)
        return result

    # ---- reading -------------------------------------------------------------------------
    def _resolve(self, model: type[_Row], key: str, spec: str, what: str, **extra: str) -> _Row:
        text = spec.strip().lower()
        if not _ID_PREFIX.fullmatch(text):
            raise RunNotFound(f"no {what} {spec!r} (give its id or at least 4 characters of it)")
        where = f"{key} LIKE ?"
        args: list[Any] = [text + "%"]
        for col, value in extra.items():
            where += f" AND {col}=?"
            args.append(value)
        found = self._rows(model, where, args, f"ORDER BY {key} LIMIT 11")
        exact = [r for r in found if getattr(r, key) == text]
        if exact:
            return exact[0]
        if not found:
            scope = "" if self.tenant == DEFAULT_TENANT else f" for tenant {self.tenant!r}"
            raise RunNotFound(f"no {what} {spec!r}{scope}")
        if len(found) > 1:
            shown = ", ".join(getattr(r, key)[:13] for r in found[:10])
            raise UsageError(f"{what} id {spec!r} is ambiguous: {shown}")
        return found[0]

    def get(self, run: str) -> PipelineRun:
        """One run by id or unique prefix.

        Raises:
            RunNotFound: no such run for this tenant.
            UsageError: the prefix matches several runs.
        """
        return self._resolve(PipelineRun, "pipeline_logging_id", run, "pipeline run")

    def step(self, step: str, run: str | None = None) -> StepLog:
        """One step by id or unique prefix (within ``run`` when given)."""
        extra = {"pipeline_logging_id": self.get(run).id} if run is not None else {}
        return self._resolve(StepLog, "step_logging_id", step, "step", **extra)

    def link(self, run: str, step: str | None = None) -> PipelineLink:
        """The link records should carry for ``run`` (and ``step``), checked and expanded.

        Raises:
            RunNotFound: the run, or the step within it, does not exist for this tenant.
        """
        row = self.get(run)
        step_id = self.step(step, row.id).id if step else None
        return PipelineLink(run_id=row.id, step_id=step_id)

    def list_runs(
        self,
        *,
        status: str | None = None,
        since: datetime | None = None,
        pipeline_id: str | None = None,
        limit: int | None = None,
    ) -> list[PipelineRun]:
        """Runs of this tenant, newest first, filtered by status, start time and pipeline."""
        where, args = "1=1", []
        if status is not None:
            if status not in RUN_STATUSES:
                raise UsageError(f"status must be one of {', '.join(RUN_STATUSES)}")
            where += " AND status=?"
            args.append(status)
        if since is not None:
            where += " AND start_time>=?"
            args.append(iso_utc(since))
        if pipeline_id is not None:
            where += " AND pipeline_id=?"
            args.append(pipeline_id)
        tail = _order("start_time", limit, args)
        return self._rows(PipelineRun, where, args, tail)

    def steps(self, run: str) -> list[StepLog]:
        """The steps of a run, in order of ``step_index``."""
        run_id = self.get(run).id
        return self._rows(
            StepLog, "pipeline_logging_id=?", [run_id], "ORDER BY step_index, start_time"
        )

    def list_dq(
        self,
        *,
        run: str | None = None,
        status: str | None = None,
        table: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[DqResult]:
        """DQ results of this tenant, newest first, by run, outcome, table and time."""
        where, args = "1=1", []
        if run is not None:
            where += " AND pipeline_logging_id=?"
            args.append(self.get(run).id)
        if status is not None:
            if status not in DQ_STATUSES:
                raise UsageError(f"status must be one of {', '.join(DQ_STATUSES)}")
            where += " AND overall_status=?"
            args.append(status)
        if table is not None:
            where += " AND target_table=?"
            args.append(table)
        if since is not None:
            where += " AND executed_at>=?"
            args.append(iso_utc(since))
        tail = _order("executed_at", limit, args)
        return self._rows(DqResult, where, args, tail)

    def objects(self, run: str) -> list[RunObject]:
        """The objects a run produced (every record linked to it), oldest first."""
        run_id = self.get(run).id
        names = {s.id: s.step_name for s in self.steps(run_id)}
        rows = self.db.execute(
            "SELECT r.object_id, r.id, r.type, r.created, r.fact, r.pipeline_step, o.size,"
            " r.source_id FROM records r LEFT JOIN objects o ON o.id = r.object_id"
            " WHERE r.pipeline_run=? ORDER BY r.created, r.id",
            (run_id,),
        ).fetchall()
        return [
            RunObject(
                object=oid,
                record_id=rid,
                type=kind,
                created=created,
                fact=fact,
                step_id=step,
                step_name=names.get(step) if step else None,
                size=size,
                source_id=source,
            )
            for oid, rid, kind, created, fact, step, size, source in rows
        ]

    def detail(self, run: str) -> RunDetail:
        """Everything about one run: the row, its steps, DQ results and objects."""
        row = self.get(run)
        return RunDetail(
            run=row,
            steps=self.steps(row.id),
            dq_results=self.list_dq(run=row.id),
            objects=self.objects(row.id),
        )

    def name_links(self, nodes: Sequence[Any]) -> None:
        """Fill ``pipeline_id`` and ``step_name`` of lineage nodes that carry a run link.

        Runs of other tenants stay unnamed (only their ids, from the records, show).
        """
        for node in nodes:
            link = getattr(node, "pipeline", None)
            if link is None:
                continue
            with contextlib.suppress(RunNotFound):
                link.pipeline_id = self.get(link.run_id).pipeline_id
                if link.step_id:
                    link.step_name = self.step(link.step_id, link.run_id).step_name


def _order(column: str, limit: int | None, args: list[Any]) -> str:
    """``ORDER BY column DESC`` and, with a limit, ``LIMIT ?`` (its value added to ``args``)."""
    tail = f"ORDER BY {column} DESC"
    if limit is not None:
        if limit < 0:
            raise UsageError("limit must be 0 or more")
        tail += " LIMIT ?"
        args.append(limit)
    return tail
