"""``cas verify`` options: --fast, --subset, --max-bytes, --quarantine, --refetch, --against,
--json, and the summary line."""

from __future__ import annotations

import io
import re
import sqlite3

import pytest

from casstore.records import ImportRecord
from casstore.store import Store
from tests._helpers import object_bytes, object_files, random_bytes, sha256
from tests.maint._maint import flip_byte, kinds_of, listing, ok, verify_problems


def verified_at(root) -> dict[str, float]:
    """When each object was last verified, as the store remembers it (in its index)."""
    db = sqlite3.connect(root / "index.sqlite")
    try:
        return dict(db.execute("SELECT id, at FROM verified").fetchall())
    except sqlite3.OperationalError:  # no run has remembered anything yet
        return {}
    finally:
        db.close()


@pytest.fixture
def many(store: Store) -> list[str]:
    """Twelve small imports of equal size, no refs."""
    ids = [store.add(io.BytesIO(b"object %04d\n" % i)).id for i in range(12)]
    store.close()
    return sorted(ids)


# ---- --fast -----------------------------------------------------------------------------


def test_fast_is_clean_on_a_clean_store(cas, built):
    result = ok(cas("verify", "--fast", "--json"))
    report = result.json()
    assert report["method"] == "blake3"
    assert report["problems"] == []
    assert report["objects"] == len(built.data)


@pytest.mark.parametrize("which", ["raw", "zst", "small"])
def test_fast_detects_a_flipped_byte(cas, built, which):
    oid = getattr(built, which)
    flip_byte(built.file(oid), offset=None if which != "small" else 0)
    code, problems = verify_problems(cas, "--fast")
    assert code == 1
    assert "corrupt-object" in kinds_of(problems, oid), problems
    assert {i for _, i, _ in problems} == {oid}


# ---- --subset ---------------------------------------------------------------------------


def test_two_halves_cover_every_object_exactly_once(cas, store, many):
    # exit codes are checked in test_bounded_runs_on_a_clean_store_are_clean
    first = cas("verify", "--subset", "1/2", "--json").json()
    after_first = verified_at(store.root)
    second = cas("verify", "--subset", "2/2", "--json").json()
    after_second = verified_at(store.root)
    half1 = set(after_first)
    # the second run checked what it added or re-stamped
    half2 = {oid for oid, at in after_second.items() if after_first.get(oid) != at}
    assert half1 and half2
    assert half1.isdisjoint(half2)
    assert half1 | half2 == set(many)
    assert first["objects"] + second["objects"] == len(many)
    assert (first["objects"], second["objects"]) == (len(half1), len(half2))


@pytest.mark.parametrize(
    "args", [["--subset", "1/2"], ["--subset", "2/2"], ["--subset", "3/3"], ["--max-bytes", "20"]]
)
def test_bounded_runs_on_a_clean_store_are_clean(cas, built, args):
    """Objects outside the slice or budget were not looked at: they are not problems."""
    # one run only: with --max-bytes each run checks different objects
    result = cas("verify", *args, "--json")
    assert result.json()["problems"] == []
    assert result.exit_code == 0


def test_subset_finds_the_damage_in_its_slice_only(cas, built):
    flip_byte(built.file(built.raw))
    found = []
    for n in (1, 2, 3):
        report = cas("verify", "--subset", f"{n}/3", "--json").json()
        found += [
            p["id"]
            for p in report["problems"]
            if p["kind"] == "corrupt-object" and "hash" in p["detail"]
        ]
    assert found == [built.raw]


@pytest.mark.parametrize("bad", ["0/2", "3/2", "1", "a/b"])
def test_subset_rejects_nonsense(cas, built, bad):
    result = cas("verify", "--subset", bad)
    assert result.exit_code == 2, result
    assert "--subset" in result.stderr


# ---- --max-bytes ------------------------------------------------------------------------


def test_max_bytes_checks_least_recently_verified_first(cas, store, many):
    size = object_files(store.root)[many[0]].stat().st_size
    budget = str(3 * size)  # three objects per run
    first = cas("verify", "--max-bytes", budget, "--json").json()
    run1 = verified_at(store.root)
    second = cas("verify", "--max-bytes", budget, "--json").json()
    run2 = verified_at(store.root)
    checked2 = {oid for oid, at in run2.items() if run1.get(oid) != at}
    assert first["objects"] == second["objects"] == 3
    assert len(run1) == 3 and len(checked2) == 3
    assert set(run1).isdisjoint(checked2), "the second run re-checked what the first did"
    # four runs of three cover all twelve; the fifth starts again with the oldest
    cas("verify", "--max-bytes", budget)
    cas("verify", "--max-bytes", budget)
    run4 = verified_at(store.root)
    assert set(run4) == set(many)
    cas("verify", "--max-bytes", budget)
    run5 = verified_at(store.root)
    assert {oid for oid, at in run5.items() if run4[oid] != at} == set(run1)


def test_max_bytes_budget_is_respected(cas, built):
    report = cas("verify", "--max-bytes", "1", "--json").json()
    assert report["objects"] == 1  # at least one object, however small the budget


# ---- --quarantine and --refetch ---------------------------------------------------------


def test_quarantine_moves_the_corrupt_object_aside(cas, built):
    path = built.file(built.raw)
    flip_byte(path)
    damaged = path.read_bytes()
    records = built.record_files(built.raw)
    before = set(listing(built.root))
    result = cas("verify", "--quarantine")
    assert result.exit_code == 1, result
    assert f"quarantined     {built.raw}" in result.lines
    assert not path.exists()
    assert built.raw not in object_files(built.root)
    moved = [p for p in (built.root / "quarantine").iterdir() if built.raw in p.name]
    assert len(moved) == 1
    assert moved[0].read_bytes() == damaged  # kept as found, for inspection
    assert all(r.exists() for r in records)
    after = set(listing(built.root))
    rel = path.relative_to(built.root).as_posix()
    assert before - after == {rel}, "only the corrupt object moved"
    # nothing healthy was touched
    for oid in (built.zst, built.small, built.derived, built.top):
        assert sha256(object_bytes(built.file(oid))) == oid


def test_after_quarantine_the_index_agrees_and_the_missing_bytes_are_reported(cas, built):
    flip_byte(built.file(built.raw))
    assert cas("verify", "--quarantine").exit_code == 1
    again = cas("verify", "--json")
    assert again.exit_code == 1, again
    problems = again.json()["problems"]
    assert [p["kind"] for p in problems if p["id"] == built.raw] == ["corrupt-object"]
    assert not [p for p in problems if p["kind"] == "index-mismatch"], problems


def test_quarantine_leaves_intact_bytes_whose_record_lies(cas, built):
    """A record with a wrong size is a bad record, not corrupt bytes: the object hashes to
    its id, refs point to it, and moving it aside would break them for nothing."""
    with Store.open(built.root) as store:
        stored = store.objects.write(io.BytesIO(built.data[built.raw]))
        lying = ImportRecord(object=stored.id, size=1, blake3=stored.blake3, path="/lies")
        store.record_object(stored, lying)
    result = cas("verify", "--quarantine", "--json")
    assert result.exit_code == 1
    assert [(p["kind"], p["id"]) for p in result.json()["problems"]] == [
        ("size-mismatch", built.raw)
    ]
    assert built.raw in object_files(built.root), "intact bytes were quarantined"
    assert result.json()["quarantined"] == []


def test_quarantine_on_a_clean_store_moves_nothing(cas, built):
    before = listing(built.root)
    ok(cas("verify", "--quarantine"))
    assert listing(built.root) == before
    assert not (built.root / "quarantine").exists()


def test_refetch_restores_a_quarantined_download(cas, built, http_dir):
    www, base = http_dir
    data = random_bytes(5000, seed=7)
    (www / "data.bin").write_bytes(data)
    fetched = ok(cas("fetch", f"{base}/data.bin"))
    oid = sha256(data)
    assert oid in fetched.stdout
    path = object_files(built.root)[oid]
    flip_byte(path)
    quarantined = cas("verify", "--quarantine")
    assert quarantined.exit_code == 1, quarantined
    assert oid not in object_files(built.root)

    refetched = cas("verify", "--refetch")
    assert f"refetched {oid}" in refetched.stderr, refetched
    assert object_bytes(object_files(built.root)[oid]) == data
    assert verify_problems(cas) == (0, [])
    assert any(oid in p.name for p in (built.root / "quarantine").iterdir())


def test_refetch_leaves_a_download_whose_url_changed(cas, built, http_dir):
    www, base = http_dir
    data = random_bytes(5000, seed=8)
    (www / "data.bin").write_bytes(data)
    ok(cas("fetch", f"{base}/data.bin"))
    oid = sha256(data)
    flip_byte(object_files(built.root)[oid])
    cas("verify", "--quarantine")
    (www / "data.bin").write_bytes(random_bytes(5000, seed=9))  # the server moved on
    result = cas("verify", "--refetch")
    assert result.exit_code == 1
    assert f"refetched {oid}" not in result.stderr
    assert oid not in object_files(built.root)
    assert all(sha256(object_bytes(p)) == i for i, p in object_files(built.root).items())


# ---- FILE --against OBJ -----------------------------------------------------------------


def test_against_same_bytes(cas, built, tmp_path):
    f = tmp_path / "copy.bin"
    f.write_bytes(built.data[built.zst])
    result = ok(cas("verify", f, "--against", built.zst))
    assert result.lines[-1].endswith("clean"), result
    assert ok(cas("verify", f, "--against", built.zst[:8], "--json")).json()["problems"] == []


def test_against_by_ref_and_different_bytes(cas, built, tmp_path):
    f = tmp_path / "copy.bin"
    f.write_bytes(built.data[built.raw])
    assert cas("verify", f, "--against", "tags/raw").exit_code == 0
    f.write_bytes(built.data[built.raw][:-1] + b"!")
    result = cas("verify", f, "--against", "tags/raw", "--json")
    assert result.exit_code == 1, result
    [problem] = result.json()["problems"]
    assert problem["kind"] == "corrupt-object"
    assert problem["id"] == built.raw
    assert sha256(f.read_bytes()) in problem["detail"]


def test_against_wants_one_file(cas, built, tmp_path):
    result = cas("verify", "--against", built.raw)
    assert result.exit_code == 2, result


# ---- output -----------------------------------------------------------------------------


def test_json_lists_problems_with_kind_id_detail(cas, built):
    flip_byte(built.file(built.small), offset=0)
    (built.root / "refs" / "tags" / "ghost").write_text(sha256(b"nothing") + "\n")
    result = cas("verify", "--json")
    assert result.exit_code == 1
    report = result.json()
    assert {"objects", "records", "bytes", "seconds", "mb_per_s", "problems"} <= set(report)
    assert report["problems"]
    for p in report["problems"]:
        assert set(p) == {"kind", "id", "detail"}
        assert p["kind"] in {
            "corrupt-object",
            "size-mismatch",
            "bad-record",
            "missing-parent",
            "dangling-ref",
            "index-mismatch",
            "stray-tmp",
        }
        assert p["detail"]
    pairs = {(p["kind"], p["id"]) for p in report["problems"]}
    assert ("corrupt-object", built.small) in pairs
    assert ("dangling-ref", "tags/ghost") in pairs


SUMMARY = re.compile(
    r"^verified (?P<objects>\d+) objects, (?P<records>\d+) records, (?P<size>\d+ B|[\d.]+ \wiB)"
    r" in (?P<seconds>\d+\.\d\d) s \((?P<rate>\d+) MB/s, (?P<method>sha256|blake3)\):"
    r" (?P<state>.+)$"
)


def test_summary_line_counts_objects_records_bytes(cas, built):
    result = ok(cas("verify"))
    m = SUMMARY.match(result.lines[-1])
    assert m, result.lines[-1]
    assert int(m["objects"]) == len(built.data)
    n_records = sum(len(built.record_files(oid)) for oid in built.data)
    assert int(m["records"]) == n_records == len(built.data)
    total = sum(len(d) for d in built.data.values())
    assert m["size"] == f"{total / 1024:.1f} KiB"
    assert m["method"] == "sha256"
    assert m["state"] == "clean"
    report = ok(cas("verify", "--json")).json()
    assert report["bytes"] == total


def test_summary_line_counts_problems(cas, built):
    flip_byte(built.file(built.raw))
    result = cas("verify")
    m = SUMMARY.match(result.lines[-1])
    assert m, result.lines[-1]
    assert m["state"] == "1 problem(s)"
    assert result.lines[0].startswith(f"corrupt-object  {built.raw}  ")


def test_named_objects_only(cas, built):
    flip_byte(built.file(built.raw))
    ok(cas("verify", built.zst, "tags/top"))
    result = cas("verify", "tags/raw", "--json")
    assert result.exit_code == 1
    assert result.json()["objects"] == 1
    assert [(p["kind"], p["id"]) for p in result.json()["problems"]] == [
        ("corrupt-object", built.raw)
    ]
