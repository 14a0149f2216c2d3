"""``cas log``, ``cas why`` and ``cas stale``: lineage questions, answered from the index."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from casstore.cli._app import AppContext, cli, json_option, pass_app
from casstore.cli._output import echo, emit_json, reflog_table, short_time, table

if TYPE_CHECKING:
    from casstore.lineage import Lineage, Node


def _label(node: Node) -> str:
    refs = f"  [{', '.join(node.refs)}]" if node.refs else ""
    when = short_time(node.created)
    run = ""
    if node.pipeline is not None:  # made inside a pipeline run: which one, which step
        p = node.pipeline
        step = f" step {p.step_name or (p.step_id or '')[:8]}" if p.step_id else ""
        run = f"  (pipeline {p.pipeline_id or '?'} run {p.run_id[:8]}{step})"
    return f"{node.id[:12]}  {node.type or '?':<8}  {when}  {node.fact or ''}{refs}{run}"


def _graph(lin: Lineage) -> list[str]:
    """The DAG as an indented tree; a node reached again says so instead of repeating."""
    by_id = {n.id: n for n in lin.nodes}
    nexts: dict[str, list[str]] = {}
    for e in lin.edges:
        a, b = (e.child, e.parent) if lin.direction == "ancestors" else (e.parent, e.child)
        if b not in nexts.setdefault(a, []):
            nexts[a].append(b)
    lines: list[str] = []
    shown: set[str] = set()

    def visit(oid: str, prefix: str, tail: str) -> None:
        node = by_id.get(oid)
        if oid in shown:
            lines.append(f"{prefix}{tail}{oid[:12]}  (shown above)")
            return
        shown.add(oid)
        lines.append(f"{prefix}{tail}{_label(node) if node else oid[:12]}")
        kids = sorted(
            nexts.get(oid, []), key=lambda k: (by_id[k].created or "", k) if k in by_id else ("", k)
        )
        child_prefix = prefix + ("    " if tail == "└── " else "│   " if tail else "")
        for i, kid in enumerate(kids):
            visit(kid, child_prefix, "└── " if i == len(kids) - 1 else "├── ")

    visit(lin.root, "", "")
    return lines


@cli.command("log")
@click.argument("obj")
@click.option("--children", is_flag=True, help="What was derived from OBJ, transitively.")
@click.option("--graph", is_flag=True, help="Draw the DAG as a tree.")
@click.option("--depth", type=click.IntRange(0), help="Stop this many steps away.")
@click.option("--history", is_flag=True, help="OBJ is a ref: its versions, from the reflog.")
@json_option
@pass_app
def log_(
    app: AppContext,
    obj: str,
    children: bool,
    graph: bool,
    depth: int | None,
    history: bool,
    as_json: bool,
) -> None:
    """Lineage of OBJ: back to its downloads and imports, or (--children) forward."""
    store = app.store()
    if history:
        from casstore.errors import RefNotFound

        try:
            name = store.get_ref(obj).name
        except RefNotFound:
            name = obj
        entries = store.ref_log(name)
        if as_json:
            emit_json(entries)
            return
        reflog_table(entries)
        return
    lin = store.log(obj, children=children, depth=depth)
    if as_json:
        emit_json(lin)
        return
    if graph:
        for line in _graph(lin):
            echo(line)
        return
    for node in lin.nodes:
        echo(f"{'  ' * min(node.depth, 20)}{_label(node)}")


@cli.command()
@click.argument("obj")
@click.argument("ancestor")
@json_option
@pass_app
def why(app: AppContext, obj: str, ancestor: str, as_json: bool) -> None:
    """The paths by which OBJ depends on ANCESTOR (exit 1 when it does not)."""
    from casstore.lineage import MAX_PATHS

    found = app.store().why(obj, ancestor)
    if len(found) >= MAX_PATHS:
        click.echo(f"cas: note: showing the first {MAX_PATHS} paths only", err=True)
    if as_json:
        emit_json(found)
    else:
        for path in found:
            click.echo(" <- ".join(p[:12] for p in path))
    if not found:
        if not as_json:
            click.echo(f"{obj} does not depend on {ancestor}", err=True)
        raise SystemExit(1)


@cli.command()
@json_option
@pass_app
def stale(app: AppContext, as_json: bool) -> None:
    """Derived objects built from an old version of a source: what needs recomputing."""
    items = app.store().stale()
    if as_json:
        emit_json(items)
        return
    table(
        [i.object[:12], i.ref, f"built from {i.built_from[:12]}", f"now {i.current[:12]}"]
        for i in items
    )
