import getpass
import io
import os
import socket
import time
from pathlib import Path

import blake3
import pytest

from casstore import AddResult, ObjectInfo, Store
from casstore._version import __version__
from casstore.errors import (
    AmbiguousPrefix,
    InputError,
    InvalidRefName,
    ObjectNotFound,
    RefConflict,
    RefNotFound,
    StoreNotFound,
    UsageError,
)
from casstore.store import expand_inputs, find_store, locate_store
from tests._helpers import check_store, colliding_contents, json_lines, sha256


def files_in(d):
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())


@pytest.fixture
def f(tmp_path):
    """Write a file under tmp_path/in and return its path."""

    def make(name: str, data: bytes):
        p = tmp_path / "in" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return p

    return make


# ---- init / open / discovery ------------------------------------------------------------


def test_init_makes_the_layout(tmp_path):
    with Store.init(tmp_path / "proj") as s:
        root = tmp_path / "proj" / ".casstore"
        assert s.root == root
        for d in ("objects", "refs", "logs/refs", "tmp"):
            assert (root / d).is_dir(), d
        for name in ("config.toml", "lock", "index.sqlite"):
            assert (root / name).is_file(), name


def test_init_accepts_the_casstore_directory_itself(tmp_path):
    with Store.init(tmp_path / ".casstore") as s:
        assert s.root == tmp_path / ".casstore"
    assert not (tmp_path / ".casstore" / ".casstore").exists()


def test_init_twice_is_refused(tmp_path):
    Store.init(tmp_path).close()
    with pytest.raises(UsageError, match="already exists"):
        Store.init(tmp_path)


def test_init_refuses_an_unknown_policy(tmp_path):
    with pytest.raises(UsageError):
        Store.init(tmp_path, compression="brotli")
    assert not (tmp_path / ".casstore").exists()


@pytest.mark.parametrize("which", ["parent", "store"])
def test_open_accepts_the_store_or_its_parent(tmp_path, which):
    Store.init(tmp_path / "p").close()
    path = tmp_path / "p" if which == "parent" else tmp_path / "p" / ".casstore"
    with Store.open(path) as s:
        assert s.root == tmp_path / "p" / ".casstore"
    assert locate_store(path) == tmp_path / "p" / ".casstore"


def test_open_relative_path_gives_an_absolute_root(tmp_path):
    Store.init(tmp_path / "p").close()
    with Store.open("p") as s:
        assert s.root.is_absolute()
        assert s.root == tmp_path / "p" / ".casstore"


def test_open_where_there_is_no_store_says_how_to_make_one(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreNotFound) as info:
        Store.open(tmp_path / "empty")
    assert f"cas init {tmp_path / 'empty'}" in str(info.value)


def test_a_directory_named_casstore_without_config_is_not_a_store(tmp_path):
    (tmp_path / ".casstore" / "objects").mkdir(parents=True)
    with pytest.raises(StoreNotFound):
        Store.open(tmp_path)


def test_discover_searches_upwards(tmp_path):
    Store.init(tmp_path / "proj").close()
    deep = tmp_path / "proj" / "a" / "b" / "c"
    deep.mkdir(parents=True)
    with Store.discover(deep) as s:
        assert s.root == tmp_path / "proj" / ".casstore"
    os.chdir(deep)
    with Store.discover() as s:
        assert s.root == tmp_path / "proj" / ".casstore"


def test_discover_takes_the_nearest_store(tmp_path):
    Store.init(tmp_path / "outer").close()
    Store.init(tmp_path / "outer" / "inner").close()
    assert find_store(tmp_path / "outer" / "inner" / "x") == (
        tmp_path / "outer" / "inner" / ".casstore"
    )


def test_discover_outside_any_store_says_how_to_make_one(tmp_path):
    with pytest.raises(StoreNotFound) as info:
        Store.discover(tmp_path)
    msg = str(info.value)
    assert "cas init" in msg and "--store" in msg and "CAS_STORE" in msg


def test_a_store_without_tmp_dir_recreates_it(tmp_path):
    Store.init(tmp_path).close()
    (tmp_path / ".casstore" / "tmp").rmdir()
    with Store.open(tmp_path) as s:
        (tmp_path / "x").write_bytes(b"x")
        assert s.add(tmp_path / "x").id == sha256(b"x")


# ---- add ---------------------------------------------------------------------------------


def test_add_returns_what_was_stored_and_records_provenance(store, f):
    data = json_lines(200_000)
    p = f("dump.jsonl", data)
    result = store.add(p, source_id="systems", dataset="daily")
    assert isinstance(result, AddResult)
    assert result.id == sha256(data)
    assert result.path == str(p)
    assert result.size == len(data)
    assert result.compression == "zstd"
    assert result.stored_size < len(data)
    assert result.new_object and result.new_record
    [(rid, rec)] = store.records(result.id)
    assert rid == result.record_id
    assert rec.type == "import"
    assert rec.object == result.id
    assert rec.size == len(data)
    assert rec.blake3 == blake3.blake3(data).hexdigest()
    assert rec.parents == ()
    assert rec.source_id == "systems" and rec.dataset == "daily"
    assert rec.path == str(p.absolute())
    assert rec.producer.name == "cas" and rec.producer.version == __version__
    assert rec.user == getpass.getuser() and rec.host == socket.gethostname()
    assert store.read(result.id) == data
    check_store(store.root)


def test_add_a_relative_path_records_the_absolute_one(store, f, tmp_path):
    f("rel.txt", b"relative\n")
    result = store.add("in/rel.txt")
    assert result.path == "in/rel.txt"
    assert store.records(result.id)[0][1].path == str(tmp_path / "in" / "rel.txt")


def test_add_a_stream(store):
    result = store.add(io.BytesIO(b"from a stream"))
    assert result.id == sha256(b"from a stream")
    assert result.path == "-"
    assert store.records(result.id)[0][1].path is None


def test_same_bytes_added_twice_are_stored_once_with_one_record(store, f):
    p = f("x", b"twice")
    first = store.add(p)
    second = store.add(p)
    assert second.id == first.id
    assert (second.new_object, second.new_record) == (False, False)
    assert second.record_id == first.record_id
    assert len(store.records(first.id)) == 1
    assert [o.id for o in store.list_objects()] == [first.id]
    check_store(store.root)


def test_same_bytes_from_two_paths_are_one_object_with_two_records(store, f):
    a = store.add(f("a", b"same"))
    b = store.add(f("b", b"same"))
    assert a.id == b.id and b.new_object is False and b.new_record is True
    assert {r.path for _, r in store.records(a.id)} == {str(f("a", b"same")), str(f("b", b"same"))}


def test_add_with_parents_records_a_derivation(store, f):
    p1 = store.add(f("p1", b"parent one"))
    p2 = store.add(f("p2", b"parent two"))
    store.set_ref("tags/p2", p2.id)
    child = store.add(
        f("child", b"child"),
        parents=[p1.id[:8], "p2", p1.id],  # prefix, ref name, full id (a duplicate)
        transform="join",
        params={"on": "id", "how": "left"},
    )
    [(_, rec)] = store.records(child.id)
    assert rec.type == "derive"
    assert rec.parents == (p1.id, p2.id)
    assert rec.transform == "join"
    assert rec.params == {"on": "id", "how": "left"}
    assert store.index.children(p1.id) == [child.id]
    assert store.index.children(p2.id) == [child.id]


def test_a_missing_parent_stores_nothing(store, f, tmp_path):
    before = files_in(store.root / "objects")
    with pytest.raises(ObjectNotFound):
        store.add(f("orphan", b"orphan"), parents=[sha256(b"never stored")])
    with pytest.raises(ObjectNotFound):
        store.add(f("orphan", b"orphan"), parents=["no-such-ref"])
    assert files_in(store.root / "objects") == before
    assert files_in(store.root / "tmp") == []
    assert store.list_objects() == []


@pytest.mark.parametrize("kw", [{"transform": "t"}, {"params": {"k": "v"}}])
def test_transform_or_params_without_parent_is_a_usage_error(store, f, kw):
    with pytest.raises(UsageError) as info:
        store.add(f("x", b"x"), **kw)
    assert info.value.exit_code == 2
    assert files_in(store.root / "objects") == []


def test_add_validates_the_source_id(store, f):
    with pytest.raises(InvalidRefName, match="source id"):
        store.add(f("x", b"x"), source_id="../../etc")
    assert files_in(store.root / "objects") == []


def test_add_with_a_ref_moves_it(store, f):
    a = store.add(f("a", b"a"), ref="sources/s")
    b = store.add(f("b", b"b"), ref="sources/s")
    assert store.refs.get("sources/s") == b.id
    assert [(e.old, e.new) for e in store.ref_log("sources/s")] == [(None, a.id), (a.id, b.id)]


def test_a_ref_names_exactly_one_file(store, f):
    with pytest.raises(UsageError):
        list(store.add_many([f("a", b"a"), f("b", b"b")], ref="x"))
    assert store.refs.get("x") is None


def test_add_many_yields_in_order(store, f):
    paths = [f(f"n{i}", f"{i}".encode()) for i in range(10)]
    assert [r.id for r in store.add_many(paths)] == [sha256(f"{i}".encode()) for i in range(10)]


def test_add_many_mixes_large_and_small_files_in_input_order(store, f):
    # files of 64 KiB and more go to threads, smaller ones are stored inline
    datas = [os.urandom(70_000 if i % 3 else 500) + bytes([i]) for i in range(12)]
    paths = [f(f"m{i}", d) for i, d in enumerate(datas)]
    results = list(store.add_many(paths))
    assert [r.id for r in results] == [sha256(d) for d in datas]
    created = [store.records(r.id)[0][1].created for r in results]
    assert created == sorted(created)  # taken in input order, whichever thread stored it


def test_add_many_indexes_what_was_stored_before_a_failing_input(store, f, tmp_path):
    big = [f(f"big{i}", os.urandom(100_000)) for i in range(3)]
    inputs = [big[0], big[1], str(tmp_path / "missing"), big[2]]
    with pytest.raises(InputError, match="missing"):
        list(store.add_many(inputs))
    for path in big[:2]:
        oid = sha256(Path(path).read_bytes())
        assert store.resolve(oid) == oid
        assert store.records(oid)
    later = sha256(Path(big[2]).read_bytes())
    assert not store.objects.exists(later)  # inputs after the failure are not started
    check_store(store.root)  # and the index agrees with the files: the two were indexed


def test_add_a_missing_file(store):
    with pytest.raises(InputError, match="nope"):
        store.add("nope")


def test_expand_inputs(tmp_path, f):
    f("d/b.txt", b"b")
    f("d/a.txt", b"a")
    f("d/sub/c.txt", b"c")
    f("d/.casstore/objects/x", b"never")
    got = list(expand_inputs(["-", "in/d", "in/d/a.txt"]))
    assert got == [
        "-",
        os.path.join("in/d", "a.txt"),
        os.path.join("in/d", "b.txt"),
        os.path.join("in/d/sub", "c.txt"),
        "in/d/a.txt",
    ]
    with pytest.raises(InputError, match="no such file"):
        list(expand_inputs(["in/missing"]))


def test_expand_inputs_follows_file_links_but_not_directory_links(tmp_path, f, monkeypatch):
    f("t/a.txt", b"a")
    f("t/z/deep.txt", b"d")
    f("elsewhere/e.txt", b"e")
    os.symlink(tmp_path / "in/t/a.txt", tmp_path / "in/t/b-link.txt")
    os.symlink(tmp_path / "in/elsewhere", tmp_path / "in/t/c-dirlink")
    os.symlink(tmp_path / "in/nowhere", tmp_path / "in/t/d-broken")
    monkeypatch.chdir(tmp_path)
    assert list(expand_inputs(["in/t"])) == [
        os.path.join("in/t", "a.txt"),
        os.path.join("in/t", "b-link.txt"),
        os.path.join("in/t/z", "deep.txt"),
    ]


def test_expand_inputs_refuses_an_unlistable_directory(tmp_path, f, monkeypatch):
    # Tests may run as root, which reads anything: the refusal is simulated.
    f("t/open/o.txt", b"o")
    f("t/locked/l.txt", b"l")
    monkeypatch.chdir(tmp_path)
    real = os.scandir

    def scandir(path):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(InputError, match=r"^in/t/locked: Permission denied$"):
        list(expand_inputs(["in/t"]))


def test_expand_inputs_refuses_an_unreadable_file(tmp_path, f, monkeypatch):
    f("t/a.txt", b"a")
    f("t/b.txt", b"b")
    monkeypatch.chdir(tmp_path)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: not p.endswith("b.txt") and real(p, m))
    with pytest.raises(InputError, match=r"b\.txt: Permission denied"):
        list(expand_inputs(["in/t"]))
    with pytest.raises(InputError, match=r"b\.txt: Permission denied"):
        list(expand_inputs(["in/t/a.txt", "in/t/b.txt"]))


def test_expand_inputs_says_why_a_path_is_missing(tmp_path, f, monkeypatch):
    f("a.txt", b"a")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"^in/a\.txt/x: Not a directory$"):
        list(expand_inputs(["in/a.txt/x"]))
    with pytest.raises(InputError, match=r"^'': no such file or directory$"):
        list(expand_inputs([""]))


def test_expand_inputs_refuses_the_store_itself(store, tmp_path, f):
    f("a.txt", b"a")
    for inside in (store.root, store.root / "config.toml", store.root / "objects"):
        with pytest.raises(InputError, match="inside the store itself"):
            list(expand_inputs([str(tmp_path / "in"), str(inside)], store.root))
    # a directory holding the store is fine: the store's own directory is skipped
    assert list(expand_inputs([str(tmp_path / "in")], store.root)) == [
        str(tmp_path / "in" / "a.txt")
    ]


def test_add_many_reports_what_was_stored_before_an_error(store, f):
    a, b = f("a", b"first"), f("b", b"second")
    got = []
    with pytest.raises(InputError, match="gone"):
        for result in store.add_many([a, b, f("c", b"x").parent / "gone"]):
            got.append(result)
    assert [r.path for r in got] == [str(a), str(b)]
    assert [o.id for o in store.list_objects()] == [r.id for r in got]


def test_add_many_reports_only_the_inputs_before_a_failure(store, f, monkeypatch):
    """A later input finished in flight is stored and indexed, but not reported."""
    first = f("a0", b"small")
    failing = f("A", json_lines(200_000, seed=1))
    after = f("B", json_lines(200_000, seed=2))  # both >= 64 KiB: stored in threads
    real = store._add_one

    def add_one(src, *args, **kwargs):
        if str(src).endswith("/A"):
            time.sleep(0.3)  # B, in the other thread, is done by then
            raise InputError("A: Input/output error")
        return real(src, *args, **kwargs)

    monkeypatch.setattr(store, "_add_one", add_one)
    got = []
    with pytest.raises(InputError, match="Input/output error"):
        for result in store.add_many([first, failing, after]):
            got.append(result.path)
    assert got == [str(first)]
    assert {o.id for o in store.list_objects()} == {
        sha256(first.read_bytes()),
        sha256(after.read_bytes()),
    }


def test_expand_inputs_skips_the_store_under_any_name_and_links_into_it(tmp_path, f):
    f("a.txt", b"a")
    with Store.init(tmp_path / "in" / "mystore") as s:  # (its directory: mystore/.casstore)
        root = s.root
    renamed = tmp_path / "in" / "kept"
    root.rename(renamed)
    os.symlink(renamed / "config.toml", tmp_path / "in" / "cfg-link")
    os.symlink("loop", tmp_path / "in" / "loop")  # a link to itself: left out, as a broken one
    got = list(expand_inputs([str(tmp_path / "in")], renamed))
    assert got == [str(tmp_path / "in" / "a.txt")]


def test_sample_with_a_clashing_ref_stores_nothing(store, f):
    base = store.add(f("lines.jsonl", json_lines(2_000)))
    store.set_ref("tags/v/1", base.id)
    before = files_in(store.root / "objects")
    with pytest.raises(RefConflict, match="below"):
        store.sample(base.id, regime="head", n=5, ref="tags/v")
    assert files_in(store.root / "objects") == before


def test_add_with_a_clashing_ref_stores_nothing(store, f):
    base = store.add(f("base", b"base"))
    store.set_ref("tags/a/b", base.id)
    before = files_in(store.root / "objects")
    for name, where in (("tags/a", "below"), ("tags/a/b/c", "above")):
        with pytest.raises(RefConflict, match=where):
            store.add(f("new", b"new bytes"), ref=name)
    assert files_in(store.root / "objects") == before
    assert store.refs.items() == {"tags/a/b": base.id}


def test_init_over_a_file_is_a_usage_error(tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / ".casstore").write_text("not a store")
    with pytest.raises(UsageError, match="is not a directory"):
        Store.init(tmp_path / "proj")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="file is not a directory"):
        Store.init(tmp_path / "file" / "sub")


# ---- resolve ----------------------------------------------------------------------------


def test_resolve_full_id_and_prefixes(store, f):
    r = store.add(f("x", b"resolve me"))
    assert store.resolve(r.id) == r.id
    assert store.resolve(r.id[:4]) == r.id
    assert store.resolve(r.id[:10]) == r.id
    assert store.resolve(r.id[:10].upper()) == r.id
    with pytest.raises(ObjectNotFound):
        store.resolve(r.id[:3])  # too short to be a prefix
    with pytest.raises(ObjectNotFound):
        store.resolve(sha256(b"absent"))


def test_ambiguous_prefix_lists_the_candidates(store, f):
    one, two = colliding_contents(4)
    a = store.add(f("one", one)).id
    b = store.add(f("two", two)).id
    assert a[:4] == b[:4]
    with pytest.raises(AmbiguousPrefix) as info:
        store.resolve(a[:4])
    assert sorted(info.value.candidates) == sorted([a, b])
    assert a[:12] in str(info.value) and b[:12] in str(info.value)
    assert store.resolve(a[:12]) == a  # a longer prefix is unique


def test_ref_search_order(store, f):
    ids = {k: store.add(f(k, k.encode())).id for k in ("tag", "source", "sample", "bare")}
    store.set_ref("x", ids["bare"])
    assert store.resolve("x") == ids["bare"]
    store.set_ref("samples/x", ids["sample"])
    assert store.resolve("x") == ids["sample"]
    store.set_ref("sources/x", ids["source"])
    assert store.resolve("x") == ids["source"]
    store.set_ref("tags/x", ids["tag"])
    assert store.resolve("x") == ids["tag"]
    assert store.resolve("samples/x") == ids["sample"]
    assert store.get_ref("x").name == "tags/x"
    store.delete_ref("tags/x")
    assert store.resolve("x") == ids["source"]


def test_a_ref_named_like_a_prefix_wins(store, f):
    a = store.add(f("a", b"aaa"))
    b = store.add(f("b", b"bbb"))
    store.set_ref(f"tags/{b.id[:6]}", a.id)
    assert store.resolve(b.id[:6]) == a.id


@pytest.mark.parametrize("spec", ["no-such", "tags/none", "../x", "a b", "zzzz"])
def test_resolve_unknown_names(store, spec):
    with pytest.raises(ObjectNotFound) as info:
        store.resolve(spec)
    assert repr(spec) in str(info.value)


# ---- reading, show, refs ------------------------------------------------------------------


def test_cat_open_read(store, f):
    data = json_lines(3 * 1024 * 1024)
    r = store.add(f("big", data))
    out = io.BytesIO()
    assert store.cat(r.id, out) == len(data)
    assert out.getvalue() == data
    with store.open_object(r.id[:8]) as fh:
        assert fh.read() == data


def test_show(store, f):
    data = json_lines(100_000)
    r = store.add(f("s", data), dataset="d")
    store.set_ref("tags/s", r.id)
    store.add(f("s2", data))
    info = store.show("s")
    assert isinstance(info, ObjectInfo)
    assert info.id == r.id
    assert info.size == len(data)
    assert (
        info.stored_size == (store.root / "objects" / r.id[:2] / (r.id[2:] + ".zst")).stat().st_size
    )
    assert info.compression == "zstd"
    assert info.refs == ["tags/s"]
    assert len(info.records) == 2
    assert info.records[0].id == r.record_id
    assert info.records[0].record["dataset"] == "d"


def test_set_ref_needs_an_existing_object(store):
    with pytest.raises(ObjectNotFound):
        store.set_ref("tags/x", sha256(b"absent"))
    with pytest.raises(InvalidRefName):
        store.set_ref("../x", sha256(b"absent"))
    assert store.list_refs() == []


def test_set_ref_compare_and_swap(store, f):
    a = store.add(f("a", b"a")).id
    b = store.add(f("b", b"b")).id
    store.set_ref("x", a, expected=None)
    with pytest.raises(RefConflict):
        store.set_ref("x", b, expected=None)
    store.set_ref("x", b, expected=a)
    assert store.get_ref("x").object == b


def test_refs_listing_and_logs(store, f):
    a = store.add(f("a", b"a")).id
    store.set_ref("tags/v1", a)
    store.set_ref("sources/s", a)
    assert [(r.name, r.object) for r in store.list_refs()] == [("sources/s", a), ("tags/v1", a)]
    assert [r.name for r in store.list_refs("tags/")] == ["tags/v1"]
    store.delete_ref("tags/v1")
    assert [e.action for e in store.ref_log("tags/v1")] == ["set", "delete"]
    with pytest.raises(RefNotFound):
        store.get_ref("v1")
    with pytest.raises(RefNotFound):
        store.ref_log("never")
    with pytest.raises(RefNotFound):
        store.delete_ref("tags/v1")
