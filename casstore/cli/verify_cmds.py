"""``cas verify``: re-hash objects, check records, refs and the index; exit 1 on problems."""

from __future__ import annotations

import sys

import click

from casstore.cli._app import AppContext, cli, json_option, pass_app
from casstore.cli._output import byte_progress, emit_json, human_size
from casstore.cli.fetch_cmds import parse_size


@cli.command()
@click.argument("objs", nargs=-1, metavar="[OBJ|FILE]...")
@click.option("--against", metavar="OBJ", help="Check FILE (outside the store) against OBJ.")
@click.option("--subset", metavar="N/M", help="Only the N-th of M slices of the objects.")
@click.option("--max-bytes", metavar="SIZE", help="Least recently verified first, up to SIZE.")
@click.option("--fast", is_flag=True, help="Check size and BLAKE3 instead of SHA-256.")
@click.option("--quarantine", is_flag=True, help="Move corrupt objects to quarantine/.")
@click.option(
    "--refetch",
    is_flag=True,
    help="Restore missing or quarantined downloads whose URL serves the same bytes.",
)
@click.option(
    "--repair-index", is_flag=True, help="Rebuild an index that disagrees with the files."
)
@json_option
@pass_app
def verify(
    app: AppContext,
    objs: tuple[str, ...],
    against: str | None,
    subset: str | None,
    max_bytes: str | None,
    fast: bool,
    quarantine: bool,
    refetch: bool,
    repair_index: bool,
    as_json: bool,
) -> None:
    """Prove integrity: every object re-hashed, every record, ref and the index checked.

    Exit 0 when clean, 1 when problems were found (one line each: kind and id).
    """
    from casstore.verify import parse_subset, verify_file
    from casstore.verify import refetch as refetch_one
    from casstore.verify import verify as run_verify

    store = app.store()
    if against is not None:
        if len(objs) != 1:
            raise click.UsageError("--against checks exactly one FILE")
        report = verify_file(store, objs[0], against)
    else:
        ids = [store.resolve(o) for o in objs] if objs else None
        total = sum(p.stat().st_size for p in store.objects.dir.glob("??/*") if p.is_file())
        with byte_progress(total, "verifying") as progress:
            report = run_verify(
                store,
                ids=ids,
                subset=parse_subset(subset) if subset else None,
                max_bytes=parse_size(max_bytes) if max_bytes else None,
                fast=fast,
                quarantine=quarantine,
                repair_index=repair_index,
                progress=progress,
            )
        if refetch:
            candidates = {p.id for p in report.problems if p.kind == "corrupt-object"}
            candidates |= set(report.quarantined)
            # Only objects whose bytes are gone (quarantined, pruned, deleted): corrupt bytes
            # still in place are moved aside with --quarantine first.
            missing = [oid for oid in sorted(candidates) if not store.objects.exists(oid)]
            restored = [oid for oid in missing if refetch_one(store, oid)]
            for oid in restored:
                click.echo(f"refetched {oid}", err=True)
    if as_json:
        emit_json(report)
    else:
        for p in report.problems:
            click.echo(f"{p.kind:<15} {p.id}  {p.detail}")
        for oid in report.quarantined:
            click.echo(f"quarantined     {oid}")
        state = "clean" if not report.problems else f"{len(report.problems)} problem(s)"
        click.echo(
            f"verified {report.objects} objects, {report.records} records,"
            f" {human_size(report.bytes)} in {report.seconds:.2f} s"
            f" ({report.mb_per_s:.0f} MB/s, {report.method}): {state}"
            + (", index rebuilt" if report.index_rebuilt else "")
        )
    if report.problems:
        sys.exit(1)
