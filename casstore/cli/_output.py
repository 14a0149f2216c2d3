"""Rendering for the CLI: JSON documents, sizes, sha256sum lines, progress bars.

Commands hand pydantic models here; the model is the JSON wire shape. Diagnostics go to
stderr, results to stdout. Heavy imports (rich) happen only when a bar is shown.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import click


def emit_json(doc: Any) -> None:
    """Print one JSON document: a model, a list of models, or plain data."""
    click.echo(json.dumps(_plain(doc), indent=2, ensure_ascii=False))


def _plain(doc: Any) -> Any:
    if hasattr(doc, "model_dump"):
        return doc.model_dump(mode="json")
    if isinstance(doc, dict):
        return {k: _plain(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [_plain(v) for v in doc]
    return doc


# Control characters (C0, DEL, C1) as visible escapes: a record's path, dataset or
# parameter may hold a newline, a carriage return or a terminal escape sequence.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_CONTROL.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"})


def clean(text: str) -> str:
    """``text`` safe to print as one line on a terminal: control characters become
    visible escapes (``\\n``, ``\\x1b``), so stored text can neither split a line nor
    move the cursor. For people; ``--json`` output keeps the exact text."""
    return text.translate(_CONTROL)


def echo(line: str) -> None:
    """Print a line of text output built from stored values, with :func:`clean`."""
    click.echo(clean(line))


def human_size(n: int) -> str:
    """``1536`` -> ``1.5 KiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def sha256sum_line(digest: str, path: str) -> str:
    """A line exactly as ``sha256sum`` prints it, escaping ``\\`` and newlines like it does."""
    if "\\" in path or "\n" in path or "\r" in path:
        escaped = path.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        return f"\\{digest}  {escaped}"
    return f"{digest}  {path}"


def short_time(iso: str | None) -> str:
    """``2026-11-22T16:05:01.123456Z`` -> ``2026-11-22 16:05:01``."""
    if not iso:
        return "-"
    return iso[:19].replace("T", " ")


def table(rows: Iterable[list[str]]) -> None:
    """Print rows as left-aligned columns separated by two spaces."""
    rows = [[clean(c) for c in r] for r in rows]
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths[:-1], strict=True)] + [r[-1]]
        click.echo("  ".join(cells).rstrip())


@contextlib.contextmanager
def byte_progress(
    total: int, label: str, *, min_total: int = 32 << 20, threadless: bool = False
) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on stderr for long byte work, when stderr is a terminal.

    Yields a callback taking a byte count, or None when no bar is shown (no terminal, or
    too little work to be worth one). ``threadless`` redraws from the callback instead of
    from rich's refresh thread, for work that forks worker processes (a fork is only safe
    from a process with one thread).
    """
    if total < min_total or not sys.stderr.isatty():
        yield None
        return
    with _bar(auto_refresh=not threadless) as bar:
        task = bar.add_task(label, total=total)
        if not threadless:
            yield lambda n: bar.advance(task, n)
            return
        last = 0.0

        def advance(n: int) -> None:
            nonlocal last
            bar.advance(task, n)
            now = time.monotonic()
            if now - last >= 0.1:
                last = now
                bar.refresh()

        yield advance


@contextlib.contextmanager
def transfer_progress(
    label: str,
) -> Iterator[tuple[Callable[[int], None] | None, Callable[[int | None], None] | None]]:
    """A download bar on a terminal: yields ``(advance, set_total)`` callbacks, or Nones.

    The total is only known once the server answers, hence the second callback.
    """
    if not sys.stderr.isatty():
        yield None, None
        return
    with _bar() as bar:
        task = bar.add_task(label, total=None)

        def set_total(total: int | None) -> None:
            bar.reset(task, total=total)

        yield (lambda n: bar.advance(task, n)), set_total


@contextlib.contextmanager
def count_progress(total: int, label: str) -> Iterator[Callable[[], None] | None]:
    """A bar counting finished items (``12/50``) on a terminal: yields a callback to call
    once per item, or None without a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True, console=_stderr_console()) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task, 1)


def _bar(*, auto_refresh: bool = True) -> Any:
    """A transient rich bar on stderr: bytes, rate and ETA (rich is imported only here)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    return Progress(*columns, transient=True, console=_stderr_console(), auto_refresh=auto_refresh)


def reflog_table(entries: Iterable[Any]) -> None:
    """Print reflog entries: time, action, old -> new, who, and the URL or message."""
    table(
        [
            short_time(e.time.strftime("%Y-%m-%dT%H:%M:%S")),
            e.action,
            f"{e.old[:12] if e.old else '-'} -> {e.new[:12] if e.new else '-'}",
            f"{e.user}@{e.host}",
            "  ".join(x for x in (e.message, str(e.details.get("url", ""))) if x),
        ]
        for e in entries
    )


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)
