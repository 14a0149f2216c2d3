"""`cas add`: sha256sum lines, stdin, directories, derivations, --json."""

import shutil
import subprocess

import pytest

from tests._helpers import json_lines, random_bytes, sha256


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_add_prints_sha256sum_lines(store, cas, tmp_path):
    files = {"a.txt": b"alpha\n", "b.bin": random_bytes(5000), "c.jsonl": json_lines(300_000)}
    for name, data in files.items():
        write(tmp_path / name, data)
    result = cas("add", *files)
    assert result.exit_code == 0, result
    assert result.stdout == "".join(f"{sha256(d)}  {n}\n" for n, d in files.items())
    assert result.stderr == ""


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs coreutils sha256sum")
def test_add_output_is_byte_for_byte_what_sha256sum_prints(store, cas, tmp_path):
    names = ["plain.txt", "with space.txt", "new\nline", "back\\slash", "car\rriage", "ünï.txt"]
    for i, name in enumerate(names):
        write(tmp_path / name, f"content {i}\n".encode())
    write(tmp_path / "d" / "deep" / "x", b"x")
    args = [*names, "./plain.txt", "d/deep/x"]
    expected = subprocess.run(["sha256sum", *args], cwd=tmp_path, capture_output=True, check=True)
    result = cas("add", *args)
    assert result.exit_code == 0, result
    assert result.stdout_bytes == expected.stdout


@pytest.mark.parametrize(
    ("name", "line_path"), [("new\nline", "new\\nline"), ("back\\slash", "back\\\\slash")]
)
def test_names_with_newline_or_backslash_are_escaped(store, cas, tmp_path, name, line_path):
    write(tmp_path / name, b"odd name")
    result = cas("add", name)
    assert result.stdout == f"\\{sha256(b'odd name')}  {line_path}\n"
    assert cas("cat", sha256(b"odd name")).stdout_bytes == b"odd name"


def test_dash_reads_stdin(store, cas):
    data = random_bytes(3 * 1024 * 1024 + 5)
    result = cas("add", "-", input=data)
    assert result.exit_code == 0, result
    assert result.stdout == f"{sha256(data)}  -\n"
    assert cas("cat", sha256(data)).stdout_bytes == data


def test_stdin_mixed_with_files(store, cas, tmp_path):
    write(tmp_path / "f", b"file")
    result = cas("add", "f", "-", input=b"stdin")
    assert result.lines == [f"{sha256(b'file')}  f", f"{sha256(b'stdin')}  -"]


def test_a_directory_adds_every_file_below_it(store, cas, tmp_path):
    contents = {
        "d/a.txt": b"a",
        "d/b.txt": b"b",
        "d/sub/c.txt": b"c",
        "d/sub/deeper/e.bin": random_bytes(100),
        "d/sub/dup.txt": b"a",  # same bytes as d/a.txt
        "d/empty": b"",
    }
    for rel, data in contents.items():
        write(tmp_path / rel, data)
    (tmp_path / "d" / "emptydir").mkdir()
    result = cas("add", "d")
    assert result.exit_code == 0, result
    assert sorted(result.lines) == sorted(f"{sha256(d)}  {rel}" for rel, d in contents.items())
    assert len(result.lines) == len(contents)
    listed = cas("ls", "--json").json()
    assert {o["id"] for o in listed} == {sha256(d) for d in contents.values()}


def test_adding_the_store_s_own_directory_skips_the_store(store, cas, tmp_path):
    write(tmp_path / "data" / "x", b"x")
    result = cas("add", ".")
    assert result.exit_code == 0, result
    assert result.lines == [f"{sha256(b'x')}  ./data/x"]


def test_same_file_twice_is_one_object(store, cas, tmp_path):
    write(tmp_path / "f", b"twice")
    first = cas("add", "--json", "f").json()
    second = cas("add", "--json", "f").json()
    assert first[0]["new_object"] is True and second[0]["new_object"] is False
    assert first[0]["record_id"] == second[0]["record_id"]
    assert len(cas("show", "--json", sha256(b"twice")).json()["records"]) == 1


def test_add_json(store, cas, tmp_path):
    data = json_lines(200_000)
    write(tmp_path / "f.jsonl", data)
    doc = cas("add", "--json", "f.jsonl", "-", input=b"in").json()
    assert isinstance(doc, list) and len(doc) == 2
    assert doc[0]["id"] == sha256(data)
    assert doc[0]["path"] == "f.jsonl"
    assert doc[0]["size"] == len(data)
    assert doc[0]["compression"] == "zstd"
    assert doc[0]["stored_size"] < len(data)
    assert doc[1]["path"] == "-" and doc[1]["id"] == sha256(b"in")
    assert set(doc[0]) >= {"id", "path", "size", "stored_size", "compression", "record_id"}


def test_add_records_source_and_dataset(store, cas, tmp_path):
    write(tmp_path / "f", b"sourced")
    cas("add", "--source", "systems", "--dataset", "daily", "f")
    [rec] = cas("show", "--json", sha256(b"sourced")).json()["records"]
    assert rec["record"]["source_id"] == "systems"
    assert rec["record"]["dataset"] == "daily"
    assert rec["record"]["type"] == "import"


def test_add_derived_with_parents_transform_and_params(store, cas, tmp_path):
    write(tmp_path / "p1", b"parent 1")
    write(tmp_path / "p2", b"parent 2")
    write(tmp_path / "child", b"child")
    cas("add", "p1", "p2")
    cas("tag", "second", sha256(b"parent 2"))
    result = cas(
        "add",
        "--parent",
        sha256(b"parent 1")[:6],
        "--parent",
        "second",
        "--transform",
        "merge",
        "--param",
        "how=left",
        "--param",
        "expr=a=b",
        "child",
    )
    assert result.exit_code == 0, result
    assert result.stdout == f"{sha256(b'child')}  child\n"
    [rec] = cas("show", "--json", sha256(b"child")).json()["records"]
    r = rec["record"]
    assert r["type"] == "derive"
    assert r["parents"] == [sha256(b"parent 1"), sha256(b"parent 2")]
    assert r["transform"] == "merge"
    assert r["params"] == {"how": "left", "expr": "a=b"}


def test_a_missing_parent_is_an_error_and_nothing_is_stored(store, cas, tmp_path):
    write(tmp_path / "child", b"child")
    result = cas("add", "--parent", "nosuchref", "child")
    assert result.exit_code == 1
    assert result.stderr == "cas: error: no object or ref matches 'nosuchref'\n"
    assert result.stdout == ""
    assert cas("ls", "--json").json() == []
    assert cas("cat", sha256(b"child")).exit_code == 1


@pytest.mark.parametrize("opts", [["--transform", "t"], ["--param", "k=v"]])
def test_transform_without_parent_is_a_usage_error(store, cas, tmp_path, opts):
    write(tmp_path / "f", b"f")
    result = cas("add", *opts, "f")
    assert result.exit_code == 2
    assert result.stderr.startswith("cas: error: ")
    assert "--parent" in result.stderr
    assert result.stderr.count("\n") == 1
    assert cas("ls", "--json").json() == []


@pytest.mark.parametrize("bad", ["novalue", "=v"])
def test_a_malformed_param_is_a_usage_error(store, cas, tmp_path, bad):
    write(tmp_path / "f", b"f")
    result = cas("add", "--parent", "x", "--param", bad, "f")
    assert result.exit_code == 2
    assert result.stderr.startswith("cas: error: ") and "KEY=VALUE" in result.stderr


def test_add_ref_moves_the_ref(store, cas, tmp_path):
    write(tmp_path / "f", b"ref me")
    cas("add", "--ref", "sources/s", "f")
    assert cas("ref", "show", "sources/s").stdout == sha256(b"ref me") + "\n"


def test_add_ref_with_two_files_is_a_usage_error(store, cas, tmp_path):
    write(tmp_path / "a", b"a")
    write(tmp_path / "b", b"b")
    result = cas("add", "--ref", "x", "a", "b")
    assert result.exit_code == 2
    assert result.stderr.startswith("cas: error: ")
    assert cas("ref", "list", "--json").json() == []


def test_add_a_missing_file(store, cas):
    result = cas("add", "nope.txt")
    assert result.exit_code == 1
    assert result.stderr == "cas: error: nope.txt: no such file or directory\n"
    assert result.stdout == ""


def test_add_with_a_bad_source_id(store, cas, tmp_path):
    write(tmp_path / "f", b"f")
    result = cas("add", "--source", "../etc", "f")
    assert result.exit_code == 2
    assert result.stderr.startswith("cas: error: invalid source id '../etc'")
    assert cas("ls", "--json").json() == []


def test_add_without_files_is_a_usage_error(store, cas):
    result = cas("add")
    assert result.exit_code == 2
    assert result.stderr.startswith("cas: error: Missing argument")
