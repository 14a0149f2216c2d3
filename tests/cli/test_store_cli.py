"""`cas init`, store discovery, `cas index rebuild`, and how errors look."""

import pytest

from casstore.store import Store
from tests._helpers import sha256


def test_init_here(cas, tmp_path):
    result = cas("init")
    assert result.exit_code == 0, result
    assert result.stdout == f"Initialized empty casstore store in {tmp_path / '.casstore'}\n"
    assert (tmp_path / ".casstore" / "config.toml").is_file()


def test_init_dir_json(cas, tmp_path):
    doc = cas("init", "--json", "--compression", "none", "proj").json()
    assert doc == {"root": str(tmp_path / "proj" / ".casstore"), "format": 1, "compression": "none"}
    with Store.open(tmp_path / "proj") as s:
        assert s.config.objects.compression == "none"


def test_init_twice(cas, tmp_path):
    cas("init")
    result = cas("init")
    assert result.exit_code == 2
    assert result.stderr.startswith("cas: error: a store already exists at ")
    assert result.stderr.endswith(".casstore\n")


def test_init_bad_compression_is_a_usage_error(cas, tmp_path):
    result = cas("init", "--compression", "brotli")
    assert result.exit_code == 2
    assert result.stderr.startswith("cas: error: Invalid value for '--compression'")
    assert not (tmp_path / ".casstore").exists()


def test_outside_any_store_the_error_says_how_to_make_one(cas):
    for args in (["ls"], ["cat", "abcd"], ["ref", "list"], ["add", "-"]):
        result = cas(*args, input=b"")
        assert result.exit_code == 1, result
        assert result.stdout == ""
        assert result.stderr == (
            "cas: error: not inside a casstore store (run 'cas init' here,"
            " or pass --store DIR or set CAS_STORE)\n"
        )


@pytest.fixture
def elsewhere(tmp_path):
    """A store in tmp_path/other holding one object; the cwd is a directory without one."""
    with Store.init(tmp_path / "other") as s:
        (tmp_path / "x").write_bytes(b"elsewhere")
        s.add(tmp_path / "x")
    (tmp_path / "cwd").mkdir()
    return tmp_path / "other"


@pytest.mark.parametrize("form", ["parent", "store"])
def test_store_option_accepts_either_directory(cas, elsewhere, form, monkeypatch):
    monkeypatch.chdir(elsewhere.parent / "cwd")
    path = elsewhere if form == "parent" else elsewhere / ".casstore"
    result = cas("--store", path, "cat", sha256(b"elsewhere"))
    assert result.exit_code == 0, result
    assert result.stdout_bytes == b"elsewhere"


@pytest.mark.parametrize("form", ["parent", "store"])
def test_cas_store_env_accepts_either_directory(cas, elsewhere, form, monkeypatch):
    monkeypatch.chdir(elsewhere.parent / "cwd")
    path = elsewhere if form == "parent" else elsewhere / ".casstore"
    result = cas("cat", sha256(b"elsewhere"), env={"CAS_STORE": str(path)})
    assert result.exit_code == 0, result
    assert result.stdout_bytes == b"elsewhere"


def test_store_option_beats_env_and_env_beats_discovery(cas, elsewhere, tmp_path, monkeypatch):
    with Store.init(tmp_path / "cwd") as s:
        (tmp_path / "y").write_bytes(b"local")
        s.add(tmp_path / "y")
    monkeypatch.chdir(tmp_path / "cwd")
    assert cas("ls", "--json").json()[0]["id"] == sha256(b"local")
    env = {"CAS_STORE": str(elsewhere)}
    assert cas("ls", "--json", env=env).json()[0]["id"] == sha256(b"elsewhere")
    got = cas("--store", tmp_path / "cwd", "ls", "--json", env=env).json()
    assert got[0]["id"] == sha256(b"local")


def test_discovery_from_a_subdirectory(cas, tmp_path, monkeypatch):
    cas("init")
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_bytes(b"deep")
    monkeypatch.chdir(tmp_path / "a" / "b")
    assert cas("add", "f").stdout == f"{sha256(b'deep')}  f\n"
    monkeypatch.chdir(tmp_path)
    assert cas("cat", sha256(b"deep")).stdout_bytes == b"deep"


def test_a_store_option_that_is_not_a_store(cas, tmp_path):
    result = cas("--store", tmp_path / "nowhere", "ls")
    assert result.exit_code == 1
    assert result.stderr == (
        f"cas: error: no casstore store at {tmp_path / 'nowhere'}"
        f" (make one with 'cas init {tmp_path / 'nowhere'}')\n"
    )


def test_index_rebuild(store, cas, tmp_path):
    (tmp_path / "p").write_bytes(b"p")
    (tmp_path / "c").write_bytes(b"c")
    cas("add", "p")
    cas("add", "--parent", sha256(b"p"), "c")
    cas("tag", "t", sha256(b"c"))
    result = cas("index", "rebuild")
    assert result.exit_code == 0
    assert result.stdout == "index rebuilt: 2 objects, 2 records, 1 edges, 1 refs\n"
    assert cas("index", "rebuild", "--json").json() == {
        "objects": 2,
        "records": 2,
        "edges": 1,
        "refs": 1,
    }


def test_a_damaged_index_is_one_line_and_rebuild_fixes_it(store, cas, tmp_path):
    (tmp_path / "f").write_bytes(b"f")
    cas("add", "f")
    store.close()
    for p in store.root.glob("index.sqlite*"):
        p.unlink()
    (store.root / "index.sqlite").write_bytes(b"garbage" * 1000)
    broken = cas("ls")
    assert broken.exit_code == 1
    assert broken.stderr.startswith("cas: error: index ")
    assert broken.stderr.rstrip().endswith("run 'cas index rebuild'")
    assert broken.stderr.count("\n") == 1
    assert cas("index", "rebuild").exit_code == 0
    assert [o["id"] for o in cas("ls", "--json").json()] == [sha256(b"f")]


@pytest.mark.parametrize(
    "args",
    [
        ["nosuchcommand"],
        ["ls", "--bogus"],
        ["ref", "nosuch"],
        ["ref", "set", "onlyname"],
        ["cat"],
        ["tag", "x"],
    ],
)
def test_usage_errors_are_one_line_and_exit_2(store, cas, args):
    result = cas(*args)
    assert result.exit_code == 2, result
    assert result.stderr.startswith("cas: error: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_no_traceback_on_an_unexpected_error(store, cas, tmp_path):
    (store.root / "refs" / "broken").write_text("garbage\n")
    result = cas("ref", "show", "broken")
    assert result.exit_code == 1
    assert result.stderr.startswith("cas: error: ")
    assert result.stderr.count("\n") == 1


def test_version(cas):
    from casstore._version import __version__

    result = cas("--version")
    assert result.exit_code == 0
    assert __version__ in result.stdout


@pytest.mark.parametrize("args", [[], ["ref"], ["index"]])
def test_a_group_without_a_command_shows_its_help(cas, args):
    result = cas(*args)
    assert "Commands:" in result.stdout + result.stderr, result
    assert "cas: error: Usage:" not in result.stderr
