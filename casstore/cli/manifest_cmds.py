"""``cas manifest export|import`` and ``cas export``: files in and out, with their ledger."""

from __future__ import annotations

import click

from casstore.cli._app import AppContext, cli, json_option, pass_app
from casstore.cli._output import echo, emit_json, sha256sum_line


@cli.group()
def manifest() -> None:
    """Export and import ETL manifests: {"metadata": ..., "records": {sha256: ...}}."""


@manifest.command("export")
@click.option("--domain", required=True, metavar="D", help="First half of the file name.")
@click.option(
    "--process",
    default="download",
    show_default=True,
    metavar="TYPE",
    help="Record type to list: download, import, derive, run or sample.",
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    default=".",
    metavar="DIR",
    help="Where to write the manifest (and files). Default: here.",
)
@click.option("--source", "source_id", metavar="ID", help="Only records of this source.")
@click.option("--dataset", metavar="NAME", help="Only records of this dataset.")
@click.option("--files", is_flag=True, help="Also write each object at its file_path.")
@json_option
@pass_app
def manifest_export(
    app: AppContext,
    domain: str,
    process: str,
    out_dir: str,
    source_id: str | None,
    dataset: str | None,
    files: bool,
    as_json: bool,
) -> None:
    """Write DIR/<domain>_<process>.manifest.json listing stored objects.

    Prints the manifest's path. Records are keyed by SHA-256; file_path is
    <source>/<name> relative to DIR.
    """
    result = app.store().export_manifest(
        domain=domain,
        process=process,
        out_dir=out_dir,
        source_id=source_id,
        dataset=dataset,
        files=files,
    )
    if as_json:
        emit_json(result)
        return
    for skip in result.skipped:
        click.echo(f"cas: skipped {skip.id}: {skip.reason}", err=True)
    if files:
        written = sum(1 for e in result.entries if e.file == "written")
        click.echo(
            f"cas: {written} files written, {len(result.entries) - written} unchanged", err=True
        )
    click.echo(result.path)


@manifest.command("import")
@click.argument("file", metavar="FILE")
@click.option(
    "--files-root",
    metavar="DIR",
    help="Look for relative file_paths under DIR (default: root_dir, then beside FILE).",
)
@json_option
@pass_app
def manifest_import(app: AppContext, file: str, files_root: str | None, as_json: bool) -> None:
    """Store the files manifest FILE lists, each with a record of its entry.

    The whole manifest is checked first; a refused record stores nothing. Prints a line
    per record (stored, exists or missing), the sources/ refs, then a summary.
    """
    result = app.store().import_manifest(file, files_root=files_root)
    if as_json:
        emit_json(result)
        return
    for e in result.entries:
        echo(f"{e.status:<8} {e.checksum}  {e.file_path}")
    for r in result.refs:
        if r.moved:
            click.echo(f"ref      {r.ref} -> {r.object[:12]}")
        else:
            where = r.current[:12] if r.current else "-"
            click.echo(f"ref      {r.ref} kept at {where}")
    moved = sum(1 for r in result.refs if r.moved)
    click.echo(
        f"{len(result.entries)} records: {result.stored} stored, {result.exists} exists,"
        f" {result.missing} missing; {moved} refs moved, {len(result.refs) - moved} kept"
    )


@cli.command("export")
@click.argument("objs", nargs=-1, metavar="[OBJ]...")
@click.option(
    "--sha256sum",
    "out_dir",
    required=True,
    metavar="DIR",
    help="Write the files and a SHA256SUMS into DIR.",
)
@json_option
@pass_app
def export_cmd(app: AppContext, objs: tuple[str, ...], out_dir: str, as_json: bool) -> None:
    """Copy objects out as named files, with a SHA256SUMS that sha256sum -c checks.

    No OBJ: every ref under sources/. A ref is named after its last segment plus the
    download's extension; an id after the downloaded or imported file. Prints one
    sha256sum line per file.
    """
    result = app.store().export(list(objs), out_dir, sha256sum=True)
    if as_json:
        emit_json(result)
        return
    for f in result.files:
        click.echo(sha256sum_line(f.id, f.name))
