"""The Python API of run logs: states, times, failures, DQ outcomes, tenancy, replay, links."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from casstore.errors import MetadataError, RunNotFound, UsageError
from casstore.meta.context import current_link
from casstore.meta.runs import dq_status
from casstore.records import PipelineLink
from casstore.refs import whoami
from casstore.store import Store


def log_images(store: Store, key: str, value: str) -> list[dict]:
    """Every row image of one run or step in ``log/runs.jsonl``, in order."""
    lines = (store.root / "log" / "runs.jsonl").read_text().splitlines()
    docs = [json.loads(line) for line in lines]
    return [d["row"] for d in docs if d["row"].get(key) == value]


def parse(ts: str) -> datetime:
    assert ts.endswith("Z"), ts
    return datetime.fromisoformat(ts[:-1] + "+00:00")


# ---- states and times ----------------------------------------------------------------------


def test_a_run_and_its_steps_go_pending_running_completed(store: Store):
    seen_inside = {}
    with store.pipeline_run(
        "daily_ingest", trigger_type="scheduler", trigger_by="cron", parameters={"date": "d1"}
    ) as run:
        with run.step("download", step_type="fetch") as step:
            seen_inside["run"] = store.runs().get(run.id).status
            seen_inside["step"] = store.runs().step(step.id).status
            step.rows_processed = 120
            step.metadata["bytes"] = 4096
        with run.step("load") as second:
            pass

    assert seen_inside == {"run": "RUNNING", "step": "RUNNING"}
    runs = log_images(store, "pipeline_logging_id", run.id)
    run_images = [r for r in runs if "step_logging_id" not in r and "dq_result_id" not in r]
    assert [r["status"] for r in run_images] == ["PENDING", "RUNNING", "COMPLETED"]
    steps = log_images(store, "step_logging_id", step.id)
    assert [s["status"] for s in steps] == ["PENDING", "RUNNING", "COMPLETED"]

    row = store.runs().get(run.id)
    assert row.status == "COMPLETED"
    assert (row.pipeline_id, row.trigger_type, row.trigger_by) == (
        "daily_ingest",
        "scheduler",
        "cron",
    )
    assert row.parameters == {"date": "d1"}
    assert row.worker_instance == f"{socket.gethostname()}:{os.getpid()}"
    assert row.error_message is None
    assert row.start_time.tzinfo == UTC and row.end_time is not None
    assert row.end_time >= row.start_time
    assert row.duration_ms == int((row.end_time - row.start_time).total_seconds() * 1000)

    first, last = store.runs().steps(run.id)
    assert (first.step_name, first.step_type, first.step_index) == ("download", "fetch", 0)
    assert (last.step_name, last.step_type, last.step_index) == ("load", "task", 1)
    assert last.id == second.id
    assert first.status == "COMPLETED" and first.rows_processed == 120
    assert first.metadata == {"bytes": 4096}
    assert row.start_time <= first.start_time <= first.end_time <= last.start_time
    assert last.end_time <= row.end_time
    assert first.duration_ms == int((first.end_time - first.start_time).total_seconds() * 1000)
    times = [img["start_time"] for img in steps]
    assert all(t.endswith("Z") for t in times) and parse(times[0]).tzinfo == UTC


def test_run_ids_are_uuid4_and_trigger_by_defaults_to_the_user(store: Store):
    import uuid

    with store.pipeline_run("p") as run, run.step("s") as step:
        pass
    assert uuid.UUID(run.id).version == 4 and uuid.UUID(step.id).version == 4
    assert store.runs().get(run.id).trigger_by == whoami()[0]
    assert store.runs().get(run.id).trigger_type == "manual"


def test_a_step_that_raises_is_failed_with_its_message_and_the_error_propagates(store: Store):
    with (
        pytest.raises(ValueError, match="row 7"),
        store.pipeline_run("p") as run,
        run.step("parse") as step,
    ):
        step.rows_processed = 6
        raise ValueError("row 7 is bad:\n  missing id")
    failed = store.runs().step(step.id)
    assert failed.status == "FAILED"
    assert failed.error_message == "ValueError: row 7 is bad: missing id"
    assert failed.rows_processed == 6 and failed.end_time is not None
    row = store.runs().get(run.id)
    assert (row.status, row.error_message) == ("FAILED", "ValueError: row 7 is bad: missing id")


def test_keyboard_interrupt_fails_the_step_and_the_run_and_propagates(store: Store):
    with pytest.raises(KeyboardInterrupt), store.pipeline_run("p") as run, run.step("slow") as step:
        raise KeyboardInterrupt
    assert store.runs().step(step.id).error_message == "KeyboardInterrupt"
    assert store.runs().get(run.id).status == "FAILED"


def test_an_exception_outside_steps_fails_the_run_only(store: Store):
    with pytest.raises(RuntimeError), store.pipeline_run("p") as run:
        with run.step("ok"):
            pass
        raise RuntimeError()
    assert store.runs().get(run.id).error_message == "RuntimeError"
    assert [s.status for s in store.runs().steps(run.id)] == ["COMPLETED"]


def test_skipped_and_recorded_steps(store: Store):
    with store.pipeline_run("p") as run:
        skipped = run.skip_step("optional", reason="nothing new")
    assert (skipped.status, skipped.error_message, skipped.step_index) == (
        "SKIPPED",
        "nothing new",
        0,
    )


def test_finishing_twice_and_steps_after_the_end_are_refused(store: Store):
    log = store.runs()
    row = log.begin("p")
    done = log.finish(row.id[:8])
    assert done.status == "COMPLETED"
    with pytest.raises(MetadataError, match="already finished"):
        log.finish(row.id)
    with pytest.raises(MetadataError, match="already finished"):
        log.begin_step(row.id, "late")
    with pytest.raises(UsageError):
        log.finish(log.begin("q").id, "SKIPPED")


def test_values_outside_the_allowed_sets_are_refused(store: Store):
    log = store.runs()
    with pytest.raises(UsageError, match="trigger_type"):
        log.begin("p", trigger_type="cron")
    with pytest.raises(UsageError):
        log.list_runs(status="DONE")
    assert log.list_runs() == []  # nothing was written by the refused start


def test_ids_resolve_by_unique_prefix_and_unknown_ids_are_run_not_found(store: Store):
    log = store.runs()
    row = log.begin("p")
    assert log.get(row.id[:6]).id == row.id
    assert log.get(row.id.upper()).id == row.id
    with pytest.raises(RunNotFound):
        log.get("0000-not-there")
    with pytest.raises(RunNotFound):
        log.get("ab")  # too short to be a prefix
    with pytest.raises(RunNotFound):
        log.get("%")


# ---- data quality --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failed", "details", "expected"),
    [
        (0, None, "PASS"),
        (0, [], "PASS"),
        (2, [{"severity": "warning"}, {"severity": "WARNING", "name": "x"}], "WARNING"),
        (2, [{"severity": "warning"}, {"severity": "error"}], "FAIL"),
        (1, [{"name": "no severity"}], "FAIL"),
        (1, ["not null"], "FAIL"),
        (1, None, "FAIL"),  # a count with no details: nothing says it was only a warning
        (0, [{"severity": "warning"}], "WARNING"),
    ],
)
def test_dq_overall_status_rule(failed, details, expected):
    assert dq_status(failed, details) == expected


def test_dq_results_are_stored_with_status_and_ingestion_date(store: Store):
    at = datetime(2025, 1, 2, 1, 30, tzinfo=timezone(timedelta(hours=3)))  # 2025-01-01 in UTC
    with store.pipeline_run("p") as run:
        warn = run.dq_result(
            target_table="raw.systems",
            dq_config_id="suite-1",
            expectations_passed=10,
            expectations_failed=1,
            failed_expectations=[{"expectation": "not_null", "severity": "warning"}],
            executed_at=at,
        )
        run.dq_result(
            target_table="raw.bodies",
            dq_config_id="suite-2",
            expectations_passed=3,
            expectations_failed=2,
            failed_expectations=[{"expectation": "unique"}],
        )
    assert warn.overall_status == "WARNING"
    assert warn.ingestion_date == date(2025, 1, 1)
    assert warn.executed_at == at.astimezone(UTC)
    log = store.runs()
    assert [q.target_table for q in log.list_dq(status="FAIL")] == ["raw.bodies"]
    assert [q.overall_status for q in log.list_dq(table="raw.systems")] == ["WARNING"]
    assert [q.dq_config_id for q in log.list_dq(run=run.id)] == ["suite-2", "suite-1"]
    assert log.list_dq(since=datetime.now(UTC) - timedelta(hours=1))[0].target_table == (
        "raw.bodies"
    )


# ---- tenancy -------------------------------------------------------------------------------


def test_every_query_sees_only_its_tenant(store: Store):
    with store.pipeline_run("ingest", tenant="acme") as a:
        a.dq_result(
            target_table="t", dq_config_id="c", expectations_passed=1, expectations_failed=0
        )
        with a.step("s"):
            pass
    with store.pipeline_run("ingest", tenant="globex") as g:
        pass
    with store.pipeline_run("ingest") as d:
        pass

    acme, globex = store.runs("acme"), store.runs("globex")
    assert [r.id for r in acme.list_runs()] == [a.id]
    assert [r.id for r in globex.list_runs()] == [g.id]
    assert [r.id for r in store.runs().list_runs()] == [d.id]  # the config's tenant
    assert store.runs().tenant == store.config.meta.tenant == "default"
    assert all(r.tenant_id == "acme" for r in acme.list_runs())
    assert acme.steps(a.id)[0].tenant_id == "acme"
    with pytest.raises(RunNotFound, match="acme"):
        acme.get(g.id)
    with pytest.raises(RunNotFound):
        globex.steps(a.id)
    assert len(acme.list_dq()) == 1 and globex.list_dq() == []


# ---- the log is the truth ------------------------------------------------------------------


def snapshot(store: Store, tenant: str | None = None) -> dict:
    log = store.runs(tenant)
    runs = log.list_runs()
    return {
        "runs": [r.model_dump(mode="json") for r in runs],
        "steps": [s.model_dump(mode="json") for r in runs for s in log.steps(r.id)],
        "dq": [q.model_dump(mode="json") for q in log.list_dq()],
        "objects": [o.model_dump(mode="json") for r in runs for o in log.objects(r.id)],
    }


def make_history(store: Store, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("a,b\n1,2\n")
    with store.pipeline_run("daily", parameters={"n": 1}) as run:
        with run.step("load") as step:
            store.add(tmp_path / "in.csv")
            step.rows_processed = 1
        run.dq_result(
            target_table="t", dq_config_id="c", expectations_passed=1, expectations_failed=0
        )
    with pytest.raises(ZeroDivisionError), store.pipeline_run("broken") as run2, run2.step("div"):
        1 / 0  # noqa: B018


def test_a_deleted_index_replays_the_same_rows(store: Store, tmp_path: Path):
    make_history(store, tmp_path)
    before = snapshot(store)
    assert len(before["runs"]) == 2 and len(before["steps"]) == 2 and len(before["objects"]) == 1
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store.root / 'index.sqlite'}{suffix}").unlink(missing_ok=True)
    with Store.open(tmp_path) as again:
        assert snapshot(again) == before


def test_an_index_of_an_older_version_is_rebuilt_with_the_runs_replayed(
    store: Store, tmp_path: Path
):
    make_history(store, tmp_path)
    before = snapshot(store)
    store.close()
    db = sqlite3.connect(store.root / "index.sqlite")
    db.execute("UPDATE meta SET value='3' WHERE key='built'")
    db.commit()
    db.close()
    with Store.open(tmp_path) as again:
        assert snapshot(again) == before
        cols = {r[1] for r in again.index.db.execute("PRAGMA table_info(records)")}
        assert {"pipeline_run", "pipeline_step"} <= cols


def test_cas_index_rebuild_keeps_runs_and_their_objects(store: Store, tmp_path: Path):
    make_history(store, tmp_path)
    before = snapshot(store)
    store.rebuild_index()
    assert snapshot(store) == before


# ---- records carry the run -----------------------------------------------------------------


def test_records_written_inside_a_run_carry_its_link(store: Store, tmp_path: Path):
    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / name).write_text(name)
    with store.pipeline_run("p") as run:
        with run.step("load") as step:
            assert current_link() == PipelineLink(run_id=run.id, step_id=step.id)
            in_step = store.add(tmp_path / "a.txt").id
        in_run = store.add(tmp_path / "b.txt").id
        assert current_link() == PipelineLink(run_id=run.id)
    outside = store.add(tmp_path / "c.txt").id
    assert current_link() is None

    def link(oid: str) -> PipelineLink | None:
        ((_, record),) = store.records(oid)
        return record.pipeline

    assert link(in_step) == PipelineLink(run_id=run.id, step_id=step.id)
    assert link(in_run) == PipelineLink(run_id=run.id)
    assert link(outside) is None
    produced = store.runs().objects(run.id)
    assert [(o.object, o.type, o.step_name) for o in produced] == [
        (in_step, "import", "load"),
        (in_run, "import", None),
    ]


def test_derived_files_and_runs_inside_a_step_are_linked(store: Store, tmp_path: Path):
    (tmp_path / "p.txt").write_text("p")
    parent = store.add(tmp_path / "p.txt").id
    with (
        store.pipeline_run("p") as run,
        run.step("transform") as step,
        store.derive([parent], "upper") as out,
    ):
        out.path.write_text("P")
    ((_, record),) = store.records(out.result.id)
    assert record.pipeline == PipelineLink(run_id=run.id, step_id=step.id)
    assert [o.object for o in store.runs().objects(run.id)] == [out.result.id]


def test_lineage_names_the_run_pipeline_and_step(store: Store, tmp_path: Path):
    (tmp_path / "x.txt").write_text("x")
    with store.pipeline_run("nightly") as run, run.step("grab") as step:
        oid = store.add(tmp_path / "x.txt").id
    (node,) = store.log(oid).nodes
    assert node.pipeline is not None
    assert node.pipeline.model_dump() == {
        "run_id": run.id,
        "step_id": step.id,
        "pipeline_id": "nightly",
        "step_name": "grab",
    }
