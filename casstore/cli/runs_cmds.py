"""``cas runs ...`` and ``cas dq list``: pipeline run logs from the shell (docs/runs.md).

Each command parses, makes one call on ``store.runs(tenant)`` and renders the models it
gets back. ``cas runs step RUN NAME -- CMD`` runs CMD with ``CAS_RUN``/``CAS_STEP`` set, so
the cas commands inside it link their records to the step.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import click

from casstore.cli._app import AppContext, cli, json_option, pass_app
from casstore.cli._output import emit_json, short_time, table
from casstore.cli.store_cmds import _parse_params

if TYPE_CHECKING:
    from datetime import datetime

    from casstore.meta.runs import RunDetail
    from casstore.meta.tables import PipelineRun, StepLog

RUN_STATUSES = ("PENDING", "RUNNING", "COMPLETED", "FAILED")
TRIGGERS = ("api", "scheduler", "manual", "webhook", "retry")

tenant_option = click.option(
    "--tenant",
    envvar="CAS_TENANT",
    metavar="T",
    help="The tenant (default: $CAS_TENANT, else [meta] tenant of config.toml).",
)
since_option = click.option(
    "--since", metavar="WHEN", help="Only since then: 7d, 12h, 2024-01-10 or an ISO time."
)


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    from casstore.when import parse_when

    return parse_when(text)


def _duration(ms: int | None) -> str:
    return "-" if ms is None else f"{ms} ms"


def _run_line(r: PipelineRun) -> list[str]:
    return [
        r.id,
        r.pipeline_id,
        r.status,
        r.trigger_type,
        short_time(r.start_time.isoformat()),
        _duration(r.duration_ms),
    ]


def _step_line(s: StepLog) -> list[str]:
    rows = f"rows={s.rows_processed}" if s.rows_processed is not None else ""
    return [
        f"  {s.step_index}",
        s.step_name,
        s.step_type,
        s.status,
        _duration(s.duration_ms),
        "  ".join(x for x in (rows, s.error_message or "") if x),
    ]


def _show(d: RunDetail) -> None:
    r = d.run
    fields = [
        ("run", r.id),
        ("pipeline", r.pipeline_id),
        ("tenant", r.tenant_id),
        ("status", r.status),
        ("trigger", f"{r.trigger_type} by {r.trigger_by or '?'}"),
        ("started", short_time(r.start_time.isoformat())),
        ("ended", short_time(r.end_time.isoformat()) if r.end_time else "-"),
        ("duration", _duration(r.duration_ms)),
        ("worker", r.worker_instance or "-"),
    ]
    if r.config_version:
        fields.append(("config", r.config_version))
    if r.parameters:
        fields.append(("parameters", json.dumps(r.parameters, sort_keys=True)))
    if r.error_message:
        fields.append(("error", r.error_message))
    table([k, v] for k, v in fields)
    click.echo(f"steps ({len(d.steps)})")
    table(_step_line(s) for s in d.steps)
    click.echo(f"dq results ({len(d.dq_results)})")
    table(
        [
            f"  {q.target_table}",
            q.overall_status,
            f"{q.expectations_passed} passed, {q.expectations_failed} failed",
            q.dq_config_id,
        ]
        for q in d.dq_results
    )
    click.echo(f"objects ({len(d.objects)})")
    table(
        [
            f"  {o.object[:12]}",
            o.type,
            f"step {o.step_name}" if o.step_name else "-",
            o.fact or "",
        ]
        for o in d.objects
    )


@cli.group()
def runs() -> None:
    """Pipeline run logs: runs, their steps, DQ results and the objects they produced."""


@runs.command("list")
@click.option("--status", type=click.Choice(RUN_STATUSES), help="Only runs with this status.")
@since_option
@click.option("--pipeline", "pipeline_id", metavar="ID", help="Only runs of this pipeline.")
@click.option("--limit", type=click.IntRange(0), metavar="N", help="At most N runs.")
@tenant_option
@json_option
@pass_app
def runs_list(
    app: AppContext,
    status: str | None,
    since: str | None,
    pipeline_id: str | None,
    limit: int | None,
    tenant: str | None,
    as_json: bool,
) -> None:
    """List runs, newest first: id, pipeline, status, trigger, start, duration."""
    found = (
        app.store()
        .runs(tenant)
        .list_runs(status=status, since=_since(since), pipeline_id=pipeline_id, limit=limit)
    )
    if as_json:
        emit_json(found)
        return
    table(_run_line(r) for r in found)


@runs.command("show")
@click.argument("run")
@tenant_option
@json_option
@pass_app
def runs_show(app: AppContext, run: str, tenant: str | None, as_json: bool) -> None:
    """One run (id or unique prefix): its steps, DQ results and the objects it produced."""
    detail = app.store().runs(tenant).detail(run)
    if as_json:
        emit_json(detail)
        return
    _show(detail)


@runs.command("start")
@click.argument("pipeline")
@click.option(
    "--trigger-type",
    type=click.Choice(TRIGGERS),
    default="manual",
    show_default=True,
    help="How the run was triggered.",
)
@click.option("--trigger-by", metavar="WHO", help="Who or what triggered it (default: you).")
@click.option("--param", "params", multiple=True, metavar="K=V", help="A run parameter.")
@click.option("--config-version", metavar="V", help="Version or Git SHA of the pipeline config.")
@tenant_option
@json_option
@pass_app
def runs_start(
    app: AppContext,
    pipeline: str,
    trigger_type: str,
    trigger_by: str | None,
    params: tuple[str, ...],
    config_version: str | None,
    tenant: str | None,
    as_json: bool,
) -> None:
    """Start a run of PIPELINE (status RUNNING) and print its id.

    \b
    Example:
      run=$(cas runs start daily_ingest --trigger-type scheduler --param date=2025-11-15)
      cas runs step "$run" download -- cas fetch systems
      cas runs finish "$run"
    """
    from casstore.refs import whoami

    row = (
        app.store()
        .runs(tenant)
        .begin(
            pipeline,
            trigger_type=trigger_type,
            trigger_by=trigger_by if trigger_by is not None else whoami()[0],
            parameters=_parse_params(params) if params else None,
            config_version=config_version,
        )
    )
    if as_json:
        emit_json(row)
        return
    click.echo(row.id)


@runs.command("step", context_settings={"ignore_unknown_options": True})
@click.argument("run")
@click.argument("name")
@click.option(
    "--type",
    "step_type",
    metavar="T",
    help="The step's type (default: command; task with --status).",
)
@click.option(
    "--status",
    type=click.Choice(("COMPLETED", "FAILED", "SKIPPED")),
    help="Record a step that ran elsewhere, with this outcome (no command).",
)
@click.option("--rows", type=click.IntRange(0), metavar="N", help="Rows it processed.")
@click.option("--error", metavar="MSG", help="What went wrong (with --status FAILED).")
@tenant_option
@json_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_app
def runs_step(
    app: AppContext,
    run: str,
    name: str,
    step_type: str | None,
    status: str | None,
    rows: int | None,
    error: str | None,
    tenant: str | None,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND (after --) as step NAME of RUN, or record one (--status).

    The command gets CAS_RUN and CAS_STEP in its environment, so the cas commands it
    runs link what they store to this step. The step ends COMPLETED, or FAILED with the
    exit code; cas exits with the command's exit code.

    \b
    Examples:
      cas runs step "$run" load -- cas add data.csv
      cas runs step "$run" transform --status COMPLETED --rows 1200
    """
    from casstore.errors import UsageError

    log = app.store().runs(tenant)
    if status is not None:
        if command:
            raise UsageError("give either a command after -- or --status, not both")
        step = log.record_step(
            run,
            name,
            status=status,
            step_type=step_type or "task",
            rows_processed=rows,
            error=error,
        )
        if as_json:
            emit_json(step)
        else:
            click.echo(step.id)
        return
    if not command:
        raise UsageError("give the command to run after --, or --status for a step run elsewhere")
    if rows is not None or error is not None:
        raise UsageError("--rows and --error go with --status")
    from casstore.meta.runs import run_step_command

    result = run_step_command(
        log, run, name, command, step_type=step_type or "command", environ=dict(os.environ)
    )
    if as_json:
        emit_json(result)
    elif result.exit_code:
        click.echo(f"cas: step {name} FAILED: {result.step.error_message}", err=True)
    if result.exit_code:
        raise SystemExit(result.exit_code)


@runs.command("finish")
@click.argument("run")
@click.option(
    "--status",
    type=click.Choice(("COMPLETED", "FAILED")),
    default="COMPLETED",
    show_default=True,
    help="How the run ended.",
)
@click.option("--error", metavar="MSG", help="What went wrong (with --status FAILED).")
@tenant_option
@json_option
@pass_app
def runs_finish(
    app: AppContext, run: str, status: str, error: str | None, tenant: str | None, as_json: bool
) -> None:
    """End RUN as COMPLETED (default) or FAILED; a run finishes once."""
    row = app.store().runs(tenant).finish(run, status, error)
    if as_json:
        emit_json(row)
        return
    click.echo(f"{row.id}  {row.status}  {_duration(row.duration_ms)}")


@runs.command("export")
@click.argument("run_ids", nargs=-1, metavar="[RUN]...")
@click.option(
    "--openlineage", is_flag=True, help="OpenLineage RunEvents, one JSON document a line."
)
@since_option
@tenant_option
@json_option
@pass_app
def runs_export(
    app: AppContext,
    run_ids: tuple[str, ...],
    openlineage: bool,
    since: str | None,
    tenant: str | None,
    as_json: bool,
) -> None:
    """Export runs (all, those since --since, or the RUNs named) as OpenLineage events.

    Prints JSON lines (START and COMPLETE/FAIL per run, steps as child runs); --json
    prints one JSON array instead.
    """
    from casstore.errors import UsageError

    if not openlineage:
        raise UsageError("choose the export format: --openlineage")
    from casstore.meta.openlineage import openlineage_events

    events = openlineage_events(app.store().runs(tenant), run_ids, since=_since(since))
    if as_json:
        emit_json(events)
        return
    for event in events:
        click.echo(event.model_dump_json())


@cli.group()
def dq() -> None:
    """Data-quality results recorded by pipeline runs."""


@dq.command("list")
@click.option("--status", type=click.Choice(("PASS", "WARNING", "FAIL")), help="Only this outcome.")
@click.option("--table", "target_table", metavar="T", help="Only checks of this table.")
@since_option
@click.option("--run", metavar="RUN", help="Only checks of this run.")
@click.option("--limit", type=click.IntRange(0), metavar="N", help="At most N results.")
@tenant_option
@json_option
@pass_app
def dq_list(
    app: AppContext,
    status: str | None,
    target_table: str | None,
    since: str | None,
    run: str | None,
    limit: int | None,
    tenant: str | None,
    as_json: bool,
) -> None:
    """List DQ results, newest first: time, outcome, table, counts, run."""
    found = (
        app.store()
        .runs(tenant)
        .list_dq(run=run, status=status, table=target_table, since=_since(since), limit=limit)
    )
    if as_json:
        emit_json(found)
        return
    table(
        [
            short_time(q.executed_at.isoformat()),
            q.overall_status,
            q.target_table,
            f"{q.expectations_passed} passed, {q.expectations_failed} failed",
            q.pipeline_logging_id[:8],
            q.dq_config_id,
        ]
        for q in found
    )
