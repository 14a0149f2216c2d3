"""The ``cas`` command line: thin click commands over :class:`casstore.Store`."""

from casstore.cli import commands as _commands  # registers every command on the group
from casstore.cli._app import cli, main

__all__ = ["cli", "main"]
del _commands
