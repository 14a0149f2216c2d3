"""Pipeline runs as OpenLineage ``RunEvent`` documents (``cas runs export --openlineage``).

Each run gives a START event and, once it has ended, a COMPLETE or FAIL event (with an
``errorMessage`` run facet). The job is ``{namespace: "casstore://<tenant>", name:
<pipeline_id>}`` and the run id is the run's UUID. The terminal event lists as outputs the
objects the run produced (datasets ``{namespace: "casstore", name: "sha256:<id>"}`` with a
``casstore`` facet holding size and source id) and as inputs their parents that the run did
not produce itself.

Each step is a child run (its own UUID, job ``<pipeline_id>.<step_name>``) carrying the
``parent`` run facet: START then COMPLETE or FAIL, or a single ABORT for a step that was
SKIPPED. A step's outputs are the objects written while it was open.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from casstore.meta.runlog import RunLog, RunObject
from casstore.meta.tables import PipelineRun, StepLog, UtcTime

PRODUCER = "https://github.com/casstore/casstore"
SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/definitions/RunEvent"
PARENT_FACET = "https://openlineage.io/spec/facets/1-0-1/ParentRunFacet.json#/$defs/ParentRunFacet"
ERROR_FACET = (
    "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet"
)
OBJECT_FACET = "https://github.com/casstore/casstore/blob/main/docs/runs.md#openlineage-export"
DATASET_NAMESPACE = "casstore"

EventType = Literal["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]
_TERMINAL = {"COMPLETED": "COMPLETE", "FAILED": "FAIL", "SKIPPED": "ABORT"}


class OLRun(BaseModel):
    """``run``: the run's UUID and its facets."""

    runId: str  # OpenLineage field names are camelCase
    facets: dict[str, Any] = Field(default_factory=dict)


class OLJob(BaseModel):
    """``job``: which pipeline (or step of one) ran."""

    namespace: str
    name: str
    facets: dict[str, Any] = Field(default_factory=dict)


class OLDataset(BaseModel):
    """An input or output dataset: one stored object."""

    namespace: str
    name: str
    facets: dict[str, Any] = Field(default_factory=dict)


class RunEvent(BaseModel):
    """One OpenLineage ``RunEvent`` (spec 2-0-2)."""

    eventType: EventType
    eventTime: UtcTime
    producer: str = PRODUCER
    schemaURL: str = SCHEMA_URL
    run: OLRun
    job: OLJob
    inputs: list[OLDataset] = Field(default_factory=list)
    outputs: list[OLDataset] = Field(default_factory=list)


def _facet(schema_url: str, **fields: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": schema_url, **fields}


def _dataset(oid: str, size: int | None, source_id: str | None) -> OLDataset:
    facts = {k: v for k, v in (("size", size), ("source_id", source_id)) if v is not None}
    return OLDataset(
        namespace=DATASET_NAMESPACE,
        name=f"sha256:{oid}",
        facets={"casstore": _facet(OBJECT_FACET, **facts)},
    )


def _facts(db: sqlite3.Connection, ids: Iterable[str]) -> dict[str, tuple[int | None, str | None]]:
    """Size and source id of objects that are not outputs of the run (its inputs)."""
    out = {}
    for oid in ids:
        size = db.execute("SELECT size FROM objects WHERE id=?", (oid,)).fetchone()
        source = db.execute(
            "SELECT source_id FROM records WHERE object_id=? AND source_id IS NOT NULL"
            " ORDER BY created LIMIT 1",
            (oid,),
        ).fetchone()
        out[oid] = (size[0] if size else None, source[0] if source else None)
    return out


def _io(
    db: sqlite3.Connection, objects: Sequence[RunObject], produced_by_run: set[str]
) -> tuple[list[OLDataset], list[OLDataset]]:
    """(inputs, outputs) for a set of produced objects: parents outside the run are inputs."""
    outputs: dict[str, OLDataset] = {}
    for o in objects:
        outputs.setdefault(o.object, _dataset(o.object, o.size, o.source_id))
    parents: list[str] = []
    for oid in outputs:
        for (parent,) in db.execute(
            "SELECT DISTINCT parent FROM edges WHERE child=? ORDER BY parent", (oid,)
        ):
            if parent not in produced_by_run and parent not in parents:
                parents.append(parent)
    facts = _facts(db, parents)
    inputs = [_dataset(p, *facts[p]) for p in parents]
    return inputs, list(outputs.values())


def _end(
    row: PipelineRun | StepLog, run: OLRun, job: OLJob, io: tuple[list, list]
) -> RunEvent | None:
    kind = _TERMINAL.get(row.status)
    if kind is None:
        return None  # still PENDING or RUNNING: only its START is known
    facets = dict(run.facets)
    if row.error_message:
        facets["errorMessage"] = _facet(
            ERROR_FACET, message=row.error_message, programmingLanguage="python"
        )
    return RunEvent(
        eventType=kind,  # type: ignore[arg-type]
        eventTime=row.end_time or row.start_time,
        run=OLRun(runId=run.runId, facets=facets),
        job=job,
        inputs=io[0],
        outputs=io[1],
    )


def run_events(log: RunLog, row: PipelineRun) -> list[RunEvent]:
    """The events of one run and its steps, in order."""
    objects = log.objects(row.id)
    produced = {o.object for o in objects}
    job = OLJob(namespace=f"casstore://{row.tenant_id}", name=row.pipeline_id)
    run = OLRun(runId=row.id)
    events = [RunEvent(eventType="START", eventTime=row.start_time, run=run, job=job)]
    parent = _facet(
        PARENT_FACET,
        run={"runId": row.id},
        job={"namespace": job.namespace, "name": job.name},
    )
    for step in log.steps(row.id):
        step_run = OLRun(runId=step.id, facets={"parent": parent})
        step_job = OLJob(namespace=job.namespace, name=f"{row.pipeline_id}.{step.step_name}")
        if step.status != "SKIPPED":
            events.append(
                RunEvent(eventType="START", eventTime=step.start_time, run=step_run, job=step_job)
            )
        mine = [o for o in objects if o.step_id == step.id]
        end = _end(step, step_run, step_job, _io(log.db, mine, {o.object for o in mine}))
        if end is not None:
            events.append(end)
    end = _end(row, run, job, _io(log.db, objects, produced))
    if end is not None:
        events.append(end)
    return events


def openlineage_events(
    log: RunLog, runs: Sequence[str] = (), *, since: datetime | None = None
) -> list[RunEvent]:
    """Events of the named runs (ids or prefixes), else of every run since ``since``
    (default: all of this tenant's), oldest run first."""
    if runs:
        rows = [log.get(r) for r in runs]
        if since is not None:
            rows = [r for r in rows if r.start_time >= since]
    else:
        rows = log.list_runs(since=since)
    rows.sort(key=lambda r: (r.start_time, r.id))
    return [event for row in rows for event in run_events(log, row)]
