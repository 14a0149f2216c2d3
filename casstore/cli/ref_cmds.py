"""``cas ref list|set|show|rm|log`` and ``cas tag``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from casstore.cli._app import AppContext, cli, json_option, pass_app
from casstore.cli._output import emit_json, reflog_table, table

if TYPE_CHECKING:
    from casstore.refs import RefUpdate


@cli.group()
def ref() -> None:
    """Manage refs: names such as sources/x, tags/v1 or a/b/c that point to objects."""


@ref.command("list")
@click.argument("prefix", default="")
@json_option
@pass_app
def ref_list(app: AppContext, prefix: str, as_json: bool) -> None:
    """List refs (under PREFIX, such as tags/) and the objects they point to."""
    refs = app.store().list_refs(prefix)
    if as_json:
        emit_json(refs)
        return
    table([r.name, r.object] for r in refs)


@ref.command("show")
@click.argument("name")
@json_option
@pass_app
def ref_show(app: AppContext, name: str, as_json: bool) -> None:
    """Print the object id that ref NAME points to."""
    info = app.store().get_ref(name)
    if as_json:
        emit_json(info)
    else:
        click.echo(info.object)


def _render_update(update: RefUpdate, as_json: bool) -> None:
    if as_json:
        emit_json(update)
        return
    old = update.old[:12] if update.old else "(new)"
    new = update.new[:12] if update.new else "(removed)"
    note = "" if update.changed else "  (unchanged)"
    click.echo(f"{update.ref}: {old} -> {new}{note}")


@ref.command("set")
@click.argument("name")
@click.argument("obj")
@click.option(
    "--expect",
    metavar="OBJ",
    help="Only move the ref if it now points here (compare-and-swap); 'none': must not exist.",
)
@json_option
@pass_app
def ref_set(app: AppContext, name: str, obj: str, expect: str | None, as_json: bool) -> None:
    """Point ref NAME at OBJ; the move is appended to the ref's reflog."""
    store = app.store()
    kwargs = {}
    if expect is not None:
        kwargs["expected"] = None if expect == "none" else store.resolve(expect)
    _render_update(store.set_ref(name, obj, **kwargs), as_json)


@ref.command("rm")
@click.argument("name")
@json_option
@pass_app
def ref_rm(app: AppContext, name: str, as_json: bool) -> None:
    """Remove ref NAME. Its reflog is kept, so what it pointed to stays findable."""
    _render_update(app.store().delete_ref(name), as_json)


@ref.command("log")
@click.argument("name")
@json_option
@pass_app
def ref_log(app: AppContext, name: str, as_json: bool) -> None:
    """Show the history of ref NAME, oldest first (also for a removed ref)."""
    entries = app.store().ref_log(name)
    if as_json:
        emit_json(entries)
        return
    reflog_table(entries)


@cli.command()
@click.argument("name")
@click.argument("obj")
@json_option
@pass_app
def tag(app: AppContext, name: str, obj: str, as_json: bool) -> None:
    """Point tags/NAME at OBJ (shorthand for 'cas ref set tags/NAME OBJ')."""
    _render_update(app.store().set_ref(f"tags/{name}", obj), as_json)
