"""``cas run``: run a command on stored inputs and store its outputs with provenance."""

from __future__ import annotations

import os

import click

from casstore.cli._app import AppContext, cli, json_option, pass_app
from casstore.cli._output import emit_json
from casstore.cli.store_cmds import _parse_params


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--input",
    "inputs",
    multiple=True,
    metavar="[NAME=]OBJ",
    help="A stored input; its read-only copy's path replaces {NAME} in the command"
    " and is in $CAS_INPUT_NAME (unnamed inputs are in0, in1, …).",
)
@click.option(
    "--output",
    "outputs",
    multiple=True,
    metavar="PATH",
    help="A file the command writes; stored afterwards (and left in place).",
)
@click.option("--transform", metavar="NAME", help="A name for what the command does.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="A parameter.")
@click.option(
    "--env",
    "env_names",
    multiple=True,
    metavar="NAME",
    help="Record this environment variable's value (and key the memo on it).",
)
@click.option("--force", is_flag=True, help="Run even when the same action already ran.")
@json_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_app
def run(
    app: AppContext,
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    transform: str | None,
    params: tuple[str, ...],
    env_names: tuple[str, ...],
    force: bool,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND (after --) on stored inputs; store each --output with a run record.

    The same action (command, inputs, transform, params, --env values) again puts the
    stored outputs back without running the command; --force runs it anyway.
    A failing command stores nothing and cas exits with its code.

    \b
    Example:
      cas run --input raw=sources/systems --output out.csv --transform to-csv \\
          -- python convert.py {raw} out.csv
    """
    result = app.store().run(
        list(command),
        inputs=list(inputs),
        outputs=list(outputs),
        transform=transform,
        params=_parse_params(params),
        env_names=list(env_names),
        environ=dict(os.environ),
        force=force,
    )
    if as_json:
        emit_json(result)
        return
    if result.status == "restored":
        click.echo(
            f"memo hit: restored {len(result.outputs)} output(s) of action"
            f" {result.action[:12]} without running the command"
        )
    else:
        click.echo(
            f"ran in {result.duration_ms / 1000:.1f} s: stored"
            f" {len(result.outputs)} output(s) (action {result.action[:12]})"
        )
    for out in result.outputs:
        click.echo(f"{out.object}  {out.path}")
