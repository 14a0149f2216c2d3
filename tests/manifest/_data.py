"""Test data for the manifest and export tests.

``download`` is ``tests._helpers.put_download`` with this package's defaults (source
``systems``); ``write_manifest`` and ``entry`` write manifests as another pipeline would.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from casstore.store import Store
from tests._helpers import put_download


def download(
    store: Store,
    data: bytes,
    *,
    url: str = "https://data.example.org/dump.json.gz",
    source_id: str | None = "systems",
    dataset: str | None = None,
    etag: str | None = None,
    weak_etag: str | None = None,
    when: datetime | None = None,
) -> str:
    """Store ``data`` with a download record (as ``cas fetch`` would, without a network)."""
    return put_download(
        store,
        data,
        url=url,
        source_id=source_id,
        dataset=dataset,
        etag=etag,
        weak_etag=weak_etag,
        created=when,
    )


def at(day: int) -> datetime:
    """A fixed time: 2026-01-<day> 12:00 UTC."""
    return datetime(2026, 1, day, 12, 0, tzinfo=UTC)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_manifest(path: Path, records: dict[str, Any], **metadata: Any) -> Path:
    """A manifest file as another pipeline would write it."""
    meta = {
        "process": "extractor",
        "etl_version": "1.0.0",
        "root_dir": str(path.parent),
        "total_records": len(records),
        "ts_created": "2023-01-01T12:00:00Z",
        "ts_updated": "2023-01-01T12:00:00Z",
        **metadata,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metadata": meta, "records": records}, indent=4))
    return path


def entry(data: bytes, file_path: str = "file", *, day: int = 1, **fields: Any) -> dict[str, Any]:
    """One manifest record for ``data`` (checksum and size computed)."""
    out = {
        "source_id": "systems",
        "dataset": "star_systems",
        "checksum": hashlib.sha256(data).hexdigest(),
        "file_path": file_path,
        "file_size": len(data),
        "etag": None,
        "ts_downloaded": f"2026-01-{day:02d}T12:00:00Z",
        "version": "1.0.0",
    }
    out.update(fields)
    return out
