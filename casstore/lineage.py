"""Lineage queries over the index's edge table: ancestors, descendants, paths, staleness.

The lineage DAG has an edge from an object to each parent named by one of its records.
Every query here is answered by SQLite from ``edges`` (indexed both ways) and ``records``
(which keeps each record's one-line ``fact``), so walking 50 levels of a 100,000-object
store reads no record file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel

from casstore.index import Index

MAX_PATHS = 1000


class NodeRun(BaseModel):
    """The pipeline run (and step) that produced an object: its earliest record that was
    written inside a run. Names are filled from the run log when the run is this tenant's."""

    run_id: str
    step_id: str | None = None
    pipeline_id: str | None = None
    step_name: str | None = None


class Node(BaseModel):
    """An object in a lineage answer."""

    id: str
    depth: int  # shortest distance from the object asked about
    type: str | None  # the type of its earliest record (None: no record indexed)
    created: str | None
    fact: str | None
    refs: list[str] = []
    pipeline: NodeRun | None = None


class Edge(BaseModel):
    """``child`` was made from ``parent``, says record ``record``."""

    child: str
    parent: str
    record: str


class Lineage(BaseModel):
    """Nodes and edges reachable from ``root`` in one direction."""

    root: str
    direction: Literal["ancestors", "descendants"]
    nodes: list[Node]
    edges: list[Edge]


class StaleItem(BaseModel):
    """A derived object built from a version of a source that is no longer current."""

    object: str
    ref: str  # sources/<id>
    built_from: str  # the old version it descends from
    current: str  # where the source ref points now


_WALK = {
    "ancestors": ("child", "parent"),
    "descendants": ("parent", "child"),
}


def _walk(db: sqlite3.Connection, start: str, direction: str, depth: int | None) -> dict[str, int]:
    """``{object: shortest depth}`` of everything reachable from ``start``.

    Level by level with a visited set: content addressing makes loops ordinary (an
    identity transform records X as made from X), so the walk must never revisit.
    """
    near, far = _WALK[direction]
    found = {start: 0}
    frontier = [start]
    d = 0
    while frontier and (depth is None or d < depth):
        d += 1
        nxt = []
        for i in range(0, len(frontier), 500):
            chunk = frontier[i : i + 500]
            q = f"SELECT DISTINCT {far} FROM edges WHERE {near} IN ({','.join('?' * len(chunk))})"
            for (oid,) in db.execute(q, chunk):
                if oid not in found:
                    found[oid] = d
                    nxt.append(oid)
        frontier = nxt
    return found


def _nodes(db: sqlite3.Connection, found: dict[str, int], refs: dict[str, list[str]]) -> list[Node]:
    db.execute("CREATE TEMP TABLE IF NOT EXISTS _found (id TEXT PRIMARY KEY, depth INTEGER)")
    db.execute("DELETE FROM _found")
    db.executemany("INSERT INTO _found VALUES (?, ?)", found.items())
    rows = db.execute(
        """
        SELECT f.id, f.depth, r.type, r.created, r.fact, p.pipeline_run, p.pipeline_step
        FROM _found f
        LEFT JOIN records r ON r.id = (
            SELECT id FROM records WHERE object_id = f.id ORDER BY created, id LIMIT 1
        )
        LEFT JOIN records p ON p.id = (
            SELECT id FROM records WHERE object_id = f.id AND pipeline_run IS NOT NULL
            ORDER BY created, id LIMIT 1
        )
        ORDER BY f.depth, r.created, f.id
        """
    ).fetchall()
    return [
        Node(
            id=i,
            depth=d,
            type=t,
            created=c,
            fact=f,
            refs=refs.get(i, []),
            pipeline=NodeRun(run_id=run, step_id=step) if run else None,
        )
        for i, d, t, c, f, run, step in rows
    ]


def _edges(db: sqlite3.Connection, direction: str) -> list[Edge]:
    near = _WALK[direction][0]
    rows = db.execute(
        f"""
        SELECT e.child, e.parent, e.record_id FROM edges e
        JOIN _found a ON a.id = e.{near}
        JOIN _found b ON b.id = e.{_WALK[direction][1]}
        ORDER BY e.child, e.parent, e.record_id
        """
    )
    return [Edge(child=c, parent=p, record=r) for c, p, r in rows]


def lineage(
    index: Index,
    object_id: str,
    *,
    direction: Literal["ancestors", "descendants"] = "ancestors",
    depth: int | None = None,
    refs: dict[str, list[str]] | None = None,
) -> Lineage:
    """Everything ``object_id`` was made from (``ancestors``) or that was made from it."""
    db = index.db
    found = _walk(db, object_id, direction, depth)
    nodes = _nodes(db, found, refs or {})
    return Lineage(root=object_id, direction=direction, nodes=nodes, edges=_edges(db, direction))


def paths(
    index: Index, object_id: str, ancestor: str, *, limit: int = MAX_PATHS
) -> list[list[str]]:
    """Every path from ``object_id`` up to ``ancestor`` (each a list of ids, both ends in).

    Only objects that are both ancestors of ``object_id`` and descendants of ``ancestor``
    are visited; at most ``limit`` paths are returned.
    """
    db = index.db
    up = _walk(db, object_id, "ancestors", None)
    if ancestor not in up:
        return []
    down = _walk(db, ancestor, "descendants", None)
    between = set(up) & set(down)
    parents: dict[str, list[str]] = {}
    for child, parent in db.execute("SELECT DISTINCT child, parent FROM edges"):
        if child in between and parent in between:
            parents.setdefault(child, []).append(parent)
    out: list[list[str]] = []
    stack: list[tuple[str, list[str]]] = [(object_id, [object_id])]
    while stack and len(out) < limit:
        node, path = stack.pop()
        if node == ancestor:
            out.append(path)
            continue
        for parent in sorted(parents.get(node, []), reverse=True):
            if parent in path:
                continue
            stack.append((parent, [*path, parent]))
    return out


def stale(index: Index, source_refs: dict[str, str]) -> list[StaleItem]:
    """Objects derived from an old version of a source whose ref has since moved.

    ``source_refs`` maps ``sources/<id>`` to its current object. A version of a source is
    any object with a download or import record for that source id; everything descending
    from an old version needs recomputing (also when it has current inputs as well).
    """
    db = index.db
    out: list[StaleItem] = []
    for ref, current in sorted(source_refs.items()):
        sid = ref.removeprefix("sources/")
        versions = [
            r[0]
            for r in db.execute(
                "SELECT DISTINCT object_id FROM records WHERE source_id=? AND type IN"
                " ('download', 'import') ORDER BY object_id",
                (sid,),
            )
        ]
        for old in versions:
            if old == current:
                continue
            for oid in sorted(_walk(db, old, "descendants", None)):
                if oid != old:
                    out.append(StaleItem(object=oid, ref=ref, built_from=old, current=current))
    return _dedupe(out)


def _dedupe(items: Iterable[StaleItem]) -> list[StaleItem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for item in items:
        key = (item.object, item.ref)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out
