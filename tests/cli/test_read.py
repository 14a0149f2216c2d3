"""`cas cat`, `cas show`, `cas ls`."""

import getpass
import socket

import pytest

from casstore._version import __version__
from casstore.cli._output import human_size
from tests._helpers import colliding_contents, json_lines, random_bytes, sha256

BINARY = bytes(range(256)) * 40 + b"\x00\r\n\xff"


def detail(label: str, value: object) -> str:
    """One detail line of a record in `cas show`: an indented label column, then the value."""
    return f"      {label + ':':<19}{value}"


@pytest.fixture
def added(store, cas, tmp_path):
    """Three stored objects: binary, compressible JSON lines, and a tagged small text."""
    data = {"bin": BINARY, "big.jsonl": json_lines(400_000), "small.txt": b"hello\n"}
    for name, content in data.items():
        (tmp_path / name).write_bytes(content)
    assert cas("add", *data).exit_code == 0
    cas("tag", "v1", sha256(b"hello\n"))
    return {name: sha256(content) for name, content in data.items()}


def test_cat_writes_the_exact_bytes(added, cas):
    result = cas("cat", added["bin"])
    assert result.exit_code == 0
    assert result.stdout_bytes == BINARY
    assert result.stderr == ""


def test_cat_a_compressed_object(added, cas):
    assert cas("cat", added["big.jsonl"]).stdout_bytes == json_lines(400_000)


@pytest.mark.parametrize("spec", ["v1", "tags/v1", "PREFIX", "FULL"])
def test_cat_by_ref_prefix_or_id(added, cas, spec):
    oid = added["small.txt"]
    spec = {"PREFIX": oid[:4], "FULL": oid}.get(spec, spec)
    assert cas("cat", spec).stdout_bytes == b"hello\n"


def test_cat_several_objects_in_order(added, cas):
    result = cas("cat", "v1", added["bin"], "v1")
    assert result.stdout_bytes == b"hello\n" + BINARY + b"hello\n"


def test_cat_checks_every_name_before_printing(added, cas):
    result = cas("cat", "v1", "nosuch")
    assert result.exit_code == 1
    assert result.stdout_bytes == b""
    assert result.stderr == "cas: error: no object or ref matches 'nosuch'\n"


def test_a_prefix_shorter_than_four_digits_says_so(added, cas):
    result = cas("cat", added["small.txt"][:3])
    assert result.exit_code == 1
    assert result.stderr.startswith("cas: error: ")
    assert "at least 4 hex digits" in result.stderr and result.stdout_bytes == b""


def test_cat_ambiguous_prefix_lists_candidates(store, cas, tmp_path):
    one, two = colliding_contents(4)
    (tmp_path / "one").write_bytes(one)
    (tmp_path / "two").write_bytes(two)
    cas("add", "one", "two")
    a, b = sorted([sha256(one), sha256(two)])
    result = cas("cat", a[:4])
    assert result.exit_code == 1
    assert result.stderr == f"cas: error: prefix {a[:4]!r} is ambiguous: {a[:12]}, {b[:12]}\n"
    assert result.stdout_bytes == b""


def test_show_text(added, cas, tmp_path):
    oid = added["big.jsonl"]
    info = cas("show", "--json", oid).json()
    [entry] = info["records"]
    rec = entry["record"]
    result = cas("show", oid)
    assert result.exit_code == 0
    size = len(json_lines(400_000))
    saved = 100 - 100 * info["stored_size"] / size
    assert result.lines == [
        f"object       {oid}",
        f"size         {size} bytes ({human_size(size)})",
        f"stored       {info['stored_size']} bytes, compression zstd, {saved:.0f}% saved",
        "refs         -",
        "records      1",
        f"  {entry['id'][:12]}  import   {rec['created'][:19].replace('T', ' ')}"
        f"  {getpass.getuser()}@{socket.gethostname()}  cas {__version__}",
        detail("path", tmp_path / "big.jsonl"),
        detail("blake3", rec["blake3"]),
    ]


def test_show_refs_and_derive_details(added, cas, tmp_path):
    (tmp_path / "child").write_bytes(b"child")
    cas("add", "--parent", "v1", "--transform", "upper", "--param", "b=2", "--param", "a=1",
        "--dataset", "ds", "child")  # fmt: skip
    cas("tag", "child", sha256(b"child"))
    cas("ref", "set", "sources/c", sha256(b"child"))
    lines = cas("show", "child").lines
    assert lines[0] == f"object       {sha256(b'child')}"
    assert lines[2] == "stored       5 bytes, compression none"
    assert lines[3] == "refs         sources/c, tags/child"
    assert lines[6:] == [
        detail("dataset", "ds"),
        detail("path", tmp_path / "child"),
        detail("transform", "upper"),
        detail("parent", added["small.txt"]),
        detail("param", "a=1"),
        detail("param", "b=2"),
        detail("blake3", lines[-1].split()[-1]),
    ]
    assert " derive   " in lines[5]


def test_show_json(added, cas, tmp_path):
    doc = cas("show", "--json", "v1").json()
    assert doc["id"] == added["small.txt"]
    assert doc["size"] == 6
    assert doc["stored_size"] == 6
    assert doc["compression"] == "none"
    assert doc["refs"] == ["tags/v1"]
    [entry] = doc["records"]
    assert set(entry) == {"id", "record"}
    rec = entry["record"]
    assert rec["object"] == added["small.txt"]
    assert rec["size"] == 6
    assert rec["path"] == str(tmp_path / "small.txt")
    assert rec["producer"] == {"name": "cas", "version": __version__}
    assert rec["created"].endswith("Z")


def test_show_two_records(added, cas, tmp_path):
    (tmp_path / "copy.txt").write_bytes(b"hello\n")
    cas("add", "copy.txt")
    doc = cas("show", "--json", "v1").json()
    assert [e["record"]["path"] for e in doc["records"]] == [
        str(tmp_path / "small.txt"),
        str(tmp_path / "copy.txt"),
    ]
    assert cas("show", "v1").lines[4] == "records      2"


def test_show_unknown(store, cas):
    result = cas("show", "deadbeef")
    assert result.exit_code == 1
    assert result.stderr == "cas: error: no object or ref matches 'deadbeef'\n"


def test_ls_text(added, cas):
    objects = cas("ls", "--json").json()
    result = cas("ls")
    assert result.exit_code == 0
    width = max(len(human_size(o["size"])) for o in objects)
    expected = []
    for o in objects:
        refs = ", ".join(o["refs"])
        line = (
            f"{o['id'][:12]}  {human_size(o['size']):<{width}}  {o['type']}"
            f"  {o['created'][:19].replace('T', ' ')}  {refs}"
        )
        expected.append(line.rstrip())
    assert result.lines == expected
    assert len(result.lines) == 3


def test_ls_json(added, cas):
    objects = cas("ls", "--json").json()
    assert [o["id"] for o in objects] == [added[n] for n in ("bin", "big.jsonl", "small.txt")]
    by_id = {o["id"]: o for o in objects}
    small = by_id[added["small.txt"]]
    assert small["refs"] == ["tags/v1"]
    assert small["size"] == 6 and small["type"] == "import"
    assert by_id[added["big.jsonl"]]["compression"] == "zstd"
    assert by_id[added["bin"]]["refs"] == []


def test_ls_full(added, cas):
    assert sorted(line.split()[0] for line in cas("ls", "--full").lines) == sorted(added.values())


def test_ls_empty_store(store, cas):
    result = cas("ls")
    assert (result.exit_code, result.stdout) == (0, "")
    assert cas("ls", "--json").json() == []


def test_ls_after_the_index_is_deleted(added, cas, store):
    before = cas("ls", "--json").json()
    store.close()
    for p in store.root.glob("index.sqlite*"):
        p.unlink()
    assert cas("ls", "--json").json() == before


def test_large_random_object_round_trip(store, cas, tmp_path):
    data = random_bytes(2 * 1024 * 1024 + 3)
    (tmp_path / "r").write_bytes(data)
    cas("add", "r")
    assert cas("cat", sha256(data)[:8]).stdout_bytes == data
