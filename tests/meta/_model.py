"""A brute-force model of the metadata repository, and ways to look at what is on disk."""

from __future__ import annotations

import json
import operator
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from casstore.meta.models import MetadataRecord, MetadataTarget
from casstore.meta.repository import EmbeddedRepository
from casstore.records import iso_utc

OPS = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge key by key, null deletes, else replace."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def doc(record: MetadataRecord) -> dict[str, Any]:
    """A record as the log line holds it, parsed."""
    return json.loads(record.to_json())


def normal(records: Iterable[MetadataRecord | dict[str, Any]]) -> list[dict[str, Any]]:
    """Records (or log documents) in one comparable shape."""
    out = []
    for r in records:
        model = r if isinstance(r, MetadataRecord) else MetadataRecord.model_validate(r)
        out.append(doc(model))
    return out


def lookup(document: dict[str, Any], path: str) -> Any:
    """The value at a dotted path, or None when any step is missing."""
    value: Any = document
    for step in path.split("."):
        if not isinstance(value, dict) or step not in value:
            return None
        value = value[step]
    return value


class Model:
    """What the repository must hold: identity -> merged document, in arrival order."""

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}

    def store(self, record: MetadataRecord) -> None:
        d = doc(record)
        key = (
            record.tenant_id or "",
            record.kind,
            record.target.key(),
            iso_utc(record.produced_at),
            record.context.run_id or "",
        )
        self.docs[key] = merge_patch(self.docs[key], d) if key in self.docs else d

    def _select(
        self,
        tenant: str,
        kind: str | None = None,
        target: MetadataTarget | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[tuple[tuple[str, str, str, str, str], dict[str, Any]]]:
        out = []
        for key, d in self.docs.items():
            t, k, tk, at, _ = key
            if t != tenant or (kind is not None and k != kind):
                continue
            if target is not None and tk != target.key():
                continue
            if since is not None and at < iso_utc(since):
                continue
            if until is not None and at >= iso_utc(until):
                continue
            out.append((key, d))
        return out

    def latest(self, tenant: str, target: MetadataTarget, kind: str) -> list[dict[str, Any]]:
        found = self._select(tenant, kind, target)
        found.sort(key=lambda kd: (kd[0][3], kd[0][4]))
        return [found[-1][1]] if found else []

    def history(
        self,
        tenant: str,
        target: MetadataTarget,
        kind: str,
        since: datetime | None,
        until: datetime | None,
    ) -> list[dict[str, Any]]:
        found = self._select(tenant, kind, target, since, until)
        found.sort(key=lambda kd: (kd[0][3], kd[0][4]))
        return [d for _, d in found]

    def query(
        self,
        tenant: str,
        kind: str | None,
        where: list[tuple[str, str, Any]],
        since: datetime | None,
        until: datetime | None,
        target: MetadataTarget | None,
        limit: int | None,
    ) -> list[dict[str, Any]]:
        found = self._select(tenant, kind, target, since, until)
        found = [
            (key, d)
            for key, d in found
            if all(
                (v := lookup(d, path)) is not None and OPS[op](v, value)
                for path, op, value in where
            )
        ]
        found.sort(key=lambda kd: (kd[0][3], kd[0][4], kd[0][1], kd[0][2]), reverse=True)
        docs = [d for _, d in found]
        return docs if limit is None else docs[:limit]


def table_rows(db_path: Path) -> list[tuple[Any, ...]]:
    """Every row of ``meta_records`` in an index file, sorted."""
    db = sqlite3.connect(db_path)
    try:
        return sorted(db.execute("SELECT * FROM meta_records").fetchall())
    finally:
        db.close()


def log_docs(log: Path) -> list[dict[str, Any]]:
    """Every line of a metadata log, parsed (each must be complete JSON)."""
    data = log.read_bytes() if log.exists() else b""
    assert not data or data.endswith(b"\n"), "the log ends in a torn line"
    return [json.loads(line) for line in data.splitlines()]


def open_repo(log_dir: Path, db_path: Path, tenant: str = "default") -> EmbeddedRepository:
    """A repository over ``log_dir/metadata.jsonl`` with its own SQLite file.

    A new ``db_path`` is a fresh index: the log is replayed into it on first read.
    """
    db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    tmp = log_dir.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    return EmbeddedRepository(db, log_dir, tmp, tenant=tenant)


def open_repo_pair(
    root: Path, tenants: Iterable[str]
) -> tuple[dict[str, EmbeddedRepository], dict[str, EmbeddedRepository]]:
    """Per tenant, a repository on ``live.sqlite`` and one on ``replayed.sqlite``, both over
    ``root/log``: write through the first, then the second replays the log on its reads."""
    log = root / "log"
    log.mkdir(exist_ok=True)
    pairs = []
    for name in ("live.sqlite", "replayed.sqlite"):
        first = None
        repos = {}
        for tenant in tenants:
            if first is None:
                first = open_repo(log, root / name, tenant)
                repos[tenant] = first
            else:  # the same connection, another tenant
                repos[tenant] = EmbeddedRepository(first.db, log, root / "tmp", tenant=tenant)
        pairs.append(repos)
    return pairs[0], pairs[1]
