"""cas manifest export|import and cas export: output, --json, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from casstore.store import Store
from tests._helpers import object_files, sha256
from tests.manifest._data import at, download, entry, write_manifest


def one_line_error(result, code: int, *needles: str) -> None:
    assert result.exit_code == code, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result
    assert lines[0].startswith("cas: error: ")
    for needle in needles:
        assert needle in lines[0], result


def test_export_prints_the_manifest_path(cas, store, tmp_path):
    oid = download(store, b"one\n", url="https://a.org/one.txt", when=at(1))
    result = cas("manifest", "export", "--domain", "systems", "-o", "m")
    assert result.exit_code == 0, result
    path = tmp_path / "m" / "systems_download.manifest.json"
    assert result.lines == [str(path)]
    doc = json.loads(path.read_text())
    assert list(doc["records"]) == [oid]
    assert not (tmp_path / "m" / "systems").exists()  # no --files: no files


def test_export_files_and_json(cas, store, tmp_path):
    oid = download(store, b"one\n", url="https://a.org/one.txt", dataset="ds")
    download(store, b"two\n", source_id="other")
    result = cas(
        "manifest", "export", "--domain", "d", "-o", "m", "--source", "systems", "--files", "--json"
    )
    assert result.exit_code == 0, result
    doc = result.json()
    assert doc["path"] == str(tmp_path / "m" / "d_download.manifest.json")
    assert doc["process"] == "download"
    assert doc["metadata"]["process"] == "extractor"
    assert doc["entries"] == [
        {"checksum": oid, "source_id": "systems", "file_path": "systems/one.txt", "file": "written"}
    ]
    assert doc["skipped"] == []
    assert (tmp_path / "m" / "systems" / "one.txt").read_bytes() == b"one\n"


def test_export_refuses_an_unknown_process_with_exit_2(cas, store):
    result = cas("manifest", "export", "--domain", "d", "--process", "loader")
    one_line_error(result, 2, "unknown process 'loader'", "download, import, derive, run")
    result = cas("manifest", "export", "--domain", "../x")
    one_line_error(result, 2, "invalid domain")
    result = cas("manifest", "export")
    assert result.exit_code == 2
    assert "--domain" in result.stderr


def test_import_prints_a_line_per_record_then_refs_and_a_summary(cas, store, tmp_path):
    here, gone = b"here\n", b"gone\n"
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "here.txt").write_bytes(here)
    path = write_manifest(
        tmp_path / "files" / "x_download.manifest.json",
        {sha256(gone): entry(gone, "gone.txt", day=1), sha256(here): entry(here, "here.txt")},
    )
    result = cas("manifest", "import", path)
    assert result.exit_code == 0, result
    assert result.lines == [
        f"missing  {sha256(gone)}  gone.txt",
        f"stored   {sha256(here)}  here.txt",
        f"ref      sources/systems -> {sha256(here)[:12]}",
        "2 records: 1 stored, 0 exists, 1 missing; 1 refs moved, 0 kept",
    ]
    again = cas("manifest", "import", path, "--json")
    assert again.exit_code == 0, again
    doc = again.json()
    assert [(e["status"], e["new_record"]) for e in doc["entries"]] == [
        ("missing", False),
        ("exists", False),
    ]
    assert (doc["stored"], doc["exists"], doc["missing"]) == (0, 1, 1)
    assert doc["refs"] == [
        {
            "ref": "sources/systems",
            "object": sha256(here),
            "moved": False,
            "current": sha256(here),
        }
    ]


def test_import_refusal_is_one_line_exit_1_and_stores_nothing(cas, store, tmp_path):
    data = b"data\n"
    (tmp_path / "data.txt").write_bytes(data)
    bad = "not-a-checksum"
    path = write_manifest(
        tmp_path / "m.manifest.json",
        {sha256(data): entry(data, "data.txt"), bad: entry(data, "data.txt", checksum=bad)},
    )
    result = cas("manifest", "import", path)
    one_line_error(result, 1, f"record {bad!r}", "checksum is not a SHA-256", "nothing imported")
    assert object_files(store.root) == {}

    result = cas("manifest", "import", tmp_path / "absent.json")
    one_line_error(result, 1, "absent.json", "No such file")


def test_round_trip_through_the_cli(cas, store, tmp_path):
    ids = [
        download(store, b"v1\n", url="https://a.org/s.json", when=at(1)),
        download(store, b"v2\n", url="https://a.org/s.json", when=at(2)),
    ]
    exported = cas("manifest", "export", "--domain", "s", "-o", "out", "--files")
    assert exported.exit_code == 0, exported
    Store.init(tmp_path / "b").close()
    result = cas("--store", tmp_path / "b", "manifest", "import", exported.lines[0])
    assert result.exit_code == 0, result
    assert result.lines[-1] == "2 records: 2 stored, 0 exists, 0 missing; 1 refs moved, 0 kept"
    shown = cas("--store", tmp_path / "b", "ref", "show", "sources/systems")
    assert shown.lines == [ids[1]]


def test_export_requires_the_directory_option(cas, store):
    result = cas("export", "sources/x")
    assert result.exit_code == 2
    assert "--sha256sum" in result.stderr


def test_export_json_and_errors(cas, store, tmp_path):
    oid = download(store, b"x\n", url="https://a.org/x.txt")
    result = cas("export", oid[:8], "--sha256sum", "out", "--json")
    assert result.exit_code == 0, result
    doc = result.json()
    assert doc == {
        "out_dir": str(tmp_path / "out"),
        "files": [{"spec": oid[:8], "id": oid, "name": "x.txt", "status": "written"}],
        "sha256sums": str(tmp_path / "out" / "SHA256SUMS"),
    }
    one_line_error(cas("export", "ffff", "--sha256sum", "out"), 1, "ffff")
    one_line_error(cas("export", "--sha256sum", "empty"), 2, "nothing to export")
    assert not Path("empty").exists()
