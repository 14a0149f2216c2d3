"""cas as a producer: fetch, verify and gc leave metadata records of their work."""

from __future__ import annotations

import gzip
from datetime import datetime

from casstore.meta.emit import STORE_TARGET
from casstore.meta.models import MetadataTarget
from casstore.store import Store
from tests._helpers import object_files, sha256
from tests.fetch.conftest import FaultServer, Resource

BODY = b'{"id": 1}\n{"id": 2}\n{"id": 3}\n'


def ok(result):
    assert result.exit_code == 0, result
    return result


def records(store: Store, kind: str, target: MetadataTarget = STORE_TARGET) -> list:
    """Every record of ``kind`` about ``target`` (default: the store itself), oldest first."""
    return store.metadata().history(target, kind)


def test_a_fetch_emits_volume_and_runtime_and_so_does_a_304(faults: FaultServer, store, cas):
    url = faults.route("/d/items.jsonl", Resource(BODY, etag='"v1"'))
    ok(cas("fetch", url, "--source", "items", "--dataset", "catalog"))
    target = MetadataTarget(source_id="items")
    [volume] = records(store, "ingestion_volume", target)
    [runtime] = records(store, "ingestion_runtime", target)
    assert volume.payload == {
        "bytes": len(BODY),  # not compressed: no uncompressed_bytes
        "records": 3,
        "lines": 3,
        "url": url,
        "source_id": "items",
        "dataset": "catalog",
        "object_id": sha256(BODY),
        "status": "downloaded",
        "not_modified": False,
    }
    assert volume.producer_id == runtime.producer_id == "cas.fetch"
    assert volume.context.run_id and volume.context.run_id == runtime.context.run_id
    assert volume.produced_at == runtime.produced_at
    p = runtime.payload
    assert (p["retries"], p["resumes"], p["status"]) == (0, 0, "downloaded")
    started, finished = (datetime.fromisoformat(p[k]) for k in ("started", "finished"))
    assert started <= finished
    assert 0 <= p["duration_ms"] <= (finished - started).total_seconds() * 1000 + 1

    again = ok(cas("fetch", "items", "--dataset", "catalog", "--json")).json()
    assert again["not_modified"] is True
    volumes = records(store, "ingestion_volume", target)
    assert len(volumes) == 2
    assert volumes[1].payload == {
        **volume.payload,
        "status": "unchanged",
        "not_modified": True,  # a 304: no body, the volume of what the source still serves
    }
    assert [r.payload["status"] for r in records(store, "ingestion_runtime", target)] == [
        "downloaded",
        "unchanged",
    ]
    assert volumes[0].context.run_id != volumes[1].context.run_id


def test_a_compressed_fetch_counts_the_content(faults: FaultServer, store, cas):
    packed = gzip.compress(BODY * 10)
    url = faults.route("/d/items.jsonl.gz", Resource(packed))
    ok(cas("fetch", url, "--source", "packed"))
    [volume] = records(store, "ingestion_volume", MetadataTarget(source_id="packed"))
    assert (volume.payload["bytes"], volume.payload["uncompressed_bytes"]) == (
        len(packed),
        len(BODY) * 10,
    )
    assert volume.payload["lines"] == 30


def test_the_url_in_a_volume_record_is_redacted(faults: FaultServer, store, cas):
    url = faults.route("/d/secret.jsonl", Resource(BODY))
    ok(cas("fetch", url + "?token=hunter2&page=1", "--source", "secret"))
    [volume] = records(store, "ingestion_volume", MetadataTarget(source_id="secret"))
    assert volume.payload["url"] == url + "?token=REDACTED&page=1"
    assert b"hunter2" not in (store.root / "log" / "metadata.jsonl").read_bytes()


def test_fetch_all_emits_for_every_source(faults: FaultServer, store, cas):
    for name in ("one", "two"):
        url = faults.route(f"/d/{name}.jsonl", Resource(BODY + name.encode() + b"\n"))
        ok(cas("source", "add", name, url))
    ok(cas("fetch", "--all"))
    repo = store.metadata()
    for name in ("one", "two"):
        target = MetadataTarget(source_id=name)
        assert repo.latest(target, "ingestion_volume").payload["lines"] == 4
        assert repo.latest(target, "ingestion_runtime").producer_id == "cas.fetch"
    assert repo.kinds_in_use() == {"ingestion_runtime": 2, "ingestion_volume": 2}


def test_when_emitting_fails_the_fetch_is_kept_and_the_error_says_so(
    faults: FaultServer, store, cas
):
    url = faults.route("/d/items.jsonl", Resource(BODY))
    (store.root / "log" / "metadata.jsonl").mkdir()  # the log cannot be opened
    result = cas("fetch", url, "--source", "items")
    assert result.exit_code == 1, result
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        "cas: error: fetch of sources/items succeeded, but its metadata could not be recorded: "
    )
    assert (store.root / "refs" / "sources" / "items").read_text().strip() == sha256(BODY)
    assert sha256(BODY) in object_files(store.root)


def test_verify_emits_its_result(store, cas, tmp_path):
    (tmp_path / "a.txt").write_bytes(b"alpha\n")
    (tmp_path / "b.txt").write_bytes(b"beta\n")
    ok(cas("add", "a.txt", "b.txt"))
    ok(cas("verify"))
    [clean] = records(store, "verify_result")
    assert clean.producer_id == "cas.verify"
    assert {k: v for k, v in clean.payload.items() if k != "duration_ms"} == {
        "status": "ok",
        "objects": 2,
        "records": 2,
        "bytes": 11,
        "problems": 0,
        "quarantined": 0,
        "fast": False,
        "full": True,
    }
    path = object_files(store.root)[sha256(b"alpha\n")]
    path.write_bytes(b"alphX\n")
    assert cas("verify", "--fast").exit_code == 1
    failed = records(store, "verify_result")[-1]
    assert failed.payload["status"] == "failed"
    assert failed.payload["fast"] is True
    assert failed.payload["problem_kinds"] == {"corrupt-object": 1}
    ok(cas("verify", sha256(b"beta\n")))
    assert records(store, "verify_result")[-1].payload["full"] is False


def test_gc_emits_its_result_but_a_dry_run_changes_nothing(store, cas, tmp_path):
    (tmp_path / "a.txt").write_bytes(b"hello\n")
    ok(cas("add", "a.txt"))
    ok(cas("gc", "--grace", "0", "--include-sources", "--dry-run"))
    assert not (store.root / "log" / "metadata.jsonl").exists()
    ok(cas("gc", "--grace", "0", "--include-sources"))
    [result] = records(store, "gc_result")
    assert result.producer_id == "cas.gc"
    assert result.payload == {
        "dry_run": False,
        "objects": 1,
        "pruned": 0,
        "bytes": 6,
        "reflog_entries": 0,
        "refs": 0,
        "kept": 0,
        "protected_sources": 0,
        "stray_tmp": 0,
    }
    shown = ok(cas("meta", "latest", "--kind", "gc_result")).stdout
    assert shown.split("  ")[1:3] == ["gc_result", "-"]


def test_a_fetch_inside_a_pipeline_step_names_the_run_in_its_metadata(faults: FaultServer, store):
    url = faults.route("/d/items.jsonl", Resource(BODY))
    with store.pipeline_run("daily_ingest") as run, run.step("download", step_type="fetch") as step:
        store.fetch(url, source_id="items")
    target = MetadataTarget(source_id="items")
    volume = store.metadata().latest(target, "ingestion_volume")
    runtime = store.metadata().latest(target, "ingestion_runtime")
    assert volume.context.run_id == runtime.context.run_id == run.id
    assert volume.context.extras["step_id"] == step.id
    assert volume.context.extras["operation_id"] == runtime.context.extras["operation_id"]
