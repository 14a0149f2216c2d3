"""``cas fetch``, ``cas probe`` and ``cas source add|list|show|rm``."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from casstore.cli._app import AppContext, cli, json_option, pass_app, skip_unused_imports
from casstore.cli._output import (
    count_progress,
    echo,
    emit_json,
    human_size,
    table,
    transfer_progress,
)

if TYPE_CHECKING:
    from casstore.fetch import HttpOptions

# cas fetch --check exit codes (0: unchanged; 1 and 2 keep their usual meaning)
EXIT_CHANGED = 3
EXIT_UNKNOWN = 4

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``500M``, ``2G``, ``1.5GiB``, ``1000`` -> bytes (K/M/G/T are powers of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise click.BadParameter(f"not a size: {text!r} (try 500M or 2G)")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


def _parse_headers(values: tuple[str, ...]) -> dict[str, str]:
    headers = {}
    for value in values:
        name, sep, rest = value.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(
                f"expected 'Name: value', got {value!r}", param_hint="--header"
            )
        headers[name.strip()] = rest.strip()
    return headers


def _http_options(
    headers: tuple[str, ...], retries: int, timeout: float, http2: bool
) -> HttpOptions:
    from casstore.fetch import HttpOptions

    netrc = os.environ.get("NETRC") or str(Path.home() / ".netrc")
    return HttpOptions(
        timeout=timeout,
        retries=retries,
        http2=http2,
        netrc=netrc,
        headers=_parse_headers(headers),
    )


def _print_result(result: Any) -> None:
    if hasattr(result, "error"):
        shown = (
            result.error
            if result.error.startswith(result.target)
            else (f"{result.target}: {result.error}")
        )
        click.echo(f"cas: error: {shown}", err=True)
        return
    where = f"sources/{result.source_id}"
    if result.status == "unchanged":
        click.echo(f"unchanged {result.object}  {where}")
    elif result.status == "content-unchanged":
        click.echo(
            f"content-unchanged {result.object}  {where}  (bytes changed, content identical)"
        )
    else:
        rate = result.size / result.seconds / 1e6 if result.seconds else 0.0
        click.echo(
            f"downloaded {result.object}  {where}  ({human_size(result.size)},"
            f" {result.seconds:.1f} s, {rate:.0f} MB/s)"
        )


@cli.command()
@click.argument("targets", nargs=-1, metavar="[URL|SOURCE]...")
@click.option("--source", "source_id", metavar="ID", help="Source id (default: from the URL).")
@click.option("--dataset", metavar="NAME", help="Dataset name to record.")
@click.option("--sha256", "expected", metavar="HEX", help="The SHA-256 the bytes must have.")
@click.option("--header", "headers", multiple=True, metavar="'K: V'", help="Extra request header.")
@click.option("--all", "all_sources", is_flag=True, help="Fetch every registered source.")
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Fetches at once with --all / -i / several targets.",
)
@click.option("-i", "--input-file", type=click.File("r"), help="Read URLs, one per line.")
@click.option(
    "--check",
    is_flag=True,
    help="Only ask whether it changed (exit 0 unchanged, "
    f"{EXIT_CHANGED} changed, {EXIT_UNKNOWN} unknown).",
)
@click.option(
    "--restore",
    "restore",
    is_flag=True,
    help="OBJ arguments: bring back pruned or quarantined downloads whose URL still serves"
    " the same SHA-256.",
)
@click.option("--max-size", metavar="SIZE", help="Refuse bodies bigger than this (e.g. 20G).")
@click.option(
    "--retries",
    type=click.IntRange(0, 100),
    default=5,
    show_default=True,
    help="Retries of timeouts, dropped connections, 5xx, 408 and 429.",
)
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds without a byte before a retry.",
)
@click.option("--http2", is_flag=True, help="Allow HTTP/2 (slower for one big file here).")
@json_option
@pass_app
def fetch(
    app: AppContext,
    targets: tuple[str, ...],
    source_id: str | None,
    dataset: str | None,
    expected: str | None,
    headers: tuple[str, ...],
    all_sources: bool,
    jobs: int,
    input_file: Any,
    check: bool,
    restore: bool,
    max_size: str | None,
    retries: int,
    timeout: float,
    http2: bool,
    as_json: bool,
) -> None:
    """Download URL or SOURCE once, verified; never again when nothing changed.

    Prints 'downloaded <id>', 'unchanged <id>' (a 304, or the same bytes) or
    'content-unchanged <id>' (new bytes, same decompressed content).
    """
    store = app.store()
    if restore:
        _restore(store, targets, as_json)
        return
    names = list(targets)
    if input_file is not None:
        names += [ln.strip() for ln in input_file if ln.strip() and not ln.lstrip().startswith("#")]
    if all_sources:
        names += sorted(store.sources.load())
    if not names:
        raise click.UsageError("give a URL or source id, --all, or -i FILE")
    skip_unused_imports(async_http=len(names) > 1)
    opts = _http_options(headers, retries, timeout, http2)
    kwargs: dict[str, Any] = {"opts": opts, "env": dict(os.environ)}
    if check:
        if len(names) != 1:
            raise click.UsageError("--check takes exactly one URL or source")
        from casstore.fetch import check as check_one

        result = check_one(store, names[0], **kwargs)
        if as_json:
            emit_json(result)
        else:
            click.echo(f"{result.status} {result.source_id}  ({result.detail})")
        code = {"unchanged": 0, "changed": EXIT_CHANGED, "unknown": EXIT_UNKNOWN}[result.status]
        sys.exit(code)
    kwargs.update(
        dataset=dataset,
        expected_sha256=expected,
        max_size=parse_size(max_size) if max_size else None,
    )
    if len(names) == 1:
        with transfer_progress(f"fetching {names[0].rsplit('/', 1)[-1]}") as (advance, total):
            result = store.fetch(
                names[0], source_id=source_id, progress=advance, on_total=total, **kwargs
            )
        emit_json(result) if as_json else _print_result(result)
        return
    if source_id is not None or expected is not None:
        raise click.UsageError("--source and --sha256 apply to a single fetch")
    from casstore.fetch import fetch_many

    label = f"fetching {len(names)} sources, {jobs} at once"
    with count_progress(len(names), label) as advance:
        on_done = (lambda _result: advance()) if advance is not None else None
        results = fetch_many(store.root, names, jobs=jobs, on_done=on_done, **kwargs)
    if as_json:
        emit_json(results)
    else:
        for result in results:
            _print_result(result)
    if any(hasattr(r, "error") for r in results):
        sys.exit(1)


def _restore(store: Any, targets: tuple[str, ...], as_json: bool) -> None:
    from casstore.verify import refetch

    if not targets:
        raise click.UsageError("--restore takes the ids of the objects to bring back")
    results = {}
    for spec in targets:
        oid = store.resolve(spec)
        results[oid] = refetch(store, oid)
    if as_json:
        emit_json(results)
    else:
        for oid, ok in results.items():
            click.echo(f"{'present' if ok else 'not restored'} {oid}")
    if not all(results.values()):
        sys.exit(1)


@cli.command()
@click.argument("url")
@click.option("--header", "headers", multiple=True, metavar="'K: V'", help="Extra request header.")
@click.option(
    "--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for the server."
)
@json_option
def probe(url: str, headers: tuple[str, ...], timeout: float, as_json: bool) -> None:
    """Show what the server says about URL, without downloading it."""
    skip_unused_imports(async_http=False)
    from casstore.fetch import probe as probe_url

    result = probe_url(url, opts=_http_options(headers, 0, timeout, False))
    if as_json:
        emit_json(result)
        return
    rows = [
        ["url", result.url],
        ["final url", result.final_url],
        ["status", f"{result.http_status} ({result.http_version}, {result.method})"],
        ["size", f"{result.size} ({human_size(result.size)})" if result.size is not None else "-"],
        ["etag", result.etag or (f"{result.weak_etag} (weak)" if result.weak_etag else "-")],
        ["last-modified", result.last_modified or "-"],
        ["content-type", result.content_type or "-"],
        ["content-encoding", result.content_encoding or "-"],
        ["range", {True: "yes", False: "no (ignored)", None: "unknown"}[result.accept_ranges]],
        [
            "format",
            result.format + (f" ({result.content_format} inside)" if result.content_format else "")
            if result.format
            else "-",
        ],
    ]
    table(rows)


@cli.group()
def source() -> None:
    """Registered sources: a URL with an id and a dataset name (no credentials)."""


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, var = value.partition("=")
        if not sep or not key or not var:
            raise click.BadParameter(f"expected NAME=ENVVAR, got {value!r}", param_hint=option)
        out[key] = var
    return out


@source.command("add")
@click.argument("source_id", metavar="ID")
@click.argument("url")
@click.option("--dataset", metavar="NAME", help="Dataset name recorded with each download.")
@click.option(
    "--header-env",
    multiple=True,
    metavar="HEADER=ENVVAR",
    help="Send this header with the value of an environment variable.",
)
@click.option(
    "--param-env",
    multiple=True,
    metavar="PARAM=ENVVAR",
    help="Add this query parameter from an environment variable.",
)
@click.option("--replace", is_flag=True, help="Replace an existing source with this id.")
@json_option
@pass_app
def source_add(
    app: AppContext,
    source_id: str,
    url: str,
    dataset: str | None,
    header_env: tuple[str, ...],
    param_env: tuple[str, ...],
    replace: bool,
    as_json: bool,
) -> None:
    """Register source ID at URL."""
    from casstore.fetch import Source

    src = Source(
        id=source_id,
        url=url,
        dataset=dataset,
        headers_env=_pairs(header_env, "--header-env"),
        params_env=_pairs(param_env, "--param-env"),
    )
    added = app.store().sources.add(src, replace=replace)
    if as_json:
        emit_json(added)
    else:
        click.echo(f"source {added.id}: {added.url}")


@source.command("list")
@json_option
@pass_app
def source_list(app: AppContext, as_json: bool) -> None:
    """List registered sources with the object their ref points to."""
    store = app.store()
    sources = list(store.sources.load().values())
    if as_json:
        emit_json(sources)
        return
    refs = store.refs.items("sources/")
    table(
        [s.id, (refs.get(f"sources/{s.id}") or "-")[:12], s.dataset or "-", s.url] for s in sources
    )


@source.command("show")
@click.argument("source_id", metavar="ID")
@json_option
@pass_app
def source_show(app: AppContext, source_id: str, as_json: bool) -> None:
    """Show a source, its current object and its last download."""
    info = app.store().source_info(source_id)
    if as_json:
        emit_json(info)
        return
    echo(f"source       {info.source.id}")
    echo(f"url          {info.source.url}")
    echo(f"dataset      {info.source.dataset or '-'}")
    for header, var in info.source.headers_env.items():
        echo(f"header       {header} from ${var}")
    for param, var in info.source.params_env.items():
        echo(f"param        {param} from ${var}")
    echo(f"object       {info.object or '-'}")
    last = info.last_download
    if last:
        echo(f"fetched      {last.get('finished', '-')}")
        echo(f"etag         {last.get('etag') or last.get('weak_etag') or '-'}")
        echo(f"modified     {last.get('last_modified') or '-'}")
        echo(f"format       {last.get('format') or '-'}")
    echo(f"versions     {info.versions}")


@source.command("rm")
@click.argument("source_id", metavar="ID")
@json_option
@pass_app
def source_rm(app: AppContext, source_id: str, as_json: bool) -> None:
    """Unregister source ID (its ref, history and objects stay)."""
    gone = app.store().sources.remove(source_id)
    if as_json:
        emit_json(gone)
    else:
        click.echo(f"removed source {gone.id}")
