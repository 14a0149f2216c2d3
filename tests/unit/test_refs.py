import getpass
import socket

import pytest

from casstore.errors import (
    InvalidObjectId,
    InvalidRefName,
    RefConflict,
    RefError,
    RefNotFound,
)
from casstore.refs import RefStore, check_ref_name
from tests._helpers import sha256

A, B, C = sha256(b"a"), sha256(b"b"), sha256(b"c")

VALID = [
    "x",
    "sources/systems",
    "tags/v1",
    "tags/v1.0.2",
    "samples/systems/head-100",
    "a/b/c",
    "A-Z_a.z-0_9",
    "a" * 200,
    "/".join(["s"] * 50),
]
INVALID = [
    "",
    "../x",
    "..",
    "a/../b",
    "a/..",
    "/x",
    "x/",
    "a//b",
    ".hidden",
    "a/.b",
    ".",
    "x.lock",
    "a/x.lock/b",
    "a/b c",
    "tab\tx",
    "new\nline",
    "back\\slash",
    "colon:x",
    "star*",
    "café",
    "日本",
    "ｆｕｌｌｗｉｄｔｈ",
    "a" * 201,
    "/".join(["abcdefgh"] * 120),  # over 1024 characters
]


@pytest.mark.parametrize("name", VALID)
def test_valid_names(name):
    assert check_ref_name(name) == name


@pytest.mark.parametrize("name", INVALID)
def test_invalid_names(name):
    with pytest.raises(InvalidRefName) as info:
        check_ref_name(name)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, RefError)
    assert str(info.value).startswith("invalid ref name")


def test_source_ids_are_named_in_the_message():
    with pytest.raises(InvalidRefName, match="invalid source id"):
        check_ref_name("../etc", what="source id")


@pytest.fixture
def refs(tmp_path):
    (tmp_path / "refs").mkdir()
    return RefStore(tmp_path, lock_timeout=2)


def all_files(tmp_path):
    return sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("name", INVALID)
def test_invalid_names_never_touch_the_disk(refs, tmp_path, name):
    before = all_files(tmp_path)
    with pytest.raises(InvalidRefName):
        refs.set(name, A)
    with pytest.raises(InvalidRefName):
        refs.get(name)
    with pytest.raises(InvalidRefName):
        refs.delete(name)
    assert all_files(tmp_path) == before


def test_set_get_and_the_file_format(refs, tmp_path):
    update = refs.set("sources/systems", A)
    assert (update.ref, update.old, update.new, update.changed) == (
        "sources/systems",
        None,
        A,
        True,
    )
    assert (tmp_path / "refs" / "sources" / "systems").read_text() == A + "\n"
    assert refs.get("sources/systems") == A
    assert refs.require("sources/systems") == A
    assert refs.get("sources/other") is None
    with pytest.raises(RefNotFound):
        refs.require("sources/other")


def test_move_and_delete(refs, tmp_path):
    refs.set("tags/v1", A)
    update = refs.set("tags/v1", B)
    assert (update.old, update.new, update.changed) == (A, B, True)
    gone = refs.delete("tags/v1")
    assert (gone.old, gone.new) == (B, None)
    assert refs.get("tags/v1") is None
    assert not (tmp_path / "refs" / "tags" / "v1").exists()
    with pytest.raises(RefNotFound):
        refs.delete("tags/v1")


def test_set_to_the_same_value_is_unchanged_and_not_logged(refs):
    refs.set("x", A)
    update = refs.set("x", A)
    assert update.changed is False
    assert len(refs.log("x")) == 1


def test_set_refuses_a_bad_object_id(refs):
    with pytest.raises(InvalidObjectId):
        refs.set("x", "abc")


def test_compare_and_swap(refs):
    refs.set("x", A, expected=None)  # must not exist yet: it does not
    with pytest.raises(RefConflict, match="expected no ref"):
        refs.set("x", B, expected=None)
    refs.set("x", B, expected=A)
    with pytest.raises(RefConflict) as info:
        refs.set("x", C, expected=A)
    assert A[:12] in str(info.value) and B[:12] in str(info.value)
    assert refs.get("x") == B
    assert [e.new for e in refs.log("x")] == [A, B]  # the lost race left no entry
    with pytest.raises(RefConflict):
        refs.delete("x", expected=A)
    assert refs.get("x") == B
    refs.delete("x", expected=B)
    assert refs.get("x") is None


def test_reflog_records_every_move(refs):
    refs.set("tags/v1", A, message="first")
    refs.set("tags/v1", B)
    refs.record_event("tags/v1", "fetch-unchanged", details={"etag": "W/1"})
    refs.delete("tags/v1", message="bye")
    log = refs.log("tags/v1")
    assert [(e.action, e.old, e.new) for e in log] == [
        ("set", None, A),
        ("set", A, B),
        ("fetch-unchanged", B, B),
        ("delete", B, None),
    ]
    assert log[0].message == "first"
    assert log[2].details == {"etag": "W/1"}
    assert log[3].message == "bye"
    assert all(e.ref == "tags/v1" for e in log)
    assert all(e.user == getpass.getuser() and e.host == socket.gethostname() for e in log)
    assert [e.time for e in log] == sorted(e.time for e in log)


def test_removed_ref_keeps_its_reflog(refs, tmp_path):
    refs.set("samples/s/head", A)
    refs.delete("samples/s/head")
    assert refs.get("samples/s/head") is None
    assert list(refs.names()) == []
    assert [e.new for e in refs.log("samples/s/head")] == [A, None]
    assert "samples/s/head" in refs.logged_names()
    assert (tmp_path / "logs" / "refs" / "samples%2Fs%2Fhead").is_file()


def test_reflog_skips_corrupt_lines(refs, tmp_path):
    refs.set("x", A)
    with (tmp_path / "logs" / "refs" / "x").open("a") as f:
        f.write("not json\n")
    refs.set("x", B)
    assert [e.new for e in refs.log("x")] == [A, B]


def test_log_of_an_unknown_ref_is_empty(refs):
    assert refs.log("never") == []


def test_names_and_items(refs, tmp_path):
    for name, oid in [("tags/v2", B), ("tags/v1", A), ("sources/s", C), ("a/b/c", A)]:
        refs.set(name, oid)
    (tmp_path / "refs" / "tags" / "v3.lock").write_text("x")
    assert list(refs.names()) == ["a/b/c", "sources/s", "tags/v1", "tags/v2"]
    assert list(refs.names("tags/")) == ["tags/v1", "tags/v2"]
    assert refs.items("tags/") == {"tags/v1": A, "tags/v2": B}


def test_a_corrupt_ref_is_an_error_but_listing_skips_it(refs, tmp_path):
    refs.set("good", A)
    (tmp_path / "refs" / "bad").write_text("not an id\n")
    with pytest.raises(RefError, match="corrupt"):
        refs.get("bad")
    assert refs.items() == {"good": A}


@pytest.mark.parametrize(
    ("first", "second"),
    [("a/b", "a/b/c"), ("a/b/c", "a/b"), ("a/b/c", "a"), ("a", "a/b/c/d")],
)
def test_names_that_clash_with_a_ref_above_or_below(refs, tmp_path, first, second):
    refs.set(first, A)
    with pytest.raises(RefConflict):
        refs.set(second, B)
    assert refs.get(first) == A
    assert refs.get(second) is None
    assert list(refs.names()) == [first]
    assert not list((tmp_path / "refs").rglob("*.lock"))
    assert [e.new for e in refs.log(first)] == [A]
    assert refs.log(second) == []


def test_a_removed_ref_frees_its_directory_for_a_ref_above(refs):
    refs.set("a/b/c", A)
    refs.delete("a/b/c")
    refs.set("a/b", B)
    assert refs.get("a/b") == B


def test_a_removed_nested_ref_frees_every_level_above(refs):
    """After removing a/b/c nothing is named a/...; 'a' must be free again."""
    refs.set("a/b/c", A)
    refs.delete("a/b/c")
    assert list(refs.names()) == []
    refs.set("a", B)
    assert refs.get("a") == B


def test_long_valid_names_keep_a_reflog(refs):
    """Names up to 1024 characters are valid; their reflog must work too."""
    name = "/".join(["a" * 150, "b" * 150])
    refs.set(name, A)
    assert refs.get(name) == A
    assert [e.new for e in refs.log(name)] == [A]


@pytest.mark.parametrize(
    ("existing", "missing"), [("a", "a/b"), ("a", "a/b/c"), ("a/b", "a/b/c/d")]
)
def test_deleting_a_missing_ref_below_an_existing_one_is_ref_not_found(refs, existing, missing):
    refs.set(existing, A)
    with pytest.raises(RefNotFound):
        refs.delete(missing)
    assert refs.get(existing) == A


def test_a_failed_delete_leaves_no_directories_behind(refs, tmp_path):
    with pytest.raises(RefNotFound):
        refs.delete("a/b/c")
    assert list((tmp_path / "refs").iterdir()) == []
    refs.set("a", A)  # nothing may block the name 'a'
    assert refs.get("a") == A


def test_reflog_order_is_the_order_of_moves(tmp_path):
    """A second writer must not move the ref, and log it, between the first's move and log.

    The first writer is paused just as it writes its reflog entry; the second then tries to
    move the ref. Either it must wait for the lock (correct: the entry is written under the
    lock) or, if it gets through, the reflog ends up out of order.
    """
    import threading

    from casstore.errors import LockError

    (tmp_path / "refs").mkdir()
    first = RefStore(tmp_path, lock_timeout=30)
    second = RefStore(tmp_path, lock_timeout=0.3)
    first.set("x", A)
    at_log, go = threading.Event(), threading.Event()
    real_append = first._append
    errors = []

    def paused_append(*args, **kwargs):
        at_log.set()
        go.wait(30)
        real_append(*args, **kwargs)

    first._append = paused_append  # type: ignore[method-assign]

    def move():
        try:
            first.set("x", B)
        except Exception as exc:  # reported below
            errors.append(exc)

    t = threading.Thread(target=move)
    t.start()
    assert at_log.wait(30)
    try:
        second.set("x", C, expected=B)
        got_through = True
    except LockError:
        got_through = False
    go.set()
    t.join(30)
    assert errors == []
    if not got_through:
        second.set("x", C, expected=B)
    log = first.log("x")
    assert [(e.old, e.new) for e in log] == [(None, A), (A, B), (B, C)]
