"""Pipeline run logs, the Python API: runs and steps as context managers.

::

    with store.pipeline_run("daily_ingest", trigger_type="scheduler", trigger_by="cron",
                            parameters={"date": "2025-11-15"}) as run:
        with run.step("download", step_type="fetch") as step:
            result = store.fetch("systems")
            step.metadata["bytes"] = result.size
        run.dq_result(target_table="raw.systems", dq_config_id="systems_suite",
                      expectations_passed=12, expectations_failed=0)

A run or step is RUNNING inside its block, COMPLETED after it, and FAILED (with the
exception's type and message on one line) when the block raises; the exception, a
``KeyboardInterrupt`` too, propagates. While a block is open, :mod:`casstore.meta.context`
holds its link, so every record cas writes inside carries ``pipeline={run_id, step_id}``.

The log and its queries are :class:`~casstore.meta.runlog.RunLog` (``store.runs()``); the
tables and row models are in :mod:`casstore.meta.tables`; see ``docs/runs.md``.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from casstore.errors import UsageError
from casstore.meta.context import linked
from casstore.meta.runlog import (
    LOG_NAME,
    RunDetail,
    RunLog,
    RunObject,
    dq_status,
    new_id,
    worker_instance,
)
from casstore.meta.tables import (
    RUN_STATUSES,
    STEP_STATUSES,
    DqResult,
    PipelineRun,
    StepLog,
)
from casstore.records import PipelineLink


class StepCommandResult(BaseModel):
    """A command run as a step: the step as recorded, and the exit code to exit with."""

    step: StepLog
    exit_code: int


def describe_error(exc: BaseException) -> str:
    """An exception as one line: ``ValueError: bad row 7`` (just the type when no message)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---- the context managers of the Python API -------------------------------------------------
class StepHandle:
    """What ``with run.step(...) as step`` yields: set ``rows_processed`` and ``metadata``
    inside the block; they are written when the step ends."""

    def __init__(self, row: StepLog) -> None:
        self.row = row
        self.rows_processed: int | None = None
        self.metadata: dict[str, Any] = dict(row.metadata or {})

    @property
    def id(self) -> str:
        """The step's id."""
        return self.row.id

    @property
    def name(self) -> str:
        """The step's name."""
        return self.row.step_name

    @property
    def index(self) -> int:
        """The step's position in its run, from 0."""
        return self.row.step_index


class RunHandle:
    """What ``with store.pipeline_run(...) as run`` yields: steps and DQ results of the run."""

    def __init__(self, log: RunLog, row: PipelineRun) -> None:
        self.log = log
        self.row = row

    @property
    def id(self) -> str:
        """The run's id (a UUID4 string)."""
        return self.row.id

    @contextlib.contextmanager
    def step(
        self, name: str, step_type: str = "task", *, metadata: Mapping[str, Any] | None = None
    ) -> Iterator[StepHandle]:
        """A step of this run: RUNNING inside the block, COMPLETED after it, FAILED (with
        the exception's type and message) when it raises; the exception propagates.
        Records written inside are linked to this run and step."""
        handle = StepHandle(
            self.log.begin_step(self.id, name, step_type=step_type, metadata=metadata)
        )
        try:
            with linked(PipelineLink(run_id=self.id, step_id=handle.id)):
                yield handle
        except BaseException as exc:  # KeyboardInterrupt too: the step did not finish
            handle.row = self.log.end_step(
                handle.row,
                "FAILED",
                rows_processed=handle.rows_processed,
                error=describe_error(exc),
                metadata=handle.metadata,
            )
            raise
        handle.row = self.log.end_step(
            handle.row, "COMPLETED", rows_processed=handle.rows_processed, metadata=handle.metadata
        )

    def skip_step(self, name: str, step_type: str = "task", reason: str | None = None) -> StepLog:
        """Record a step that was not run (SKIPPED), with an optional reason."""
        return self.log.record_step(
            self.id, name, status="SKIPPED", step_type=step_type, error=reason
        )

    def dq_result(self, **fields: Any) -> DqResult:
        """Record a DQ check of this run: see :meth:`RunLog.dq_result` for the fields."""
        return self.log.dq_result(self.id, **fields)


@contextlib.contextmanager
def pipeline_run(
    log: RunLog,
    pipeline_id: str,
    *,
    trigger_type: str = "manual",
    trigger_by: str,
    parameters: Mapping[str, Any] | None = None,
    config_version: str | None = None,
) -> Iterator[RunHandle]:
    """A run around a block: RUNNING inside, COMPLETED after, FAILED (with the exception's
    type and message) when the block raises, and the exception propagates.

    Records written inside (outside any step) are linked to the run alone.
    """
    handle = RunHandle(
        log,
        log.begin(
            pipeline_id,
            trigger_type=trigger_type,
            trigger_by=trigger_by,
            parameters=parameters,
            config_version=config_version,
        ),
    )
    try:
        with linked(PipelineLink(run_id=handle.id)):
            yield handle
    except BaseException as exc:
        handle.row = log.finish(handle.row, "FAILED", error=describe_error(exc))
        raise
    handle.row = log.finish(handle.row, "COMPLETED")


def run_step_command(
    log: RunLog,
    run: str,
    name: str,
    command: Sequence[str],
    *,
    step_type: str = "command",
    environ: Mapping[str, str],
) -> StepCommandResult:
    """Run ``command`` as a step of ``run`` (``cas runs step RUN NAME -- CMD``).

    The child gets ``environ`` plus ``CAS_RUN``, ``CAS_STEP`` and ``CAS_TENANT``, so the cas
    commands it runs link their records to this step. Exit 0 ends the step COMPLETED; any
    other exit ends it FAILED with the exit code in ``error_message``.

    Raises:
        UsageError: no command, or it cannot be started (the step is FAILED then too).
    """
    if not command:
        raise UsageError("give the command to run after --")
    argv = list(command)
    step = log.begin_step(run, name, step_type=step_type, metadata={"command": argv})
    env = {
        **environ,
        "CAS_RUN": step.pipeline_logging_id,
        "CAS_STEP": step.id,
        "CAS_TENANT": log.tenant,
    }
    try:
        proc = subprocess.run(argv, env=env, check=False)
    except OSError as exc:
        message = f"cannot run {argv[0]!r}: {exc.strerror or exc}"
        log.end_step(step, "FAILED", error=message)
        raise UsageError(message) from exc
    except BaseException as exc:
        log.end_step(step, "FAILED", error=describe_error(exc))
        raise
    code = proc.returncode
    if code == 0:
        done = log.end_step(step, "COMPLETED", metadata={"exit_code": 0})
        return StepCommandResult(step=done, exit_code=0)
    error = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    done = log.end_step(step, "FAILED", error=error, metadata={"exit_code": code})
    return StepCommandResult(step=done, exit_code=128 - code if code < 0 else min(code, 255))


__all__ = [
    "LOG_NAME",
    "RUN_STATUSES",
    "STEP_STATUSES",
    "DqResult",
    "PipelineRun",
    "RunDetail",
    "RunHandle",
    "RunLog",
    "RunObject",
    "StepCommandResult",
    "StepHandle",
    "StepLog",
    "describe_error",
    "dq_status",
    "new_id",
    "pipeline_run",
    "run_step_command",
    "worker_instance",
]
