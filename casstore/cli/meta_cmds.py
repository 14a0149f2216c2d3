"""``cas meta put|latest|history|query|tail|import|compact|kinds``: the metadata repository.

Each command parses its options, makes one call on ``store.metadata(tenant)`` (or a
function of :mod:`casstore.meta`) and prints the result: a compact line per record (time,
kind, target, payload), or with ``--json`` the records as the log holds them.
"""

from __future__ import annotations

import json
import re
import sys
from typing import TYPE_CHECKING, Any

import click

from casstore.cli._app import AppContext, cli, json_option, pass_app
from casstore.cli._output import clean, emit_json, short_time, table
from casstore.errors import UsageError

if TYPE_CHECKING:
    from casstore.meta.models import MetadataRecord, MetadataTarget

_KIND = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_TARGET_KEYS = ("source_id", "schema", "table")


# ---- option types: bad values are usage errors (exit 2), reported as one line ----------


class _Kind(click.ParamType):
    name = "kind"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not _KIND.match(str(value)):
            self.fail(f"{value!r} is not a kind name (letters, digits, _ . : -)", param, ctx)
        return str(value)


class _Target(click.ParamType):
    """``source_id=x,schema=s,table=t`` (and ``extras.K=V``), a JSON object, or ``''``."""

    name = "target"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> MetadataTarget:
        from pydantic import ValidationError

        from casstore.meta.models import MetadataTarget

        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("{"):
            try:
                return MetadataTarget.model_validate_json(text)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "target"
                self.fail(f"{where}: {first['msg']}", param, ctx)
        fields: dict[str, Any] = {}
        extras: dict[str, Any] = {}
        for pair in filter(None, (p.strip() for p in text.split(","))):
            key, sep, val = pair.partition("=")
            key = key.strip()
            if not sep or not key:
                self.fail(f"expected KEY=VALUE, got {pair!r} (try source_id=my-source)", param, ctx)
            if key.startswith("extras.") and len(key) > len("extras."):
                extras[key.removeprefix("extras.")] = _json_or_text(val)
            elif key in _TARGET_KEYS:
                fields[key] = val
            else:
                self.fail(
                    f"unknown target field {key!r}: use source_id, schema, table or extras.K",
                    param,
                    ctx,
                )
        return MetadataTarget(**fields, extras=extras or None)


class _Payload(click.ParamType):
    """A JSON object, or ``@FILE`` holding one."""

    name = "payload"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        text = str(value)
        if text.startswith("@"):
            try:
                with open(text[1:], encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or exc
                self.fail(f"cannot read {text[1:]}: {reason}", param, ctx)
        try:
            doc = json.loads(text)
        except ValueError as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            self.fail(f"not JSON: {reason}", param, ctx)
        if not isinstance(doc, dict):
            self.fail("the payload must be a JSON object", param, ctx)
        return doc


class _When(click.ParamType):
    """A point in time: ``7d`` (ago) or an ISO-8601 date or time."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from casstore.when import parse_when

        if not isinstance(value, str):
            return value
        try:
            return parse_when(value)
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


class _Where(click.ParamType):
    """``payload.status=FAIL``: a path, an operator (= != < <= > >=) and a value."""

    name = "condition"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from casstore.meta.repository import Condition

        if not isinstance(value, str):
            return value
        try:
            return Condition.parse(value)
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


class _Pair(click.ParamType):
    """``K=V``: V is JSON if it parses, else text."""

    name = "pair"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        key, sep, rest = str(value).partition("=")
        if not sep or not key.strip():
            self.fail(f"expected K=V, got {value!r}", param, ctx)
        return key.strip(), _json_or_text(rest)


def _json_or_text(text: str) -> Any:
    """``3`` -> 3, ``true`` -> True, ``"x"`` -> "x", ``x`` -> "x"."""
    try:
        return json.loads(text)
    except ValueError:
        return text


KIND = _Kind()
TARGET = _Target()
TIME = _When()

tenant_option = click.option(
    "--tenant",
    metavar="T",
    help="The tenant whose records to read and write (default: the store's [meta] tenant).",
)
target_option = click.option(
    "--target",
    type=TARGET,
    metavar="K=V,...",
    help="What the record is about: source_id=ID,schema=S,table=T (or a JSON object);"
    " default: the store itself.",
)


# ---- rendering -------------------------------------------------------------------------


def target_text(target: MetadataTarget) -> str:
    """A target in ``--target`` syntax; ``-`` for the store itself."""
    doc = target.model_dump(mode="json", by_alias=True, exclude_none=True)
    extras = doc.pop("extras", None) or {}
    parts = [f"{k}={v}" for k, v in doc.items()]
    parts += [
        f"extras.{k}={v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))}"
        for k, v in extras.items()
    ]
    return ",".join(parts) or "-"


def record_line(record: MetadataRecord) -> str:
    """One record on one line: time, kind, target, payload JSON."""
    from casstore.records import iso_utc

    payload = json.dumps(record.payload, separators=(",", ":"), ensure_ascii=False)
    when = short_time(iso_utc(record.produced_at))
    return clean("  ".join((when, record.kind, target_text(record.target), payload)))


def _record_doc(record: MetadataRecord) -> dict[str, Any]:
    """A record as ``--json`` prints it: the shape of its line in the log."""
    return record.model_dump(mode="json", by_alias=True, exclude_none=True)


def _print_records(records: list[MetadataRecord], as_json: bool) -> None:
    if as_json:
        emit_json([_record_doc(r) for r in records])
    else:
        for record in records:
            click.echo(record_line(record))


# ---- the commands ----------------------------------------------------------------------


@cli.group()
def meta() -> None:
    """Operational metadata: facts about pipeline runs, kept in the store (docs/metadata.md).

    Each record has a kind (cas meta kinds), a target (source_id, schema, table), a payload
    and the time it was produced. cas fetch, verify and gc emit records of their own.
    """


@meta.command("put")
@click.option("--kind", type=KIND, metavar="K", help="The record's kind (see cas meta kinds).")
@target_option
@click.option(
    "--payload",
    type=_Payload(),
    metavar="JSON|@FILE",
    help="The payload: a JSON object, or @FILE holding one. Without it, stdin is read.",
)
@click.option(
    "--producer",
    "producer_id",
    default="cli",
    show_default=True,
    metavar="ID",
    help="Who produced the record.",
)
@click.option("--run-id", metavar="ID", help="The run the fact comes from (part of its identity).")
@click.option("--job-id", metavar="ID", help="The job the fact comes from.")
@click.option(
    "--produced-at",
    type=TIME,
    metavar="TIME",
    help="When the fact was produced (default: now): 2024-01-10T05:00:00Z, or 2h for 2h ago.",
)
@click.option(
    "--extra",
    "extras",
    type=_Pair(),
    multiple=True,
    metavar="K=V",
    help="An annotation kept in the record's extras (V is JSON if it parses, else text).",
)
@tenant_option
@json_option
@pass_app
def meta_put(
    app: AppContext,
    kind: str | None,
    target: MetadataTarget | None,
    payload: dict[str, Any] | None,
    producer_id: str,
    run_id: str | None,
    job_id: str | None,
    produced_at: Any,
    extras: tuple[tuple[str, Any], ...],
    tenant: str | None,
    as_json: bool,
) -> None:
    """Store a record, or many from JSON lines on stdin.

    With --payload, one record of --kind about --target is stored and printed.

    Without it, stdin is read as JSON lines: with --kind, each line is a payload of that
    kind about --target; without --kind, each line is a whole record
    ({"kind": ..., "target": ..., "payload": ...}) and the options fill in what it does
    not say. Every line is checked before any is stored; a bad one refuses them all
    (line N: reason). Storing the same (kind, target, run id, time) again merges.
    """
    from casstore.meta.backfill import put_stream

    if payload is not None and kind is None:
        raise click.UsageError("--payload needs --kind")
    defaults: dict[str, Any] = {"producer_id": producer_id}
    if target is not None:
        defaults["target"] = target.model_dump(by_alias=True, exclude_none=True)
    context = {k: v for k, v in (("run_id", run_id), ("job_id", job_id)) if v is not None}
    if context:
        defaults["context"] = context
    if extras:
        defaults["extras"] = dict(extras)
    if produced_at is not None:
        defaults["produced_at"] = produced_at
    store = app.store()
    repo = store.metadata(tenant)
    if payload is not None:
        stored = repo.store({**defaults, "kind": kind, "payload": payload})
        if as_json:
            emit_json(_record_doc(stored))
        else:
            click.echo(record_line(stored))
        return
    stdin = sys.stdin.buffer
    if stdin.isatty():
        raise click.UsageError("give --payload, or pipe JSON lines to stdin")
    result = put_stream(repo, stdin, store.tmp, defaults=defaults, kind=kind)
    if as_json:
        emit_json(result)
    else:
        click.echo(f"stored {result.stored} record(s): {result.new} new, {result.merged} merged")


@meta.command("latest")
@click.option("--kind", type=KIND, required=True, metavar="K", help="The kind of record.")
@target_option
@tenant_option
@json_option
@pass_app
def meta_latest(
    app: AppContext, kind: str, target: MetadataTarget | None, tenant: str | None, as_json: bool
) -> None:
    """Show the newest record of --kind about --target (exit 1 when there is none)."""
    from casstore.meta.models import MetadataTarget

    target = target or MetadataTarget()
    repo = app.store().metadata(tenant)
    record = repo.latest(target, kind)
    if record is None:
        raise click.ClickException(
            f"no {kind} record about {target_text(target)} (tenant {repo.tenant})"
        )
    if as_json:
        emit_json(_record_doc(record))
    else:
        click.echo(record_line(record))


@meta.command("history")
@click.option("--kind", type=KIND, required=True, metavar="K", help="The kind of record.")
@target_option
@click.option("--since", type=TIME, metavar="TIME", help="From this time on: 7d (ago) or a date.")
@click.option("--until", type=TIME, metavar="TIME", help="Before this time: 1d (ago) or a date.")
@tenant_option
@json_option
@pass_app
def meta_history(
    app: AppContext,
    kind: str,
    target: MetadataTarget | None,
    since: Any,
    until: Any,
    tenant: str | None,
    as_json: bool,
) -> None:
    """List every record of --kind about --target, oldest first."""
    from casstore.meta.models import MetadataTarget

    records = app.store().metadata(tenant).history(target or MetadataTarget(), kind, since, until)
    _print_records(records, as_json)


@meta.command("query")
@click.option("--kind", type=KIND, metavar="K", help="Only records of this kind.")
@click.option(
    "--where",
    "conditions",
    type=_Where(),
    multiple=True,
    metavar="PATH OP VALUE",
    help="A condition such as payload.status=FAIL or payload.bytes>=1000"
    " (= != < <= > >=; on payload.X, extras.X, target.X, context.X, producer_id).",
)
@click.option("--since", type=TIME, metavar="TIME", help="From this time on: 7d (ago) or a date.")
@click.option("--until", type=TIME, metavar="TIME", help="Before this time: 1d (ago) or a date.")
@target_option
@click.option(
    "--limit", type=click.IntRange(min=0), metavar="N", help="At most N records (the newest)."
)
@tenant_option
@json_option
@pass_app
def meta_query(
    app: AppContext,
    kind: str | None,
    conditions: tuple[Any, ...],
    since: Any,
    until: Any,
    target: MetadataTarget | None,
    limit: int | None,
    tenant: str | None,
    as_json: bool,
) -> None:
    """List the records matching every condition, newest first."""
    records = (
        app.store()
        .metadata(tenant)
        .query(kind=kind, where=conditions, since=since, until=until, target=target, limit=limit)
    )
    _print_records(records, as_json)


@meta.command("tail")
@click.option(
    "-n",
    "--lines",
    "n",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="How many of the last records to show.",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing records as they are stored.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.01),
    default=0.5,
    show_default=True,
    metavar="SECONDS",
    help="With -f, how often to look for new records.",
)
@tenant_option
@click.option("--json", "as_json", is_flag=True, help="Print the log's raw JSON lines.")
@pass_app
def meta_tail(
    app: AppContext, n: int, follow: bool, interval: float, tenant: str | None, as_json: bool
) -> None:
    """Show the last records of the metadata log; with -f, follow it (Ctrl-C stops).

    Following survives compaction (the log replaced by a rewritten one) and a deleted log.
    """
    from casstore.meta.tail import LogFollower

    repo = app.store().metadata(tenant)

    def show(line: str) -> None:
        click.echo(line if as_json else _line_text(line))

    with LogFollower(repo.log_path, repo.tenant) as follower:
        for line in follower.last(n):
            show(line)
        if not follow:
            return
        try:
            for line in follower.follow(interval):
                show(line)
        except KeyboardInterrupt:
            return  # Ctrl-C is how a follow ends: not an error


def _line_text(line: str) -> str:
    from pydantic import ValidationError

    from casstore.meta.models import MetadataRecord

    try:
        return record_line(MetadataRecord.model_validate_json(line))
    except ValidationError:
        return clean(line)  # not a record this version reads: shown as it is


@meta.command("import")
@click.argument("path", metavar="FILE.jsonl", type=click.Path(dir_okay=False))
@click.option(
    "--source-name",
    metavar="NAME",
    help="The extras.original_source of each record (default: the file's absolute path).",
)
@tenant_option
@json_option
@pass_app
def meta_import(
    app: AppContext, path: str, source_name: str | None, tenant: str | None, as_json: bool
) -> None:
    """Backfill records from a JSON-lines file (one whole record per line).

    The whole file is checked first: a bad line refuses the import (line N: reason) and
    nothing is stored. Records keep or get extras.original_source. Records with the same
    kind, target, run id and time merge, so importing a file again adds nothing.
    """
    from casstore.meta.backfill import import_file

    report = import_file(app.store().metadata(tenant), path, source_name=source_name)
    if as_json:
        emit_json(report)
    else:
        click.echo(
            f"imported {report.path}: read {report.read}, new {report.new}, merged {report.merged}"
        )


@meta.command("compact")
@click.option("--dry-run", is_flag=True, help="Count what would be dropped; change nothing.")
@click.option(
    "--tenant",
    metavar="T",
    help="Only this tenant's records (default: every tenant; retention is the store's).",
)
@json_option
@pass_app
def meta_compact(app: AppContext, dry_run: bool, tenant: str | None, as_json: bool) -> None:
    """Drop records older than their kind's retention ([meta.retention] in config.toml).

    Kinds without a retention are kept forever. The log is rewritten and the index
    replayed from it.
    """
    from casstore.meta.admin import compact

    store = app.store()
    report = compact(
        store.metadata(tenant), store.config.meta.retention, dry_run=dry_run, tenant=tenant
    )
    if as_json:
        emit_json(report)
        return
    if not report.retention:
        click.echo("no retention configured ([meta.retention] in config.toml): nothing to drop")
        return
    verb = "would drop" if dry_run else "dropped"
    for kind, window in report.retention.items():
        click.echo(f"{verb} {report.dropped.get(kind, 0)} {kind} line(s) older than {window}")
    click.echo(f"{verb} {report.total} line(s) of the log")


@meta.command("kinds")
@tenant_option
@json_option
@pass_app
def meta_kinds(app: AppContext, tenant: str | None, as_json: bool) -> None:
    """List the registered kinds (required fields, schema file) and the kinds in use."""
    from casstore.meta.admin import kinds_overview

    overview = kinds_overview(app.store().metadata(tenant))
    if as_json:
        emit_json(overview)
        return
    table([k.kind, ",".join(k.required) or "-", k.schema_file] for k in overview.registered)
    registered = {k.kind for k in overview.registered}
    strict = "strict: unregistered kinds refused" if overview.strict else "unregistered allowed"
    click.echo(f"\nin use (tenant {overview.tenant}; {strict}):")
    if not overview.in_use:
        click.echo("  none")
    table(
        [f"  {kind}", str(count), "" if kind in registered else "(not registered)"]
        for kind, count in overview.in_use.items()
    )
