"""``import_file``: validation first, provenance kept, re-imports merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from casstore.errors import InputError, MetadataError, PayloadError
from casstore.meta.backfill import import_file
from casstore.meta.models import MetadataTarget
from casstore.meta.repository import EmbeddedRepository


def write_lines(path: Path, docs: list[dict | str]) -> Path:
    path.write_text("".join((d if isinstance(d, str) else json.dumps(d)) + "\n" for d in docs))
    return path


def volume(day: int, n: int, **more) -> dict:
    return {
        "kind": "ingestion_volume",
        "target": {"source_id": "legacy", "table": "t"},
        "payload": {"bytes": n},
        "produced_at": f"2024-01-{day:02d}T05:00:00Z",
        "context": {"run_id": f"run-{day}"},
        **more,
    }


def test_a_bad_line_refuses_the_whole_file(repo, tmp_path):
    path = write_lines(
        tmp_path / "h.jsonl",
        [volume(1, 10), volume(2, 20), volume(3, -1), volume(4, 40)],
    )
    with pytest.raises(PayloadError, match=r"^line 3: ingestion_volume payload: bytes: "):
        import_file(repo, path)
    assert repo.query() == []
    assert not repo.log_path.exists()


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"kind": "k", "payload": ', "line 2: not JSON: "),
        ('["kind", "k"]', "line 2: not a JSON object"),
        ('{"payload": {}}', "line 2: kind: Field required"),
        ('{"kind": "k", "colour": "red"}', "line 2: colour: Extra inputs are not permitted"),
        ('{"kind": "k", "produced_at": "Tuesday"}', "line 2: produced_at: "),
    ],
)
def test_each_kind_of_bad_line_is_named(repo, tmp_path, line, reason):
    path = write_lines(tmp_path / "h.jsonl", [volume(1, 10), line, volume(3, 30)])
    with pytest.raises(MetadataError) as info:
        import_file(repo, path)
    assert str(info.value).startswith(reason)
    assert repo.count_all() == 0


def test_line_numbers_count_blank_lines(repo, tmp_path):
    path = write_lines(tmp_path / "h.jsonl", [volume(1, 1), "", "  ", '{"kind": 1}'])
    with pytest.raises(PayloadError, match=r"^line 4: "):
        import_file(repo, path)


def test_import_stores_with_original_source_and_re_import_merges(repo, tmp_path):
    path = write_lines(
        tmp_path / "h.jsonl",
        [
            volume(1, 10),
            volume(2, 20),
            volume(2, 25),  # same identity as the line before: merges, does not double
            volume(3, 30, extras={"original_source": "progress.log", "slice": 1}),
            {**volume(4, 40), "tenant_id": "other"},
        ],
    )
    report = import_file(repo, path)
    assert (report.read, report.new, report.merged) == (5, 4, 1)
    assert report.path == str(path)
    assert report.original_source == str(path)
    target = MetadataTarget(source_id="legacy", table="t")
    history = repo.history(target, "ingestion_volume")
    assert [(r.payload["bytes"], r.extras) for r in history] == [
        (10, {"original_source": str(path)}),
        (25, {"original_source": str(path)}),
        (30, {"original_source": "progress.log", "slice": 1}),  # its own provenance kept
    ]
    assert {r.producer_id for r in history} == {"cas.import"}
    other = EmbeddedRepository(repo.db, repo.log_path.parent, repo.tmp_dir, tenant="other")
    assert [r.payload["bytes"] for r in other.query()] == [40]  # its own tenant kept

    again = import_file(repo, path, source_name="legacy-progress")
    assert (again.read, again.new, again.merged) == (5, 0, 5)
    assert len(repo.history(target, "ingestion_volume")) == 3
    # a merge takes the later import's source for lines that name none...
    assert repo.history(target, "ingestion_volume")[0].extras == {
        "original_source": "legacy-progress"
    }
    # ...while a line that names its own source keeps it
    assert repo.latest(target, "ingestion_volume").extras == {
        "original_source": "progress.log",
        "slice": 1,
    }


def test_a_relative_path_is_recorded_absolute(repo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_lines(tmp_path / "rel.jsonl", [volume(1, 1)])
    report = import_file(repo, "rel.jsonl")
    assert report.original_source == str(tmp_path / "rel.jsonl")
    assert repo.query()[0].extras == {"original_source": str(tmp_path / "rel.jsonl")}


def test_a_missing_file_is_an_input_error(repo, tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        import_file(repo, tmp_path / "nope.jsonl")


def test_import_streams_large_files_in_chunks(repo, tmp_path):
    """Many lines go through bulk_store's chunks (memory flat) and all arrive."""
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        for i in range(25_000):
            f.write(json.dumps({"kind": "k", "payload": {"i": i}, "context": {"run_id": str(i)}}))
            f.write("\n")
    report = import_file(repo, path)
    assert (report.read, report.new) == (25_000, 25_000)
    assert repo.count_all() == 25_000
