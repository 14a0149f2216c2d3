"""Payload validation per registered kind, strict mode, and the schema files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from casstore.errors import PayloadError
from casstore.meta.kinds import KINDS, SCHEMA_DIR, kinds, schema_text
from casstore.meta.models import MetadataRecord, MetadataTarget
from casstore.store import Store

DOCS = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "kinds"

GOOD: dict[str, dict[str, Any]] = {
    "dq_result": {"expectations_passed": 3, "expectations_failed": 0, "overall_status": "PASS"},
    "gc_result": {"dry_run": False, "objects": 2, "bytes": 10, "stray_tmp": 1},
    "ingestion_runtime": {"duration_ms": 1500, "retries": 1, "status": "downloaded"},
    "ingestion_volume": {"bytes": 1024, "records": 10, "lines": 11, "watermark": "2024-01"},
    "recon_result": {"outcome": "FAIL", "observed": 10.5, "drill_down": ["year_month", "day"]},
    "schema_snapshot": {"columns": [{"name": "id", "type": "int", "nullable": False}]},
    "verify_result": {"status": "ok", "objects": 3, "bytes": 100, "problems": 0},
}
BAD: dict[str, tuple[dict[str, Any], str]] = {
    "dq_result": (
        {"expectations_passed": 3, "expectations_failed": 0, "overall_status": "OK"},
        "overall_status",
    ),
    "gc_result": ({"objects": 2, "bytes": 10}, "dry_run"),
    "ingestion_runtime": ({"duration_ms": -1}, "duration_ms"),
    "ingestion_volume": ({"bytes": "a lot"}, "bytes"),
    "recon_result": ({"outcome": "fail"}, "outcome"),
    "schema_snapshot": ({"columns": [{"name": "", "type": "int"}]}, "columns.0.name"),
    "verify_result": ({"status": "ok", "bytes": 1, "problems": 0}, "objects"),
}


def test_every_registered_kind_has_cases():
    assert set(GOOD) == set(KINDS) == set(BAD)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_good_payload_is_stored(repo, kind):
    stored = repo.store(MetadataRecord(kind=kind, payload=GOOD[kind]))
    assert stored.tenant_id == "default"
    assert repo.latest(MetadataTarget(), kind).payload == GOOD[kind]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_bad_payload_is_refused_and_nothing_is_stored(repo, kind):
    payload, field = BAD[kind]
    with pytest.raises(PayloadError) as info:
        repo.store({"kind": kind, "payload": payload})
    assert str(info.value).startswith(f"{kind} payload: {field}: ")
    assert info.value.kind == kind
    assert not repo.log_path.exists() or repo.log_path.read_bytes() == b""
    assert repo.query() == []


def test_extra_payload_fields_are_kept(repo):
    repo.store({"kind": "ingestion_volume", "payload": {"bytes": 1, "slice": "2024-01"}})
    assert repo.query()[0].payload == {"bytes": 1, "slice": "2024-01"}


def test_unknown_kinds_are_accepted_unless_the_store_is_strict(store: Store):
    store.metadata().store({"kind": "my.kind", "payload": {"anything": [1, 2]}})
    config = store.root / "config.toml"
    config.write_text(config.read_text().replace("strict = false", "strict = true"))
    with Store.open(store.root) as strict:
        repo = strict.metadata()
        with pytest.raises(
            PayloadError, match=r"unknown kind 'other\.kind' \(this store is strict"
        ):
            repo.store({"kind": "other.kind", "payload": {}})
        repo.store({"kind": "recon_result", "payload": {"outcome": "PASS"}})  # registered: fine
        assert repo.kinds_in_use() == {"my.kind": 1, "recon_result": 1}


def test_a_bad_record_names_the_field(repo):
    with pytest.raises(PayloadError, match=r"^kind: "):
        repo.store({"kind": "has space", "payload": {}})
    with pytest.raises(PayloadError, match=r"^produced_at: "):
        repo.store({"kind": "k", "produced_at": "yesterday-ish"})


def test_schema_files_are_the_models():
    """The files users read (package and docs) are generated from the rules the code applies;
    run scripts/gen_schemas.py after changing a payload model."""
    for kind in KINDS:
        for folder in (SCHEMA_DIR / "kinds", DOCS):
            path = folder / f"{kind}.json"
            assert path.read_text(encoding="utf-8") == schema_text(kind), path
    listed = {k.kind: k for k in kinds()}
    assert set(listed) == set(KINDS)
    assert listed["ingestion_volume"].required == ["bytes"]
    assert Path(listed["recon_result"].schema_file).is_file()
