"""``cas gc``, ``cas pin`` and ``cas unpin``."""

from __future__ import annotations

from typing import Any

import click

from casstore.cli._app import AppContext, cli, json_option, pass_app
from casstore.cli._output import emit_json, human_size


@cli.command()
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--explain", "explain_obj", metavar="OBJ", help="Say why OBJ is kept, and how.")
@click.option("--grace", metavar="DURATION", help="Keep anything written this recently.")
@click.option("--reflog-expire", metavar="DURATION", help="Drop reflog entries older than this.")
@click.option("--include-sources", is_flag=True, help="Also remove unreachable downloads/imports.")
@click.option(
    "--keep-samples",
    type=click.IntRange(0),
    metavar="N",
    help="Per source, keep the newest N sample refs.",
)
@click.option("--samples-older-than", metavar="DURATION", help="Drop sample refs older than this.")
@click.option(
    "--keep-last",
    type=click.IntRange(1),
    metavar="N",
    help="Keep the last N versions of each source.",
)
@click.option(
    "--keep-daily",
    type=click.IntRange(1),
    metavar="N",
    help="Keep one version per day for the last N days with versions.",
)
@click.option(
    "--keep-weekly",
    type=click.IntRange(1),
    metavar="N",
    help="Keep one version per week for the last N weeks with versions.",
)
@click.option(
    "--prune-content",
    metavar="OLDER_THAN",
    help="Drop bytes of downloaded ancestors older than this; keep their records.",
)
@json_option
@pass_app
def gc(
    app: AppContext, dry_run: bool, explain_obj: str | None, as_json: bool, **flags: Any
) -> None:
    """Remove what no ref reaches, and samples and history beyond the retention policy.

    Downloaded and imported bytes are kept unless --include-sources. Lineage stays whole:
    everything a kept object was made from is kept too.
    """
    from casstore.gc import GcPolicy, explain
    from casstore.gc import gc as run_gc
    from casstore.when import parse_duration

    store = app.store()
    conf = store.config.gc

    def dur(flag: str | None, configured: str | None) -> float | None:
        value = flag if flag is not None else configured
        return parse_duration(value) if value is not None else None

    policy = GcPolicy(
        grace=dur(flags["grace"], conf.grace) or 0.0,
        reflog_expire=dur(flags["reflog_expire"], conf.reflog_expire) or 0.0,
        include_sources=flags["include_sources"],
        keep_samples=flags["keep_samples"]
        if flags["keep_samples"] is not None
        else conf.keep_samples,
        samples_older_than=dur(flags["samples_older_than"], conf.samples_older_than),
        keep_last=flags["keep_last"] or conf.keep_last,
        keep_daily=flags["keep_daily"] or conf.keep_daily,
        keep_weekly=flags["keep_weekly"] or conf.keep_weekly,
        prune_content=dur(flags["prune_content"], None),
    )
    if explain_obj is not None:
        why = explain(store, explain_obj, policy)
        if as_json:
            emit_json(why)
        elif why.kept:
            click.echo(f"kept: {why.reason}")
            for oid in why.path:
                click.echo(f"  {oid}")
        else:
            click.echo(f"would be removed: {why.reason}")
        return
    report = run_gc(store, policy, dry_run=dry_run)
    if as_json:
        emit_json(report)
        return
    verb = "would remove" if dry_run else "removed"
    for name in report.removed_refs:
        click.echo(f"{verb} ref {name} (retention)")
    for item in report.objects:
        what = "empty" if item.action == "prune-content" else "remove"
        click.echo(
            f"{'would ' if dry_run else ''}{what} {item.object}  {human_size(item.bytes)}"
            f"  {item.reason}"
        )
    for path in report.stray_tmp:
        click.echo(f"{verb} {path}")
    click.echo(
        f"{verb} {len(report.objects)} object(s), {human_size(report.bytes)};"
        f" {report.expired_reflog_entries} reflog entries"
        f" {'would expire' if dry_run else 'expired'}; kept {report.kept}"
        f" ({report.protected_sources} unreferenced downloads/imports protected)"
    )


def _pin(app: AppContext, obj: str, on: bool, as_json: bool) -> None:
    from casstore.gc import PinState, pin

    state = PinState(object=pin(app.store(), obj, on=on), pinned=on)
    if as_json:
        emit_json(state)
    else:
        click.echo(f"{'pinned' if on else 'unpinned'} {state.object}")


@cli.command()
@click.argument("obj")
@json_option
@pass_app
def pin(app: AppContext, obj: str, as_json: bool) -> None:
    """Keep OBJ (and everything it was made from) through every gc."""
    _pin(app, obj, True, as_json)


@cli.command()
@click.argument("obj")
@json_option
@pass_app
def unpin(app: AppContext, obj: str, as_json: bool) -> None:
    """Undo 'cas pin OBJ'."""
    _pin(app, obj, False, as_json)
