"""`Store.derive`: a context manager that records a derived file only when the block succeeds."""

from __future__ import annotations

import io

import pytest

from casstore.errors import InvalidRefName, ObjectNotFound, UsageError
from casstore.store import Store
from tests._helpers import check_store, sha256


@pytest.fixture
def raw(store: Store) -> str:
    return store.add(io.BytesIO(b"3 ly\n5 ly\n"), source_id="stars", ref="sources/stars").id


def test_derive_stores_the_output_with_a_derive_record(store: Store, raw, cas):
    other = store.add(io.BytesIO(b"units table\n")).id
    with store.derive(
        inputs=["sources/stars", other[:8]], transform="normalize", params={"units": "pc", "n": 2}
    ) as out:
        assert out.result is None
        with out.open() as f:
            f.write(b"0.9 pc\n1.5 pc\n")
    assert out.result is not None
    oid = sha256(b"0.9 pc\n1.5 pc\n")
    assert out.result.id == oid
    assert out.result.new_object
    assert store.read(oid) == b"0.9 pc\n1.5 pc\n"
    [(rid, record)] = store.records(oid)
    assert rid == out.result.record_id
    assert record.type == "derive"
    assert record.parents == (raw, other)
    assert record.transform == "normalize"
    assert record.params == {"units": "pc", "n": "2"}
    assert not out.path.exists()  # the working file is gone; the object stays
    assert check_store(store.root)["tmp"] == []
    assert cas("log", oid).lines[0].endswith("normalize n=2 units=pc")
    assert cas("why", oid, "sources/stars").exit_code == 0


def test_derive_can_write_to_the_path(store: Store, raw):
    with store.derive(inputs=[raw], transform="copy") as out:
        out.path.write_bytes(b"by path\n")
    assert out.result is not None
    assert out.result.id == sha256(b"by path\n")
    assert store.read(out.result.id) == b"by path\n"


def test_an_error_in_the_block_propagates_and_stores_nothing(store: Store, raw):
    before = check_store(store.root)
    with pytest.raises(ZeroDivisionError), store.derive(inputs=[raw], transform="bad") as out:
        with out.open() as f:
            f.write(b"half written\n")
        1 / 0  # noqa: B018
    assert out.result is None
    after = check_store(store.root)  # also: tmp/ is empty
    assert set(after["objects"]) == set(before["objects"])
    assert set(after["records"]) == set(before["records"])
    assert sha256(b"half written\n") not in after["objects"]
    assert store.log(raw, children=True).nodes[0].id == raw
    assert len(store.log(raw, children=True).nodes) == 1


def test_ref_moves_the_ref_to_the_output(store: Store, raw):
    with store.derive(inputs=[raw], transform="normalize", ref="tags/clean") as out:
        out.path.write_bytes(b"clean v1\n")
    assert store.refs.get("tags/clean") == out.result.id
    with store.derive(inputs=[raw], transform="normalize", ref="tags/clean") as out2:
        out2.path.write_bytes(b"clean v2\n")
    assert store.refs.get("tags/clean") == sha256(b"clean v2\n")
    assert [(e.old, e.new) for e in store.ref_log("tags/clean")] == [
        (None, sha256(b"clean v1\n")),
        (sha256(b"clean v1\n"), sha256(b"clean v2\n")),
    ]
    assert store.log("tags/clean").nodes[0].refs == ["tags/clean"]


def test_a_failed_block_does_not_move_the_ref(store: Store, raw):
    with pytest.raises(RuntimeError), store.derive(inputs=[raw], transform="t", ref="tags/x") as o:
        o.path.write_bytes(b"never\n")
        raise RuntimeError("boom")
    assert store.refs.get("tags/x") is None


def test_derive_needs_existing_inputs(store: Store):
    with pytest.raises(UsageError), store.derive(inputs=[], transform="t"):
        pass
    before = check_store(store.root)
    with pytest.raises(ObjectNotFound), store.derive(inputs=["tags/missing"], transform="t"):
        pass
    assert check_store(store.root)["objects"] == before["objects"]


def test_a_bad_ref_name_is_refused_before_the_block_runs(store: Store, raw):
    # Refusing it afterwards would leave an object and a derive record behind an error.
    before = check_store(store.root)
    ran = []
    with pytest.raises(InvalidRefName), store.derive(inputs=[raw], transform="t", ref="a..b") as o:
        ran.append(True)
        o.path.write_bytes(b"expensive result\n")
    assert ran == []
    after = check_store(store.root)
    assert set(after["objects"]) == set(before["objects"])
    assert set(after["records"]) == set(before["records"])
