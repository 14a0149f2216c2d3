"""``cas init``, ``add``, ``cat``, ``show``, ``ls``: parse, one library call, render."""

from __future__ import annotations

import os
import stat
import sys

import click

from casstore.cli._app import AppContext, cli, json_option, pass_app
from casstore.cli._output import (
    byte_progress,
    echo,
    emit_json,
    human_size,
    sha256sum_line,
    short_time,
    table,
)

# Record fields that `cas show` prints, in this order, when a record has them.
_SHOWN_FIELDS = (
    "source_id",
    "dataset",
    "path",
    "transform",
    "url",
    "final_url",
    "http_status",
    "etag",
    "weak_etag",
    "last_modified",
    "content_type",
    "content_encoding",
    "format",
    "content_sha256",
    "uncompressed_size",
    "line_count",
    "record_count",
    "retries",
    "resumes",
    "regime",
    "n_requested",
    "n_taken",
    "seed",
    "stride",
    "offset",
    "input_format",
    "output_format",
    "sampler_version",
    "recipe",
    "command",
    "output",
    "exit_code",
    "duration_ms",
    "cwd",
    "git_commit",
    "action",
)


def _parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--param")
        if key in params:
            raise click.BadParameter(f"{key!r} is given twice", param_hint="--param")
        params[key] = value
    return params


@cli.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option(
    "--compression",
    type=click.Choice(["auto", "zstd", "none"]),
    default="auto",
    show_default=True,
    help="How objects are kept at rest.",
)
@json_option
@pass_app
def init(app: AppContext, directory: str | None, compression: str, as_json: bool) -> None:
    """Make a store in DIRECTORY/.casstore (default: --store, else here)."""
    from casstore.store import Store

    with Store.init(directory or app.store_flag or ".", compression=compression) as store:
        info = store.describe()
    if as_json:
        emit_json(info)
    else:
        click.echo(f"Initialized empty casstore store in {info.root}")


@cli.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--source", "source_id", metavar="ID", help="Source id to record.")
@click.option("--dataset", metavar="NAME", help="Dataset name to record.")
@click.option(
    "--parent", "parents", multiple=True, metavar="OBJ", help="An input this was derived from."
)
@click.option(
    "--transform", metavar="NAME", help="The transformation that made it (with --parent)."
)
@click.option(
    "--param", "params", multiple=True, metavar="KEY=VALUE", help="A transform parameter."
)
@click.option("--ref", metavar="NAME", help="Point this ref at the stored object (one file only).")
@json_option
@pass_app
def add(
    app: AppContext,
    files: tuple[str, ...],
    source_id: str | None,
    dataset: str | None,
    parents: tuple[str, ...],
    transform: str | None,
    params: tuple[str, ...],
    ref: str | None,
    as_json: bool,
) -> None:
    """Store FILES (- for stdin; a directory adds every file below it).

    Prints one line per file, '<sha256>  <path>', exactly as sha256sum does.
    With --parent the record is a derivation of those objects.
    """
    from casstore.store import expand_inputs

    store = app.store()
    param_map = _parse_params(params)
    # Every input is found, and checked readable, before anything is stored.
    inputs = list(expand_inputs(files, store.root))
    sources = [sys.stdin.buffer if p == "-" else p for p in inputs]
    # The bar's total; without a terminal there is no bar, so no stat per input.
    total = sum(_regular_size(p) for p in inputs if p != "-") if sys.stderr.isatty() else 0
    results = []
    # No refresh thread: add_many may fork worker processes (casstore.parallel).
    with byte_progress(total, "adding", threadless=True) as progress:
        for result in store.add_many(
            sources,
            source_id=source_id,
            dataset=dataset,
            parents=parents,
            transform=transform,
            params=param_map,
            ref=ref,
            progress=progress,
        ):
            if as_json:
                results.append(result)
            else:
                # Raw bytes, as sha256sum prints them, also for names that are not UTF-8.
                line = sha256sum_line(result.id, result.path) + "\n"
                sys.stdout.buffer.write(line.encode("utf-8", "surrogateescape"))
                sys.stdout.buffer.flush()
    if as_json:
        emit_json(results)


def _regular_size(path: str) -> int:
    """A regular file's size (one ``stat``), else 0: the progress bar's total."""
    try:
        st = os.stat(path)
    except OSError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


@cli.command()
@click.argument("objs", nargs=-1, required=True, metavar="OBJ...")
@pass_app
def cat(app: AppContext, objs: tuple[str, ...]) -> None:
    """Write the original bytes of OBJ to stdout."""
    store = app.store()
    ids = [store.resolve(o) for o in objs]  # every name checked before any output
    out = sys.stdout.buffer
    try:
        for oid in ids:
            store.cat(oid, out)
        out.flush()
    except BrokenPipeError:
        # The reader went away (cas cat … | head): exit as a killed-by-SIGPIPE cat would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)


@cli.command()
@click.argument("obj")
@json_option
@pass_app
def show(app: AppContext, obj: str, as_json: bool) -> None:
    """Show an object: size, storage, refs and every record."""
    info = app.store().show(obj)
    if as_json:
        emit_json(info)
        return
    saved = ""
    if info.compression != "none" and info.size:
        saved = f", {100 - 100 * info.stored_size / info.size:.0f}% saved"
    echo(f"object       {info.id}")
    echo(f"size         {_bytes(info.size)} ({human_size(info.size)})")
    echo(f"stored       {_bytes(info.stored_size)}, compression {info.compression}{saved}")
    echo(f"refs         {', '.join(info.refs) if info.refs else '-'}")
    echo(f"records      {len(info.records)}")
    for entry in info.records:
        r = entry.record
        producer = r.get("producer", {})
        echo(
            f"  {entry.id[:12]}  {r['type']:<8} {short_time(r.get('created'))}"
            f"  {r.get('user', '')}@{r.get('host', '')}"
            f"  {producer.get('name', '?')} {producer.get('version', '')}"
        )
        for key in _SHOWN_FIELDS:
            value = r.get(key)
            if value is not None and value != "":
                shown = " ".join(value) if isinstance(value, list) else value
                echo(f"      {key + ':':<19}{shown}")
        checks = r.get("integrity", [])
        if checks:
            passed = [c["tier"] for c in checks if c["outcome"] == "passed"]
            echo(f"      {'verified:':<19}{', '.join(passed) or '-'}")
        for parent in r.get("parents", []):
            echo(f"      {'parent:':<19}{parent}")
        for key, value in sorted(r.get("params", {}).items()):
            echo(f"      {'param:':<19}{key}={value}")
        echo(f"      {'blake3:':<19}{r['blake3']}")


def _bytes(n: int) -> str:
    return "1 byte" if n == 1 else f"{n} bytes"


@cli.command("ls")
@click.option("--full", is_flag=True, help="Print full 64-digit ids.")
@json_option
@pass_app
def ls_(app: AppContext, full: bool, as_json: bool) -> None:
    """List objects: id, size, type, time and refs, oldest first."""
    objects = app.store().list_objects()
    if as_json:
        emit_json(objects)
        return
    table(
        [
            o.id if full else o.id[:12],
            human_size(o.size),
            o.type or "-",
            short_time(o.created),
            ", ".join(o.refs),
        ]
        for o in objects
    )
