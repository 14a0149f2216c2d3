"""export_objects / cas export --sha256sum: names, SHA256SUMS that sha256sum -c accepts."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from casstore.errors import IntegrityError, UsageError
from tests._helpers import put_download, sha256
from tests.manifest._data import download


def sha256sum_check(directory: Path) -> subprocess.CompletedProcess:
    """Run the real ``sha256sum -c SHA256SUMS`` in ``directory``."""
    binary = shutil.which("sha256sum")
    if binary is None:
        reason = "sha256sum is not installed (coreutils)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return subprocess.run(
        [binary, "--strict", "-c", "SHA256SUMS"],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def sources(store):
    """Two fetched sources, as refs: ``{name: object id}``."""
    ids = {
        "systems": download(store, b"systems\n" * 100, url="https://a.org/d/systems.json.gz"),
        "bodies": download(
            store, os.urandom(2 << 20), url="https://a.org/bodies.csv", source_id="bodies"
        ),
    }
    for name, oid in ids.items():
        store.set_ref(f"sources/{name}", oid)
    return ids


def test_cas_export_writes_files_sha256sum_accepts(cas, store, sources, tmp_path):
    out = tmp_path / "out"
    result = cas("export", "--sha256sum", out)
    assert result.exit_code == 0, result
    assert result.lines == [
        f"{sources['bodies']}  bodies.csv",
        f"{sources['systems']}  systems.json.gz",
    ]
    assert (out / "SHA256SUMS").read_text() == result.stdout
    assert listing(out) == ["SHA256SUMS", "bodies.csv", "systems.json.gz"]
    check = sha256sum_check(out)
    assert check.returncode == 0, check.stderr
    assert sorted(check.stdout.splitlines()) == ["bodies.csv: OK", "systems.json.gz: OK"]


def test_names_from_refs_urls_imports_and_ids(store, tmp_path):
    fetched = download(store, b"fetched\n", url="https://a.org/x/latest.jsonl.gz")
    store.set_ref("tags/release-1", fetched)
    src = tmp_path / "report.final.csv"
    src.write_bytes(b"a,b\n")
    added = store.add(src).id
    bare = store.objects.write(io.BytesIO(b"no records at all\n")).id
    result = store.export(["tags/release-1", fetched[:10], added, bare], tmp_path / "out")
    assert [(f.spec, f.name) for f in result.files] == [
        ("tags/release-1", "release-1.jsonl.gz"),
        (fetched[:10], "latest.jsonl.gz"),
        (added, "report.final.csv"),
        (bare, bare),
    ]
    for f in result.files:
        assert sha256((tmp_path / "out" / f.name).read_bytes()) == f.id


def test_a_ref_already_ending_in_the_extension_keeps_its_name(store, tmp_path):
    oid = download(store, b"x\n", url="https://a.org/dump.json.gz")
    store.set_ref("sources/dump.json.gz", oid)
    (f,) = store.export(["sources/dump.json.gz"], tmp_path / "out").files
    assert f.name == "dump.json.gz"


def test_existing_sha256sums_is_merged(store, sources, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    stale = "0" * 64
    (out / "SHA256SUMS").write_text(
        f"{sha256(b'mine' + bytes([10]))}  notes.txt\n"
        f"{stale}  systems.json.gz\n"
        f"{stale} *bodies.csv\n"
    )
    store.export([], out)
    assert (out / "SHA256SUMS").read_text().splitlines() == [
        f"{sha256(b'mine' + bytes([10]))}  notes.txt",
        f"{sources['systems']}  systems.json.gz",
        f"{sources['bodies']}  bodies.csv",
    ]
    check = sha256sum_check(out)
    assert check.returncode == 0, check.stderr + check.stdout


def test_reexport_leaves_right_files_alone_and_fixes_wrong_ones(store, sources, tmp_path):
    out = tmp_path / "out"
    store.export([], out)
    (out / "systems.json.gz").write_bytes(b"tampered")
    again = store.export([], out)
    assert {f.name: f.status for f in again.files} == {
        "systems.json.gz": "written",
        "bodies.csv": "unchanged",
    }
    assert sha256((out / "systems.json.gz").read_bytes()) == sources["systems"]
    assert listing(out) == ["SHA256SUMS", "bodies.csv", "systems.json.gz"]


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://a.org/..", None),
        ("https://a.org/%2e%2e", None),
        ("https://a.org/%2Fetc%2Fpasswd", "_etc_passwd"),
        ("https://a.org/%2F..%2F..%2Fescape", "_.._.._escape"),
        ("https://a.org/.profile", "profile"),
        ("https://a.org/evil%0Aname", "evil_name"),
        ("https://a.org/SHA256SUMS", "SHA256SUMS-{short}"),
    ],
)
def test_hostile_url_names_stay_inside(store, tmp_path, url, name):
    oid = download(store, b"x " + url.encode(), url=url)
    out = tmp_path / "box" / "out"
    result = store.export([oid], out)
    expected = oid if name is None else name.format(short=oid[:12])
    assert [f.name for f in result.files] == [expected]
    assert listing(out) == sorted(["SHA256SUMS", expected])
    assert listing(tmp_path / "box") == ["out"]
    assert sha256sum_check(out).returncode == 0


def test_odd_ref_names_and_clashing_names(store, tmp_path):
    a = download(store, b"a\n", url="https://a.org/v.json")
    b = download(store, b"b\n", url="https://b.org/v.json")
    store.set_ref("tags/-x_y.z", a)
    store.set_ref("sources/a.b-c", b)
    result = store.export(["tags/-x_y.z", "sources/a.b-c", a, b, a], tmp_path / "out")
    assert [f.name for f in result.files] == [
        "-x_y.z.json",
        "a.b-c.json",
        "v.json",
        f"v-{b[:12]}.json",
    ]
    check = sha256sum_check(tmp_path / "out")
    assert check.returncode == 0, check.stdout + check.stderr


def test_nothing_to_export(store, tmp_path):
    put_download(store, b"not behind a source ref\n")
    with pytest.raises(UsageError, match="nothing to export"):
        store.export([], tmp_path / "out")


def test_damaged_bytes_are_refused_and_nothing_is_left(store, tmp_path):
    oid = download(store, os.urandom(5000), url="https://a.org/raw.bin")
    good = download(store, b"fine\n", url="https://a.org/fine.txt")
    path = store.objects.locate(oid)[0]
    path.chmod(0o644)
    path.write_bytes(os.urandom(5000))
    out = tmp_path / "out"
    with pytest.raises(IntegrityError, match=oid):
        store.export([good, oid], out)
    assert listing(out) == []  # not even the good file: nothing is renamed until all verify
