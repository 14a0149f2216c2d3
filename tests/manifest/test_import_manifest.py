"""import_manifest: validate first, find files, refuse, move refs, round trip, re-import."""

from __future__ import annotations

import json
import os
import shutil
import tracemalloc
from pathlib import Path

import pytest

from casstore.errors import ManifestError
from casstore.store import Store
from tests._helpers import check_store, object_files, sha256
from tests.manifest._data import at, download, entry, read_json, write_manifest


def store_state(root: Path) -> dict[str, bytes]:
    """Objects and records of a store, by relative path (what an import may add)."""
    objects = root / "objects"
    return {str(p.relative_to(root)): p.read_bytes() for p in objects.rglob("*") if p.is_file()}


def records_of(store: Store, oid: str) -> list:
    return [r for _, r in store.records(oid)]


@pytest.fixture
def other(tmp_path: Path):
    """A second, fresh store (the one a manifest is imported into)."""
    s = Store.init(tmp_path / "other")
    yield s
    s.close()


@pytest.fixture
def exported(store, tmp_path):
    """Three downloads (two sources) exported with --files into tmp_path/out."""
    ids = {
        "old": download(
            store,
            b"systems v1\n",
            url="https://a.org/systems.json",
            dataset="star_systems",
            etag='"v1"',
            when=at(1),
        ),
        "new": download(
            store,
            b"systems v2\n",
            url="https://a.org/systems.json",
            dataset="star_systems",
            etag='"v2"',
            when=at(2),
        ),
        "bodies": download(
            store, b"bodies\n", url="https://a.org/bodies.csv", source_id="bodies", when=at(3)
        ),
    }
    result = store.export_manifest(domain="elite", out_dir=tmp_path / "out", files=True)
    return Path(result.path), ids


def test_round_trip_into_a_fresh_store(store, other, exported, tmp_path):
    path, ids = exported
    result = other.import_manifest(path)

    assert [e.status for e in result.entries] == ["stored", "stored", "stored"]
    assert [e.checksum for e in result.entries] == [ids["old"], ids["new"], ids["bodies"]]
    assert set(object_files(other.root)) == set(ids.values())
    for oid in ids.values():
        assert other.read(oid) == store.read(oid)
    (rec,) = records_of(other, ids["new"])
    assert rec.type == "import"
    assert (rec.source_id, rec.dataset) == ("systems", "star_systems")
    assert rec.path == str(tmp_path / "out" / "systems" / f"systems-{ids['new'][:12]}.json")
    origin = rec.manifest
    assert origin.manifest == str(path)
    assert (origin.process, origin.etag, origin.version) == ("extractor", '"v2"', "0.1.0")
    assert origin.file_path == f"systems/systems-{ids['new'][:12]}.json"
    assert origin.ts_downloaded == "2026-01-02T12:00:00.000000Z"

    # The newest object of each source becomes sources/<id> (the ref did not exist).
    assert {r.ref: (r.moved, r.current) for r in result.refs} == {
        "sources/bodies": (True, ids["bodies"]),
        "sources/systems": (True, ids["new"]),
    }
    assert other.resolve("sources/systems") == ids["new"]
    check_store(other.root)

    # Exporting again from the new store gives the same records.
    again = other.export_manifest(domain="elite", out_dir=tmp_path / "again")
    assert read_json(Path(again.path))["records"] == read_json(path)["records"]


def test_reimport_stores_nothing_new(other, exported):
    path, _ = exported
    other.import_manifest(path)
    before = store_state(other.root)
    reflog = (other.root / "logs" / "refs" / "sources%2Fsystems").read_bytes()
    result = other.import_manifest(path)
    assert [(e.status, e.new_record) for e in result.entries] == [("exists", False)] * 3
    assert [r.moved for r in result.refs] == [False, False]
    assert store_state(other.root) == before
    assert (other.root / "logs" / "refs" / "sources%2Fsystems").read_bytes() == reflog


def test_existing_source_refs_are_kept(store, other, exported):
    path, ids = exported
    mine = other.add(Path(path).parent / "bodies" / "bodies.csv").id  # any object
    other.set_ref("sources/systems", mine)
    result = other.import_manifest(path)
    outcome = {r.ref: r for r in result.refs}
    assert outcome["sources/systems"].moved is False
    assert outcome["sources/systems"].current == mine
    assert outcome["sources/systems"].object == ids["new"]
    assert other.resolve("sources/systems") == mine
    assert outcome["sources/bodies"].moved is True


def test_files_are_found_beside_the_manifest_when_root_dir_is_gone(other, exported, tmp_path):
    path, _ = exported
    moved = tmp_path / "moved"
    shutil.move(path.parent, moved)  # root_dir in the manifest no longer exists
    result = other.import_manifest(moved / path.name)
    assert [e.status for e in result.entries] == ["stored"] * 3
    assert result.entries[0].found == str(moved / "systems" / "systems.json")


def test_files_root_is_where_relative_paths_are_looked_for(other, exported, tmp_path):
    path, ids = exported
    files = tmp_path / "files"
    shutil.copytree(path.parent / "bodies", files / "bodies")
    manifest = tmp_path / "elsewhere" / path.name
    manifest.parent.mkdir()
    shutil.copy(path, manifest)
    result = other.import_manifest(manifest, files_root=files)
    assert {e.checksum: e.status for e in result.entries} == {
        ids["old"]: "missing",  # root_dir still has it, but files_root is the only place
        ids["new"]: "missing",
        ids["bodies"]: "stored",
    }


def test_missing_files_are_reported_and_the_rest_stored(other, tmp_path):
    present = b"here\n"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "here.txt").write_bytes(present)
    path = write_manifest(
        tmp_path / "in" / "x_download.manifest.json",
        {
            sha256(present): entry(present, "here.txt", day=2),
            sha256(b"gone\n"): entry(b"gone\n", "gone.txt", day=1),
        },
    )
    result = other.import_manifest(path)
    assert [(e.file_path, e.status) for e in result.entries] == [
        ("gone.txt", "missing"),
        ("here.txt", "stored"),
    ]
    assert (result.stored, result.exists, result.missing) == (1, 0, 1)
    assert set(object_files(other.root)) == {sha256(present)}


def test_absolute_file_paths_and_foreign_manifests(other, tmp_path):
    data = b"from the pipeline\n"
    src = tmp_path / "data" / "raw" / "systems.json"
    src.parent.mkdir(parents=True)
    src.write_bytes(data)
    upper = sha256(data).upper()  # the strategy's pattern allows upper-case hex
    path = write_manifest(
        tmp_path / "etl" / "systems_download.manifest.json",
        {upper: entry(data, str(src), checksum=upper, etag='"e1"')},
        root_dir="/nonexistent/etl/manifests",
    )
    result = other.import_manifest(path)
    (e,) = result.entries
    assert (e.status, e.checksum, e.found) == ("stored", sha256(data), str(src))
    (rec,) = records_of(other, sha256(data))
    assert rec.manifest.etl_version == "1.0.0"
    assert rec.manifest.ts_downloaded == "2026-01-01T12:00:00Z"  # as the manifest wrote it


BAD = b"the bytes\n"
GOOD_KEY = sha256(BAD)


@pytest.mark.parametrize(
    ("key", "fields", "reason"),
    [
        ("abc", {"checksum": "abc"}, "checksum is not a SHA-256"),
        ("z" * 64, {"checksum": "z" * 64}, "checksum is not a SHA-256"),
        ("0" * 64, {}, "key is not the record's checksum"),
        (GOOD_KEY, {"file_size": 0}, "file_size must be more than 0"),
        (GOOD_KEY, {"file_size": -5}, "file_size must be more than 0"),
        (GOOD_KEY, {"file_path": ""}, "file_path: Value error, must name a file"),
        (GOOD_KEY, {"ts_downloaded": "yesterday"}, "ts_downloaded"),
        (GOOD_KEY, {"source_id": "../up"}, "invalid source id"),
        (GOOD_KEY, {"version": None}, "version"),
    ],
)
def test_an_invalid_record_refuses_the_whole_manifest(other, tmp_path, key, fields, reason):
    good = b"a good record\n"
    (tmp_path / "good.txt").write_bytes(good)
    (tmp_path / "bad.txt").write_bytes(BAD)
    records = {
        sha256(good): entry(good, "good.txt"),  # valid, present: still not stored
        key: entry(BAD, **{"file_path": "bad.txt", **fields}),
    }
    path = write_manifest(tmp_path / "m.manifest.json", records)
    before = store_state(other.root)
    with pytest.raises(ManifestError) as err:
        other.import_manifest(path)
    message = str(err.value)
    assert f"record {key!r}" in message
    assert reason in message
    assert message.endswith("nothing imported")
    assert store_state(other.root) == before == {}
    assert other.list_refs() == []


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"", "not JSON"),
        (b"[]", "not a manifest"),
        (b'{"metadata": {}}', "not a manifest"),
        (b'{"metadata": [], "records": {}}', "not a manifest"),
        (b'{"metadata": {"process": "extractor"}, "records": {}}', "metadata: etl_version"),
        (b'{"records": {}, "records": {}, "metadata": {}}', "duplicate key 'records'"),
    ],
)
def test_a_malformed_file_is_refused(other, tmp_path, content, reason):
    path = tmp_path / "m.manifest.json"
    path.write_bytes(content)
    with pytest.raises(ManifestError, match=reason):
        other.import_manifest(path)
    assert store_state(other.root) == {}


def test_a_process_outside_the_etl_stages_is_refused(other, tmp_path):
    path = write_manifest(tmp_path / "m.manifest.json", {}, process="download")
    with pytest.raises(ManifestError, match="metadata: process: Input should be 'extractor'"):
        other.import_manifest(path)


def test_a_duplicate_record_key_is_refused(other, tmp_path):
    data = b"x\n"
    rec = json.dumps(entry(data, "x.txt"))
    key = sha256(data)
    text = (
        '{"metadata": {"process": "extractor", "etl_version": "1", "root_dir": "/"},'
        f' "records": {{"{key}": {rec}, "{key}": {rec}}}}}'
    )
    path = tmp_path / "m.manifest.json"
    path.write_text(text)
    with pytest.raises(ManifestError, match=f"duplicate key '{key}'"):
        other.import_manifest(path)


def test_wrong_size_at_file_path_is_refused_before_anything_is_stored(other, tmp_path):
    first, second = b"first\n", b"second\n"
    (tmp_path / "first.txt").write_bytes(first)
    (tmp_path / "second.txt").write_bytes(second + b"extra")
    path = write_manifest(
        tmp_path / "m.manifest.json",
        {
            sha256(first): entry(first, "first.txt", day=1),
            sha256(second): entry(second, "second.txt", day=2),
        },
    )
    with pytest.raises(ManifestError) as err:
        other.import_manifest(path)
    assert f"record '{sha256(second)}'" in str(err.value)
    assert "has 12 bytes, file_size says 7; nothing imported" in str(err.value)
    assert store_state(other.root) == {}


def test_wrong_bytes_at_file_path_are_refused_and_never_stored(other, tmp_path):
    first, second, third = b"first\n", b"second\n", b"third\n"
    (tmp_path / "first.txt").write_bytes(first)
    (tmp_path / "second.txt").write_bytes(b"SECOND\n")  # same size, other bytes
    (tmp_path / "third.txt").write_bytes(third)
    path = write_manifest(
        tmp_path / "m.manifest.json",
        {
            sha256(first): entry(first, "first.txt", day=1),
            sha256(second): entry(second, "second.txt", day=2, source_id="later"),
            sha256(third): entry(third, "third.txt", day=3),
        },
    )
    with pytest.raises(ManifestError) as err:
        other.import_manifest(path)
    message = str(err.value)
    assert f"record '{sha256(second)}'" in message
    assert f"hashes to {sha256(b'SECOND' + bytes([10]))}, not its checksum" in message
    assert "records before it are stored, refs were not moved" in message
    # The record before it (in ts_downloaded order) stays stored; the bad bytes never are.
    assert set(object_files(other.root)) == {sha256(first)}
    assert other.list_refs() == []
    check_store(other.root)


def test_a_directory_at_file_path_is_refused(other, tmp_path):
    (tmp_path / "adir").mkdir()
    path = write_manifest(tmp_path / "m.manifest.json", {GOOD_KEY: entry(BAD, "adir")})
    with pytest.raises(ManifestError, match="is not a regular file; nothing imported"):
        other.import_manifest(path)


def test_an_unreadable_manifest_is_a_manifest_error(other, tmp_path):
    with pytest.raises(ManifestError, match="No such file"):
        other.import_manifest(tmp_path / "absent.manifest.json")


def test_big_files_are_streamed_not_held_in_memory(store, other, tmp_path):
    size = 48 << 20
    oid = download(store, os.urandom(size), url="https://a.org/big.bin")
    tracemalloc.start()
    try:
        result = store.export_manifest(domain="big", out_dir=tmp_path / "out", files=True)
        other.import_manifest(result.path)
        store.export([oid], tmp_path / "flat")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (tmp_path / "out" / "systems" / "big.bin").stat().st_size == size
    assert other.objects.exists(oid)
    assert peak < 12 << 20, f"peak {peak >> 20} MiB for a {size >> 20} MiB file"
