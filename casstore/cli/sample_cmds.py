"""``cas sample``: parse, one library call (:func:`casstore.sample.sample_object`), render."""

from __future__ import annotations

import click

from casstore.cli._app import AppContext, cli, json_option, pass_app
from casstore.cli._output import emit_json, transfer_progress


@cli.command()
@click.argument("obj")
@click.option("--head", type=click.IntRange(min=1), metavar="N", help="The first N records.")
@click.option(
    "--random",
    "random_n",
    type=click.IntRange(min=1),
    metavar="N",
    help="N records drawn uniformly at random (reservoir sampling), kept in input order.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    metavar="S",
    help="Seed of --random (default 0): the same seed gives the same sample.",
)
@click.option(
    "--systematic",
    type=click.IntRange(min=1),
    metavar="K",
    help="Every K-th record: positions O, O+K, O+2K, … (0-based).",
)
@click.option(
    "--offset",
    type=click.IntRange(min=0),
    metavar="O",
    help="Where --systematic starts (default 0).",
)
@click.option(
    "--ref",
    metavar="NAME",
    help="Ref to point at the sample (default samples/<source or short id>/<regime>-<n>).",
)
@json_option
@pass_app
def sample(
    app: AppContext,
    obj: str,
    head: int | None,
    random_n: int | None,
    seed: int | None,
    systematic: int | None,
    offset: int | None,
    ref: str | None,
    as_json: bool,
) -> None:
    """Store a sample of the records in OBJ, with its recipe, and point a ref at it.

    OBJ holds JSON-lines, a JSON array of records (any layout), CSV (the header row is
    kept) or text lines, raw or compressed with gzip, bz2, zstd or xz. The sample keeps
    the input's record format, uncompressed. Asking again for the same sample of the
    same object returns the stored one without reading OBJ ("reused").
    """
    from casstore.sample import sample_object

    chosen = [
        (name, value)
        for name, value in (("head", head), ("random", random_n), ("systematic", systematic))
        if value is not None
    ]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --head N, --random N or --systematic K")
    regime, value = chosen[0]
    if seed is not None and regime != "random":
        raise click.UsageError("--seed goes with --random")
    if offset is not None and regime != "systematic":
        raise click.UsageError("--offset goes with --systematic")
    kwargs = {
        "regime": regime,
        "n": value if regime != "systematic" else None,
        "stride": value if regime == "systematic" else None,
        "seed": seed,
        "offset": offset or 0,
        "ref": ref,
    }
    store = app.store()
    if regime == "head":  # reads a few MiB at most: no bar
        result = sample_object(store, obj, **kwargs)  # type: ignore[arg-type]
    else:
        with transfer_progress("sampling") as (advance, set_total):
            result = sample_object(
                store,
                obj,
                progress=advance,
                on_total=set_total,
                **kwargs,  # type: ignore[arg-type]
            )
    if as_json:
        emit_json(result)
        return
    reused = ", reused" if result.reused else ""
    click.echo(
        f"{result.object}  {result.ref}  ({result.n_taken} records, {result.regime}"
        f" of {result.parent[:12]}{reused})"
    )
