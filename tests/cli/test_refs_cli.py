"""`cas ref list|set|show|rm|log` and `cas tag`."""

import getpass
import socket

import pytest

from tests._helpers import sha256

A, B = sha256(b"a"), sha256(b"b")


@pytest.fixture
def two(store, cas, tmp_path):
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    assert cas("add", "a", "b").exit_code == 0


def test_ref_set_show_list(two, cas):
    result = cas("ref", "set", "sources/s", A[:8])
    assert result.exit_code == 0, result
    assert result.stdout == f"sources/s: (new) -> {A[:12]}\n"
    assert cas("ref", "set", "sources/s", "b").exit_code == 1  # no ref 'b', not a prefix
    moved = cas("ref", "set", "sources/s", B)
    assert moved.stdout == f"sources/s: {A[:12]} -> {B[:12]}\n"
    same = cas("ref", "set", "sources/s", B)
    assert same.stdout == f"sources/s: {B[:12]} -> {B[:12]}  (unchanged)\n"
    assert cas("ref", "show", "sources/s").stdout == B + "\n"
    assert cas("ref", "show", "s").stdout == B + "\n"  # bare name: sources/s
    cas("ref", "set", "a/b/c", A)
    assert cas("ref", "list").lines == [f"a/b/c      {A}", f"sources/s  {B}"]
    assert cas("ref", "list", "sources/").lines == [f"sources/s  {B}"]


def test_ref_json(two, cas):
    update = cas("ref", "set", "--json", "x", A).json()
    assert update == {"ref": "x", "old": None, "new": A, "changed": True}
    assert cas("ref", "show", "--json", "x").json() == {"name": "x", "object": A}
    assert cas("ref", "list", "--json").json() == [{"name": "x", "object": A}]
    assert cas("ref", "rm", "--json", "x").json() == {
        "ref": "x",
        "old": A,
        "new": None,
        "changed": True,
    }
    log = cas("ref", "log", "--json", "x").json()
    assert [(e["action"], e["old"], e["new"]) for e in log] == [
        ("set", None, A),
        ("delete", A, None),
    ]
    assert all(e["ref"] == "x" and e["user"] == getpass.getuser() for e in log)
    assert all(e["time"].endswith("Z") for e in log)


def test_ref_rm_keeps_the_reflog(two, cas):
    cas("ref", "set", "tags/old", A)
    result = cas("ref", "rm", "tags/old")
    assert result.stdout == f"tags/old: {A[:12]} -> (removed)\n"
    assert cas("ref", "list").stdout == ""
    assert cas("ref", "show", "tags/old").exit_code == 1
    log = cas("ref", "log", "tags/old")
    assert log.exit_code == 0
    assert len(log.lines) == 2
    assert f"{A[:12]} -> -" in log.lines[1]
    assert cas("cat", A).stdout_bytes == b"a"  # what it pointed to stays findable


def test_ref_log_text(two, cas):
    cas("ref", "set", "x", A)
    cas("ref", "set", "x", B)
    log = cas("ref", "log", "--json", "x").json()
    lines = cas("ref", "log", "x").lines
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    moves = [f"- -> {A[:12]}", f"{A[:12]} -> {B[:12]}"]
    assert lines == [
        f"{e['time'][:19].replace('T', ' ')}  set  {move:<28}  {who}  set"
        for e, move in zip(log, moves, strict=True)
    ]


def test_ref_expect(two, cas):
    assert cas("ref", "set", "--expect", "none", "x", A).exit_code == 0
    lost = cas("ref", "set", "--expect", "none", "x", B)
    assert lost.exit_code == 1
    assert lost.stderr == f"cas: error: ref 'x' moved: expected no ref, found {A[:12]}\n"
    wrong = cas("ref", "set", "--expect", B, "x", B)
    assert wrong.exit_code == 1
    assert wrong.stderr == f"cas: error: ref 'x' moved: expected {B[:12]}, found {A[:12]}\n"
    assert cas("ref", "set", "--expect", A[:6], "x", B).exit_code == 0
    assert cas("ref", "show", "x").stdout == B + "\n"


def test_tag(two, cas):
    result = cas("tag", "v1", A)
    assert result.exit_code == 0
    assert result.stdout == f"tags/v1: (new) -> {A[:12]}\n"
    assert cas("tag", "--json", "v1", B).json() == {
        "ref": "tags/v1",
        "old": A,
        "new": B,
        "changed": True,
    }
    assert cas("ref", "show", "tags/v1").stdout == B + "\n"


@pytest.mark.parametrize("name", ["../x", "a//b", ".hidden", "x.lock", "a b", "/x"])
def test_invalid_ref_names(two, cas, name):
    result = cas("ref", "set", name, A)
    assert result.exit_code == 2  # a bad name on the command line is a usage error
    assert result.stderr.startswith(f"cas: error: invalid ref name {name!r}")
    assert result.stderr.count("\n") == 1


def test_ref_clash_message(two, cas):
    cas("ref", "set", "a/b", A)
    result = cas("ref", "set", "a/b/c", B)
    assert result.exit_code == 1
    assert result.stderr == "cas: error: ref 'a/b/c' clashes with an existing ref above it\n"


def test_ref_rm_below_an_existing_ref_says_there_is_no_such_ref(two, cas):
    cas("ref", "set", "a", A)
    result = cas("ref", "rm", "a/b")
    assert result.exit_code == 1
    assert result.stderr == "cas: error: no ref named 'a/b'\n"


def test_unknown_refs(two, cas):
    assert cas("ref", "show", "nope").stderr == "cas: error: no ref named 'nope'\n"
    assert cas("ref", "rm", "nope").stderr == "cas: error: no ref named 'nope'\n"
    assert cas("ref", "log", "nope").stderr == "cas: error: no ref or reflog named 'nope'\n"


def test_ref_to_a_missing_object(two, cas):
    result = cas("ref", "set", "x", sha256(b"never"))
    assert result.exit_code == 1
    assert result.stderr == f"cas: error: object {sha256(b'never')} not found\n"
