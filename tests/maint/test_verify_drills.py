"""Corruption drills: damage a store one way at a time; ``cas verify`` must name the problem
with the right kind and id, exit 1, and delete nothing."""

from __future__ import annotations

import io
import os
import sqlite3

import pytest

from casstore.records import ImportRecord
from casstore.store import Store
from tests._helpers import check_store, sha256
from tests.maint._maint import (
    HOUR,
    Built,
    age,
    flip_byte,
    kinds_of,
    listing,
    verify_problems,
    writable,
)


def drill(cas, built: Built) -> list[tuple[str, str, str]]:
    """Verify a damaged store: exit 1, and not one file removed or changed."""
    before = listing(built.root)
    code, problems = verify_problems(cas)
    assert code == 1, problems
    assert problems
    assert listing(built.root) == before, "verify changed or deleted files"
    return problems


def test_the_built_store_is_clean(cas, built):
    """The baseline every drill starts from: no problem at all."""
    code, problems = verify_problems(cas)
    assert (code, problems) == (0, [])
    check_store(built.root)


def test_flipped_byte_in_a_raw_object(cas, built):
    flip_byte(built.file(built.raw))
    problems = drill(cas, built)
    assert kinds_of(problems, built.raw) == {"corrupt-object"}
    [detail] = [d for k, i, d in problems if i == built.raw]
    assert "hash" in detail
    # only the damaged object is named
    assert {i for _, i, _ in problems} == {built.raw}


def test_flipped_byte_in_a_zstd_object(cas, built):
    path = built.file(built.zst)
    assert path.name.endswith(".zst")
    flip_byte(path)
    problems = drill(cas, built)
    assert "corrupt-object" in kinds_of(problems, built.zst)
    assert {i for _, i, _ in problems} == {built.zst}


@pytest.mark.parametrize("which", ["raw", "zst"])
def test_truncated_object(cas, built, which):
    oid = getattr(built, which)
    path = writable(built.file(oid))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    problems = drill(cas, built)
    assert "corrupt-object" in kinds_of(problems, oid)
    assert {i for _, i, _ in problems} == {oid}


def test_deleted_object_with_its_records_left(cas, built):
    records = built.record_files(built.raw)
    assert records
    built.file(built.raw).unlink()
    problems = drill(cas, built)
    assert "corrupt-object" in kinds_of(problems, built.raw)
    details = [d for k, i, d in problems if (k, i) == ("corrupt-object", built.raw)]
    assert any("missing" in d for d in details), details
    # its child now names a parent that is not here
    assert "missing-parent" in kinds_of(problems, built.derived)
    assert all(r.exists() for r in records)


def test_edited_record(cas, built):
    [record] = built.record_files(built.small)
    data = writable(record).read_bytes()
    assert b'"size":6' in data
    record.write_bytes(data.replace(b'"size":6', b'"size":7'))  # valid JSON, wrong name
    problems = drill(cas, built)
    rid = record.name.removesuffix(".json")
    assert kinds_of(problems, rid) == {"bad-record"}
    assert [i for _, i, _ in problems] == [rid]


@pytest.mark.parametrize("new_name", [sha256(b"another name"), "not-a-record-id"])
def test_renamed_record(cas, built, new_name):
    [record] = built.record_files(built.small)
    record.rename(record.with_name(f"{new_name}.json"))
    problems = drill(cas, built)
    assert kinds_of(problems, new_name) == {"bad-record"}
    assert record.with_name(f"{new_name}.json").exists()


def test_record_with_a_wrong_size(cas, built):
    with Store.open(built.root) as store:
        stored = store.objects.write(io.BytesIO(built.data[built.small]))
        assert not stored.new
        lying = ImportRecord(
            object=stored.id, size=stored.size + 1, blake3=stored.blake3, path="/lies"
        )
        store.record_object(stored, lying)
    problems = drill(cas, built)
    assert {(k, i) for k, i, _ in problems} == {("size-mismatch", built.small)}
    [detail] = [d for _, _, d in problems]
    assert "7" in detail and "6" in detail


def test_ref_to_a_missing_object(cas, built):
    ghost = sha256(b"never stored")
    (built.root / "refs" / "tags" / "ghost").write_text(ghost + "\n")
    problems = drill(cas, built)
    assert "dangling-ref" in kinds_of(problems, "tags/ghost")
    assert any(ghost in d for k, i, d in problems if i == "tags/ghost")


@pytest.mark.parametrize(
    "line",
    [
        "{{not json",
        '{"time": "2024-01-01T00:00:00Z", "ref": "tags/raw", "old": nul',  # cut short
        "42",  # JSON, but not an entry
        '{"ref": "tags/raw", "action": "set", "new": "not-an-object-id"}',
        '{"ref": "tags/raw", "action": "set", "new": "' + sha256(b"gone") + '"}',
    ],
    ids=["garbage", "truncated", "json-number", "bad-id", "missing-object"],
)
def test_corrupt_reflog_line(cas, built, line):
    log = built.root / "logs" / "refs" / "tags%2Fraw"
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    log.write_text("\n".join([lines[0], line, lines[1]]) + "\n")
    problems = drill(cas, built)
    assert kinds_of(problems, "tags/raw") == {"dangling-ref"}
    assert any("reflog line 2" in d for _, i, d in problems if i == "tags/raw"), problems


def test_deleted_index_is_rebuilt_silently(cas, built):
    for suffix in ("", "-wal", "-shm"):
        (built.root / f"index.sqlite{suffix}").unlink(missing_ok=True)
    code, problems = verify_problems(cas)
    assert (code, problems) == (0, [])
    assert (built.root / "index.sqlite").exists()
    check_store(built.root)  # and the rebuilt index agrees with the files


def test_damaged_index_is_reported(cas, built):
    index = built.root / "index.sqlite"
    index.write_bytes(b"this is not a database " * 200)
    before = listing(built.root, volatile=True)
    result = cas("verify")
    assert result.exit_code == 1, result
    assert any(line.startswith("index-mismatch") for line in result.lines), result
    assert result.lines[-1].startswith("verified "), result
    # reported, not repaired: the damaged file is still there as it was
    assert {k: v for k, v in listing(built.root, volatile=True).items() if k != "lock"} == {
        k: v for k, v in before.items() if k != "lock"
    }


def test_damaged_index_repaired_on_request(cas, built):
    (built.root / "index.sqlite").write_bytes(b"this is not a database " * 200)
    repaired = cas("verify", "--repair-index", "--json")
    assert repaired.json()["index_rebuilt"] is True, repaired
    assert repaired.exit_code == 0, repaired
    code, problems = verify_problems(cas)
    assert (code, problems) == (0, [])
    check_store(built.root)


def test_object_row_missing_from_the_index(cas, built):
    db = sqlite3.connect(built.root / "index.sqlite")
    with db:
        assert db.execute("DELETE FROM objects WHERE id=?", (built.zst,)).rowcount == 1
    db.close()
    problems = drill(cas, built)
    assert {(k, i) for k, i, _ in problems} == {("index-mismatch", built.zst)}
    assert cas("verify", "--repair-index").exit_code == 0
    assert verify_problems(cas) == (0, [])


def test_stray_tmp_files(cas, built):
    old = built.root / "tmp" / "obj-123-abandoned"
    young = built.root / "tmp" / "obj-456-in-flight"
    old.write_bytes(b"half an object")
    young.write_bytes(b"being written")
    age(old, 2 * HOUR)
    age(young, 10 * 60)
    problems = drill(cas, built)
    assert [(k, i) for k, i, _ in problems] == [("stray-tmp", "tmp/obj-123-abandoned")]
    assert old.exists() and young.exists()


def test_young_tmp_file_alone_is_not_a_problem(cas, built):
    young = built.root / "tmp" / "obj-456-in-flight"
    young.write_bytes(b"being written")
    age(young, HOUR - 60)
    assert verify_problems(cas) == (0, [])
    assert young.exists()


def test_every_file_is_still_there_after_many_drills(cas, built):
    """Several kinds of damage at once: each is named, nothing is removed."""
    flip_byte(built.file(built.top))
    [record] = built.record_files(built.small)
    record.rename(record.with_name(f"{sha256(b'x')}.json"))
    (built.root / "refs" / "tags" / "ghost").write_text(sha256(b"nothing") + "\n")
    stray = built.root / "tmp" / "w-1-old"
    stray.write_bytes(b"")
    age(stray, 3 * HOUR)
    files_before = set(listing(built.root))
    problems = drill(cas, built)
    assert {(k, i) for k, i, _ in problems} >= {
        ("corrupt-object", built.top),
        ("bad-record", sha256(b"x")),
        ("dangling-ref", "tags/ghost"),
        ("stray-tmp", "tmp/w-1-old"),
    }
    assert set(listing(built.root)) == files_before
    assert os.path.exists(stray)
