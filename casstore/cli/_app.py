"""The ``cas`` command group, store discovery, and the one place errors become messages."""

from __future__ import annotations

import os
import sys
import traceback
from typing import TYPE_CHECKING, Any

import click

from casstore._version import __version__
from casstore.errors import CasError

if TYPE_CHECKING:
    from casstore.store import Store


class AppContext:
    """What every command needs: where the store is, opened on first use."""

    def __init__(self, store_path: str | None) -> None:
        self.store_path = store_path
        self.store_flag: str | None = None
        self._store: Store | None = None
        # CAS_RUN, CAS_STEP, CAS_TENANT: the pipeline run a shell step runs in (see
        # docs/runs.md); read here, checked and handed to the library when the store opens.
        self.pipeline_env: tuple[str | None, str | None, str | None] = (None, None, None)
        self._link_token: Any = None

    def store(self) -> Store:
        """The store named by ``--store``/``CAS_STORE``, else the nearest one upwards."""
        if self._store is None:
            from casstore.store import Store

            store = Store.open(self.store_path) if self.store_path else Store.discover()
            self._link_run(store)
            self._store = store
        return self._store

    def _link_run(self, store: Store) -> None:
        """With ``CAS_RUN`` set, every record this command writes names that run (and
        ``CAS_STEP``): check that they exist, then make them the current link."""
        run, step, tenant = self.pipeline_env
        if not run and not step:
            return
        from casstore.errors import RunNotFound, UsageError
        from casstore.meta.context import set_link

        if not run:
            raise UsageError("CAS_STEP is set but CAS_RUN is not: set both, or neither")
        try:
            link = store.runs(tenant or None).link(run, step or None)
        except RunNotFound as exc:
            store.close()
            raise RunNotFound(f"CAS_RUN/CAS_STEP: {exc}") from None
        except BaseException:
            store.close()
            raise
        self._link_token = set_link(link)

    def close(self) -> None:
        """Close the store if it was opened, and drop the run link it set."""
        if self._link_token is not None:
            from casstore.meta.context import reset_link

            reset_link(self._link_token)
            self._link_token = None
        if self._store is not None:
            self._store.close()


pass_app = click.make_pass_decorator(AppContext)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    "store_path",
    envvar="CAS_STORE",
    metavar="DIR",
    help="The store: a .casstore directory or the directory holding it"
    " (default: $CAS_STORE, else the nearest .casstore upwards).",
)
@click.version_option(__version__, prog_name="cas")
@click.pass_context
def cli(ctx: click.Context, store_path: str | None) -> None:
    """casstore: content-addressed artifacts with a chain of custody.

    Every file is stored under its SHA-256 with immutable records of where it came
    from; refs name the ones that matter. OBJ is a full id, a unique prefix of at
    least 4 hex digits, or a ref name (x tries tags/x, sources/x, samples/x, then x).
    """
    app = AppContext(store_path)
    env = os.environ
    app.pipeline_env = (env.get("CAS_RUN"), env.get("CAS_STEP"), env.get("CAS_TENANT"))
    # `cas --store DIR init` makes the store there; CAS_STORE alone does not steer init.
    source = ctx.get_parameter_source("store_path")
    app.store_flag = store_path if source == click.core.ParameterSource.COMMANDLINE else None
    ctx.obj = app
    ctx.call_on_close(app.close)


def skip_unused_imports(*, async_http: bool = True) -> None:
    """Keep the ``cas`` process from importing dependency modules it never runs.

    * ``httpx._main``: httpx imports its own command-line client when rich and click are
      installed (they are: cas uses them), which loads rich's console, pygments and more,
      about 50 ms of every fetch here. With ``None`` in ``sys.modules`` that import fails
      and httpx defines a stub instead, as it does when those packages are missing.
    * ``anyio``, unless ``async_http``: httpcore only needs it for asyncio clients and uses
      threading locks otherwise; anyio 4.16 parses its own source when imported (about
      40 ms here). Only for a command that makes one blocking client and no async one.

    Only the command does this; the library leaves ``sys.modules`` alone. Once httpx is
    imported (a caller in the same process) nothing is changed.
    """
    if "httpx" in sys.modules:
        return
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    if not async_http:
        sys.modules.setdefault("anyio", None)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``cas`` command: run it and turn every error into one line."""
    code = 0
    skip_unused_imports()
    try:
        cli.main(args=argv, prog_name="cas", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:  # click turns Ctrl-C into Abort
        _fail("interrupted", 130)
    except click.exceptions.NoArgsIsHelpError as exc:  # bare 'cas' or 'cas ref': help
        click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message(), err=True)
        code = 2
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except CasError as exc:
        _fail(str(exc), exc.exit_code)
    except BrokenPipeError:
        # The reader went away (cas cat … | head): not an error worth a message.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 141
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}", 1)
    except Exception as exc:  # a bug: still one line, with a way to see more
        if os.environ.get("CAS_DEBUG"):
            traceback.print_exc()
        _fail(f"internal error: {type(exc).__name__}: {exc} (set CAS_DEBUG=1 for a traceback)", 1)
    sys.exit(code)


def _fail(message: str, code: int) -> Any:
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    click.echo(f"cas: error: {first}", err=True)
    sys.exit(code)
