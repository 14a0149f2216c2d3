"""cas as a producer: the metadata records cas writes about its own work.

``cas fetch`` emits ``ingestion_volume`` and ``ingestion_runtime`` (producer ``cas.fetch``,
target ``source_id``), ``cas verify`` emits ``verify_result`` (``cas.verify``) and ``cas gc``
emits ``gc_result`` (``cas.gc``), both about the store itself (the empty target). Each is
emitted by the library function that returns the result, after its work succeeded, into
the store's default tenant. The records of one operation share ``context.run_id``; inside
a pipeline run (see :mod:`casstore.meta.context`) that is the pipeline run's id, with the
operation's own id and the step in ``context.extras``.

Emission is not best-effort: a record that cannot be stored raises :class:`MetadataError`
saying that the work itself was done (a fetched object is stored and its ref moved before
anything is emitted), so a caller never mistakes a metadata failure for a failed fetch.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from casstore._version import __version__
from casstore.errors import CasError, MetadataError
from casstore.meta.context import current_link
from casstore.meta.models import MetadataContext, MetadataRecord, MetadataTarget

if TYPE_CHECKING:
    from casstore.store import Store

STORE_TARGET = MetadataTarget()  # facts about the store itself: verify, gc


def new_run_id() -> str:
    """A fresh run id, shared by the records one operation emits so they can be joined."""
    return uuid.uuid4().hex


def emit(
    store: Store,
    what: str,
    payloads: Mapping[str, BaseModel | Mapping[str, Any]],
    *,
    producer_id: str,
    target: MetadataTarget = STORE_TARGET,
    produced_at: datetime | None = None,
    run_id: str | None = None,
) -> list[MetadataRecord]:
    """Store one record per ``{kind: payload}`` about ``target``, all with one run id.

    ``what`` names the finished work for the error message ("fetch of sources/x"). The
    records are validated against their kinds like any producer's. Returns them as stored.

    Raises:
        MetadataError: a record could not be validated or stored; the work was done.
    """
    run_id = run_id or new_run_id()
    link = current_link()
    if link is not None:  # inside a pipeline run: its id joins these records to the run
        context = MetadataContext(
            run_id=link.run_id,
            extras={"operation_id": run_id, **({"step_id": link.step_id} if link.step_id else {})},
        )
    else:
        context = MetadataContext(run_id=run_id)
    try:
        repo = store.metadata()
        stored = []
        for kind, payload in payloads.items():
            data = (
                payload.model_dump(mode="json", exclude_none=True)
                if isinstance(payload, BaseModel)
                else dict(payload)
            )
            record = MetadataRecord(
                kind=kind,
                target=target,
                payload=data,
                producer_id=producer_id,
                context=context,
                version=__version__,
                **({"produced_at": produced_at} if produced_at is not None else {}),
            )
            stored.append(repo.store(record))
        return stored
    except (CasError, OSError, sqlite3.Error) as exc:
        raise MetadataError(
            f"{what} succeeded, but its metadata could not be recorded: {exc}"
        ) from exc
