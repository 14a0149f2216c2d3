"""``cas index rebuild``: recreate the SQLite cache from the files."""

from __future__ import annotations

import click

from casstore.cli._app import AppContext, cli, json_option, pass_app
from casstore.cli._output import emit_json


@cli.group()
def index() -> None:
    """The index.sqlite cache (always rebuildable from the files)."""


@index.command("rebuild")
@json_option
@pass_app
def index_rebuild(app: AppContext, as_json: bool) -> None:
    """Recreate index.sqlite from objects/, records and refs."""
    counts = app.store().rebuild_index()
    if as_json:
        emit_json(counts)
    else:
        click.echo(
            f"index rebuilt: {counts.objects} objects, {counts.records} records,"
            f" {counts.edges} edges, {counts.refs} refs"
        )
