"""export_manifest: the JSON shape, what is listed, file names, atomic writes, --files."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from casstore import _fs
from casstore._version import __version__
from casstore.errors import IntegrityError, UsageError
from casstore.meta.manifest import ManifestDocument, load_manifest
from tests._helpers import put_download, sha256
from tests.manifest._data import at, download, read_json, write_manifest

META_KEYS = {"process", "etl_version", "root_dir", "total_records", "ts_created", "ts_updated"}
RECORD_KEYS = {
    "source_id",
    "dataset",
    "checksum",
    "file_path",
    "file_size",
    "etag",
    "ts_downloaded",
    "version",
}


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_shape_keys_and_values(store, tmp_path):
    a = download(
        store,
        b"systems v1\n",
        url="https://data.example.org/dumps/systems.json.gz?x=1",
        dataset="star_systems",
        etag='"abc"',
        when=at(1),
    )
    b = download(
        store, b"bodies\n", source_id="bodies", weak_etag='W/"w1"', url="https://x.org/b.csv"
    )
    result = store.export_manifest(domain="systems", out_dir=tmp_path / "out")

    path = tmp_path / "out" / "systems_download.manifest.json"
    assert result.path == str(path)
    doc = read_json(path)
    assert set(doc) == {"metadata", "records"}
    assert set(doc["metadata"]) == META_KEYS
    meta = doc["metadata"]
    assert meta["process"] == "extractor"
    assert meta["etl_version"] == __version__
    assert meta["root_dir"] == str(tmp_path / "out")
    assert meta["total_records"] == 2
    assert sorted(doc["records"]) == sorted([a, b])
    for key, rec in doc["records"].items():
        assert set(rec) == RECORD_KEYS
        assert rec["checksum"] == key
    ra = doc["records"][a]
    assert ra == {
        "source_id": "systems",
        "dataset": "star_systems",
        "checksum": a,
        "file_path": "systems/systems.json.gz",
        "file_size": len(b"systems v1\n"),
        "etag": '"abc"',
        "ts_downloaded": "2026-01-01T12:00:00.000000Z",
        "version": __version__,
    }
    rb = doc["records"][b]
    assert (rb["etag"], rb["dataset"], rb["file_path"]) == ('W/"w1"', "", "bodies/b.csv")
    # What we write, our reader (the seed's models) accepts.
    assert isinstance(load_manifest(path), ManifestDocument)


def test_newest_download_record_wins(store, tmp_path):
    data = b"same bytes, fetched twice\n"
    download(store, data, url="https://a.org/old.json", etag='"old"', when=at(1))
    download(store, data, url="https://a.org/new.json", etag='"new"', when=at(5))
    store.export_manifest(domain="d", out_dir=tmp_path)
    (rec,) = read_json(tmp_path / "d_download.manifest.json")["records"].values()
    assert rec["etag"] == '"new"'
    assert rec["file_path"] == "systems/new.json"
    assert rec["ts_downloaded"].startswith("2026-01-05")


def test_source_and_dataset_filters(store, tmp_path):
    a = download(store, b"a\n", source_id="systems", dataset="one")
    b = download(store, b"b\n", source_id="systems", dataset="two")
    c = download(store, b"c\n", source_id="bodies", dataset="one")
    d = put_download(store, b"d\n")  # no source, no dataset

    def listed(**kw) -> set[str]:
        store.export_manifest(domain="f", out_dir=tmp_path, **kw)
        return set(read_json(tmp_path / "f_download.manifest.json")["records"])

    assert listed() == {a, b, c, d}
    assert listed(source_id="systems") == {a, b}
    assert listed(dataset="one") == {a, c}
    assert listed(source_id="systems", dataset="two") == {b}
    assert listed(source_id="") == {d}
    assert listed(source_id="nope") == set()


def test_only_the_chosen_record_type_is_listed(store, tmp_path):
    got = tmp_path / "local.csv"
    got.write_bytes(b"x,y\n1,2\n")
    added = store.add(got, source_id="local").id
    fetched = download(store, b"fetched\n")
    store.export_manifest(domain="d", out_dir=tmp_path / "m")
    assert set(read_json(tmp_path / "m/d_download.manifest.json")["records"]) == {fetched}
    result = store.export_manifest(domain="d", process="import", out_dir=tmp_path / "m")
    doc = read_json(Path(result.path))
    assert Path(result.path).name == "d_import.manifest.json"
    assert set(doc["records"]) == {added}
    assert doc["records"][added]["file_path"] == "local/local.csv"
    assert doc["metadata"]["process"] == "extractor"


def test_derived_objects_are_listed_as_transformer_output(store, tmp_path):
    raw = download(store, b"raw\n")
    made = tmp_path / "work" / "clean.jsonl"
    made.parent.mkdir()
    made.write_bytes(b"clean\n")
    derived = store.add(made, parents=[raw], transform="clean", dataset="ds").id
    result = store.export_manifest(domain="d", process="derive", out_dir=tmp_path / "m")
    doc = read_json(Path(result.path))
    assert doc["metadata"]["process"] == "transformer"
    assert list(doc["records"]) == [derived]
    rec = doc["records"][derived]
    assert (rec["file_path"], rec["dataset"], rec["source_id"]) == ("objects/clean.jsonl", "ds", "")


def test_unknown_process_and_bad_domain_are_usage_errors(store, tmp_path):
    with pytest.raises(UsageError, match="unknown process 'validation'"):
        store.export_manifest(domain="d", process="validation", out_dir=tmp_path)
    for domain in ("../up", "a/b", ".hidden", ""):
        with pytest.raises(UsageError):
            store.export_manifest(domain=domain, out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists() or list((tmp_path / "x").iterdir()) == []
    assert not list(tmp_path.parent.glob("up_download*"))


def test_empty_objects_are_skipped_not_listed(store, tmp_path):
    empty = put_download(store, b"", url="https://a.org/empty.txt")
    full = put_download(store, b"full\n")
    result = store.export_manifest(domain="d", out_dir=tmp_path)
    assert [s.id for s in result.skipped] == [empty]
    assert set(read_json(Path(result.path))["records"]) == {full}


def test_write_leaves_only_the_manifest(store, tmp_path):
    download(store, b"one\n")
    out = tmp_path / "out"
    store.export_manifest(domain="d", out_dir=out)
    store.export_manifest(domain="d", out_dir=out)
    assert files_under(out) == ["d_download.manifest.json"]


def test_failed_write_keeps_the_old_manifest_and_leaves_nothing(store, tmp_path, monkeypatch):
    download(store, b"one\n")
    out = tmp_path / "out"
    store.export_manifest(domain="d", out_dir=out)
    path = out / "d_download.manifest.json"
    before = path.read_bytes()
    download(store, b"two\n", url="https://a.org/two")

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_fs.os, "replace", broken)
    with pytest.raises(OSError, match="No space"):
        store.export_manifest(domain="d", out_dir=out)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert files_under(out) == ["d_download.manifest.json"]  # no temporary, no lock file


def test_ts_created_is_kept_from_the_existing_manifest(store, tmp_path):
    download(store, b"one\n")
    path = write_manifest(tmp_path / "d_download.manifest.json", {})
    store.export_manifest(domain="d", out_dir=tmp_path)
    meta = read_json(path)["metadata"]
    assert meta["ts_created"] == "2023-01-01T12:00:00.000000Z"
    assert meta["ts_updated"] > "2026"  # now, not 2023
    assert meta["total_records"] == 1
    first_updated = meta["ts_updated"]
    store.export_manifest(domain="d", out_dir=tmp_path)
    meta = read_json(path)["metadata"]
    assert meta["ts_created"] == "2023-01-01T12:00:00.000000Z"
    assert meta["ts_updated"] >= first_updated


def test_an_invalid_existing_manifest_is_replaced_with_a_new_ts_created(store, tmp_path):
    download(store, b"one\n")
    path = tmp_path / "d_download.manifest.json"
    path.write_text("{not json")
    start = datetime.now(UTC)
    store.export_manifest(domain="d", out_dir=tmp_path)
    created = datetime.fromisoformat(read_json(path)["metadata"]["ts_created"])
    assert created >= start.replace(microsecond=0)


def test_same_names_are_deduplicated(store, tmp_path):
    first = download(store, b"first\n", url="https://a.org/dump.json.gz", when=at(1))
    second = download(store, b"second\n", url="https://b.org/dump.json.gz", when=at(2))
    other = download(store, b"x\n", url="https://b.org/dump.json.gz", source_id="other")
    result = store.export_manifest(domain="d", out_dir=tmp_path, files=True)
    paths = {e.checksum: e.file_path for e in result.entries}
    assert paths == {
        first: "systems/dump.json.gz",
        second: f"systems/dump-{second[:12]}.json.gz",
        other: "other/dump.json.gz",
    }
    assert (tmp_path / paths[second]).read_bytes() == b"second\n"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://a.org/..", None),
        ("https://a.org/.", None),
        ("https://a.org/", None),
        ("https://a.org/%2e%2e", None),
        ("https://a.org/x/%2F..%2F..%2Fescape", "_.._.._escape"),
        ("https://a.org/%2Fetc%2Fpasswd", "_etc_passwd"),
        ("https://a.org/.bashrc", "bashrc"),
        ("https://a.org/a%0Ab%00c", "a_b_c"),
        ("https://a.org/..%5C..%5Cwin.txt", "_.._win.txt"),
    ],
)
def test_hostile_url_names_stay_inside(store, tmp_path, url, expected):
    oid = download(store, b"payload " + url.encode(), url=url)
    out = tmp_path / "out"
    result = store.export_manifest(domain="d", out_dir=out, files=True)
    (entry,) = result.entries
    assert entry.file_path == f"systems/{expected or oid}"
    written = out / entry.file_path
    assert written.read_bytes() == b"payload " + url.encode()
    assert os.path.realpath(written).startswith(str(out) + os.sep)
    outside = sorted(p.name for p in tmp_path.iterdir())
    assert outside == [".casstore", "out"]


def test_files_are_written_verified_and_kept_when_right(store, tmp_path):
    a = download(store, b"alpha\n" * 1000, url="https://a.org/alpha.txt")
    b = download(store, os.urandom(3 << 20), url="https://a.org/big.bin", source_id="big")
    out = tmp_path / "out"
    result = store.export_manifest(domain="d", out_dir=out, files=True)
    assert {e.checksum: e.file for e in result.entries} == {a: "written", b: "written"}
    assert sha256((out / "systems/alpha.txt").read_bytes()) == a
    assert sha256((out / "big/big.bin").read_bytes()) == b
    assert files_under(out) == ["big/big.bin", "d_download.manifest.json", "systems/alpha.txt"]

    again = store.export_manifest(domain="d", out_dir=out, files=True)
    assert {e.file for e in again.entries} == {"unchanged"}

    (out / "systems/alpha.txt").write_bytes(b"tampered\n")
    third = store.export_manifest(domain="d", out_dir=out, files=True)
    assert {e.checksum: e.file for e in third.entries} == {a: "written", b: "unchanged"}
    assert sha256((out / "systems/alpha.txt").read_bytes()) == a


def test_damaged_store_bytes_are_not_exported(store, tmp_path):
    data = os.urandom(4096)  # incompressible: stored raw
    oid = download(store, data, url="https://a.org/raw.bin")
    obj = store.objects.locate(oid)[0]
    obj.chmod(0o644)
    obj.write_bytes(os.urandom(4096))
    out = tmp_path / "out"
    with pytest.raises(IntegrityError, match="damaged"):
        store.export_manifest(domain="d", out_dir=out, files=True)
    assert files_under(out) == []  # no file, no temporary, and no manifest naming it


def test_a_symlinked_directory_leading_outside_is_refused(store, tmp_path):
    download(store, b"x\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "systems").symlink_to(elsewhere)
    with pytest.raises(UsageError, match="outside"):
        store.export_manifest(domain="d", out_dir=out, files=True)
    assert list(elsewhere.iterdir()) == []
