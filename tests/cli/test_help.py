"""Every command and subcommand explains itself."""

import click
import pytest
from click.testing import CliRunner

from casstore.cli import cli


def walk(group: click.Group, path: tuple[str, ...] = ()):
    for name, cmd in sorted(group.commands.items()):
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from walk(cmd, (*path, name))


COMMANDS = list(walk(cli))
EXPECTED = {
    "init", "add", "cat", "show", "ls", "tag",
    "ref", "ref list", "ref set", "ref show", "ref rm", "ref log",
    "index", "index rebuild",
}  # fmt: skip


def test_the_issue_s_commands_exist():
    assert {" ".join(p) for p, _ in COMMANDS} >= EXPECTED


def test_the_group_has_help():
    assert cli.help and cli.help.strip()


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help(path, cmd, cas):
    assert cmd.help and cmd.help.strip(), f"cas {' '.join(path)} has no help text"
    first = cmd.help.strip().splitlines()[0]
    assert cmd.get_short_help_str(), f"cas {' '.join(path)} has no short help"
    for param in cmd.params:
        if isinstance(param, click.Option):
            assert param.help, f"cas {' '.join(path)} {param.opts[0]} has no help"
    result = cas(*path, "--help")
    assert result.exit_code == 0, result
    assert result.stdout.startswith(f"Usage: cas {' '.join(path)}")
    assert first[:40] in " ".join(result.stdout.split())


def test_top_level_help_lists_every_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in cli.commands:
        assert f"  {name} " in result.output or f"  {name}\n" in result.output


@pytest.mark.parametrize("path", [p for p, c in COMMANDS if hasattr(c, "params")])
def test_printing_commands_take_json(path):
    cmd = cli
    for part in path:
        cmd = cmd.commands[part]
    if isinstance(cmd, click.Group) or path == ("cat",):
        return
    assert any("--json" in getattr(p, "opts", []) for p in cmd.params), (
        f"cas {' '.join(path)} has no --json"
    )
