"""Loading metadata records from JSON lines: ``cas meta import`` and ``cas meta put`` on stdin.

A backfill goes through the same path as a live emit (``bulk_store``: the same validation,
the same log, the same index), in two passes over the file so that memory stays flat and a
bad line refuses everything:

1. every line is parsed and validated exactly as ``store`` would (:meth:`validate`); the
   first bad one raises ``line N: reason`` and nothing has been stored;
2. the same lines (no more: a file still growing does not slip unvalidated lines in) are
   stored through ``bulk_store``.

Each imported record gets ``extras.original_source`` (the file's absolute path, or a name
given for it) unless it has one already, so its provenance survives. Records that name the
same identity (tenant, kind, target, run_id, produced_at) merge instead of doubling, in the
file and with what is stored, so re-running an import is safe: the report says how many
lines were read and how many identities were new or merged into existing ones.

Blank lines are skipped; line numbers count every line, as an editor does.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel

from casstore.errors import InputError, MetadataError, PayloadError
from casstore.meta.repository import BulkResult, EmbeddedRepository

IMPORT_PRODUCER = "cas.import"  # producer_id of imported records that name none

# Turns one parsed line (a JSON object) into a record document.
MakeRecord = Callable[[dict[str, Any]], dict[str, Any]]


class ImportReport(BaseModel):
    """What ``cas meta import`` did: lines read, identities new and merged."""

    path: str
    original_source: str
    read: int
    new: int
    merged: int


def _docs(f: BinaryIO, make: MakeRecord) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record document)`` for every non-blank line of ``f``."""
    for n, raw in enumerate(f, start=1):
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise MetadataError(f"line {n}: not JSON: {reason}") from None
        if not isinstance(doc, dict):
            raise MetadataError(f"line {n}: not a JSON object")
        yield n, make(doc)


def load_lines(repo: EmbeddedRepository, f: BinaryIO, make: MakeRecord) -> BulkResult:
    """Validate every line of the seekable ``f``, then store them all; see the module doc.

    Raises:
        MetadataError: a line is not a JSON object (``line N: ...``); nothing stored.
        PayloadError: a line is not a valid record (``line N: ...``); nothing stored.
    """
    count = 0
    for n, doc in _docs(f, make):
        try:
            repo.validate(doc)
        except PayloadError as exc:
            raise PayloadError(f"line {n}: {exc}", kind=exc.kind) from None
        count += 1
    f.seek(0)
    return repo.bulk_store(itertools.islice((doc for _, doc in _docs(f, make)), count))


def _with_source(source: str) -> MakeRecord:
    def make(doc: dict[str, Any]) -> dict[str, Any]:
        extras = doc.get("extras")
        if extras is None:
            extras = {}
        if isinstance(extras, dict) and "original_source" not in extras:
            doc["extras"] = {**extras, "original_source": source}
        doc.setdefault("producer_id", IMPORT_PRODUCER)
        return doc

    return make


def import_file(
    repo: EmbeddedRepository, path: str | os.PathLike[str], *, source_name: str | None = None
) -> ImportReport:
    """Backfill the records of a JSON-lines file (one whole record per line).

    Records without a tenant go to ``repo``'s; records without ``extras.original_source``
    get ``source_name``, else the file's absolute path; records without a producer get
    ``cas.import``.

    Raises:
        InputError: the file cannot be read.
        MetadataError: a line is refused (``line N: reason``); nothing was stored.
    """
    absolute = os.path.abspath(path)
    source = source_name or absolute
    try:
        f = open(absolute, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with f:
        result = load_lines(repo, f, _with_source(source))
    return ImportReport(
        path=absolute,
        original_source=source,
        read=result.stored,
        new=result.new,
        merged=result.merged,
    )


def put_stream(
    repo: EmbeddedRepository,
    stream: BinaryIO,
    tmp_dir: Path,
    *,
    defaults: Mapping[str, Any],
    kind: str | None = None,
) -> BulkResult:
    """Store the JSON lines of a stream (stdin), all or nothing, like :func:`import_file`.

    With ``kind``, each line is the payload of one record of that kind; without, each line
    is a whole record. ``defaults`` (target, producer_id, context, extras, produced_at)
    fill in what a line does not say. The stream is first copied to an unnamed file in
    ``tmp_dir`` (gone when closed, even after a crash), so it can be read twice.
    """

    def make(doc: dict[str, Any]) -> dict[str, Any]:
        if kind is not None:
            return {**defaults, "kind": kind, "payload": doc}
        return {**defaults, **doc}

    with tempfile.TemporaryFile(dir=tmp_dir, prefix="meta-put-") as spool:
        shutil.copyfileobj(stream, spool, 1 << 20)
        spool.seek(0)
        return load_lines(repo, spool, make)
