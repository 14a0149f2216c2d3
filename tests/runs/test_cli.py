"""``cas runs``, ``cas dq`` and the run in ``cas log``: what the user sees, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from casstore.store import Store


def one_error_line(result, code: int) -> str:
    assert result.exit_code == code, result
    assert result.stdout == ""
    assert result.stderr.startswith("cas: error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.fixture
def finished(store: Store, tmp_path: Path) -> dict[str, str]:
    """A completed run that stored a file in step 'load', with a DQ warning."""
    (tmp_path / "data.csv").write_text("a\n1\n")
    with store.pipeline_run("daily_ingest", trigger_type="scheduler", trigger_by="cron") as run:
        with run.step("load", step_type="import") as step:
            oid = store.add(tmp_path / "data.csv").id
            step.rows_processed = 1
        run.dq_result(
            target_table="raw.data",
            dq_config_id="suite",
            expectations_passed=4,
            expectations_failed=1,
            failed_expectations=[{"expectation": "x", "severity": "warning"}],
        )
    return {"run": run.id, "step": step.id, "object": oid}


def test_runs_show_lists_the_run_its_steps_dq_and_objects(cas, finished):
    result = cas("runs", "show", finished["run"][:8])
    assert result.exit_code == 0, result
    fields = {line.split()[0]: line.split(None, 1)[1] for line in result.lines[:9]}
    assert fields["run"] == finished["run"]
    assert fields["pipeline"] == "daily_ingest"
    assert fields["status"] == "COMPLETED"
    assert fields["trigger"] == "scheduler by cron"
    step_line = next(line for line in result.lines if line.startswith("  0  load"))
    assert step_line.split()[:4] == ["0", "load", "import", "COMPLETED"]
    assert step_line.endswith("rows=1")
    assert any(line.split()[:2] == ["raw.data", "WARNING"] for line in result.lines), result
    obj_line = next(
        line for line in result.lines if line.startswith(f"  {finished['object'][:12]}")
    )
    assert obj_line.split()[1:4] == ["import", "step", "load"]


def test_runs_show_json(cas, finished):
    doc = cas("runs", "show", finished["run"], "--json").json()
    assert set(doc) == {"run", "steps", "dq_results", "objects"}
    assert doc["run"]["pipeline_logging_id"] == finished["run"]
    assert doc["run"]["status"] == "COMPLETED"
    assert [s["step_name"] for s in doc["steps"]] == ["load"]
    assert doc["dq_results"][0]["overall_status"] == "WARNING"
    (obj,) = doc["objects"]
    assert (obj["object"], obj["type"], obj["step_id"], obj["step_name"]) == (
        finished["object"],
        "import",
        finished["step"],
        "load",
    )


def test_cas_log_shows_the_run_that_made_an_object(cas, finished):
    oid, run = finished["object"], finished["run"]
    result = cas("log", oid)
    assert result.exit_code == 0, result
    (line,) = result.lines
    assert line.startswith(oid[:12])
    assert line.endswith(f"(pipeline daily_ingest run {run[:8]} step load)")
    (node,) = cas("log", oid, "--json").json()["nodes"]
    assert node["pipeline"] == {
        "run_id": run,
        "step_id": finished["step"],
        "pipeline_id": "daily_ingest",
        "step_name": "load",
    }


def test_cas_log_of_an_object_made_outside_runs_is_unchanged(cas, store: Store, tmp_path):
    (tmp_path / "plain.txt").write_text("plain")
    oid = store.add(tmp_path / "plain.txt").id
    result = cas("log", oid)
    assert "pipeline" not in result.stdout
    assert cas("log", oid, "--json").json()["nodes"][0]["pipeline"] is None


def test_runs_list_filters(cas, store: Store, finished):
    log = store.runs()
    failed = log.begin("other", trigger_type="api", trigger_by="svc")
    log.finish(failed.id, "FAILED", "boom")
    running = log.begin("other")

    listed = cas("runs", "list")
    assert listed.exit_code == 0, listed
    assert [line.split()[0] for line in listed.lines] == [running.id, failed.id, finished["run"]]
    assert listed.lines[1].split()[1:4] == ["other", "FAILED", "api"]
    only_failed = cas("runs", "list", "--status", "FAILED", "--json").json()
    assert [r["pipeline_logging_id"] for r in only_failed] == [failed.id]
    by_pipeline = cas("runs", "list", "--pipeline", "daily_ingest", "--json").json()
    assert [r["pipeline_logging_id"] for r in by_pipeline] == [finished["run"]]
    assert len(cas("runs", "list", "--limit", "2", "--json").json()) == 2
    assert len(cas("runs", "list", "--since", "1h", "--json").json()) == 3
    assert cas("runs", "list", "--since", "2999-01-01", "--json").json() == []
    assert cas("runs", "list", "--tenant", "elsewhere", "--json").json() == []


def test_dq_list(cas, finished):
    listed = cas("dq", "list")
    assert listed.exit_code == 0, listed
    (line,) = listed.lines
    assert line.split()[2:5] == ["WARNING", "raw.data", "4"]
    assert cas("dq", "list", "--status", "FAIL", "--json").json() == []
    (doc,) = cas("dq", "list", "--table", "raw.data", "--since", "7d", "--json").json()
    assert doc["pipeline_logging_id"] == finished["run"]
    assert doc["failed_expectations"] == [{"expectation": "x", "severity": "warning"}]


def test_start_record_steps_and_finish(cas, store: Store):
    started = cas(
        *("runs", "start", "nightly", "--trigger-type", "webhook", "--trigger-by", "gh"),
        *("--param", "date=2025-11-15", "--param", "n=3", "--config-version", "abc123"),
    )
    assert started.exit_code == 0, started
    (run,) = started.lines
    row = store.runs().get(run)
    assert (row.status, row.trigger_type, row.trigger_by, row.config_version) == (
        "RUNNING",
        "webhook",
        "gh",
        "abc123",
    )
    assert row.parameters == {"date": "2025-11-15", "n": "3"}

    step = cas("runs", "step", run, "transform", "--status", "COMPLETED", "--rows", "12")
    assert step.exit_code == 0, step
    recorded = store.runs().step(step.stdout.strip())
    assert (recorded.step_name, recorded.status, recorded.rows_processed) == (
        "transform",
        "COMPLETED",
        12,
    )
    failed = cas("runs", "step", run, "upload", "--status", "FAILED", "--error", "503", "--json")
    assert failed.json()["error_message"] == "503" and failed.json()["step_index"] == 1

    done = cas("runs", "finish", run, "--status", "FAILED", "--error", "upload failed", "--json")
    assert done.exit_code == 0, done
    assert (done.json()["status"], done.json()["error_message"]) == ("FAILED", "upload failed")
    assert done.json()["end_time"] is not None


def test_finishing_twice_is_one_error_line(cas, store: Store):
    run = store.runs().begin("p").id
    assert cas("runs", "finish", run).exit_code == 0
    err = one_error_line(cas("runs", "finish", run), 1)
    assert "already finished" in err and run in err


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("runs", "show", "0000aaaa"), 1, "no pipeline run"),
        (("runs", "finish", "0000aaaa"), 1, "no pipeline run"),
        (("runs", "step", "0000aaaa", "s", "--status", "COMPLETED"), 1, "no pipeline run"),
        (("runs", "finish", "{run}", "--status", "DONE"), 2, "--status"),
        (("runs", "step", "{run}", "s", "--status", "RUNNING"), 2, "--status"),
        (("runs", "list", "--status", "OK"), 2, "--status"),
        (("runs", "start", "p", "--trigger-type", "cron"), 2, "--trigger-type"),
        (("runs", "start", "p", "--param", "novalue"), 2, "KEY=VALUE"),
        (("runs", "list", "--since", "yesterday"), 2, "not a time"),
        (("runs", "step", "{run}", "s"), 2, "after --"),
        (("runs", "step", "{run}", "s", "--status", "COMPLETED", "--", "true"), 2, "not both"),
        (("runs", "export"), 2, "--openlineage"),
        (("dq", "list", "--status", "BAD"), 2, "--status"),
    ],
)
def test_bad_input_is_one_error_line(cas, store: Store, args, code, words):
    run = store.runs().begin("p").id
    result = cas(*(a.format(run=run) for a in args))
    assert words in one_error_line(result, code)


def test_cas_run_naming_an_unknown_run_is_one_error_line(cas, store: Store, tmp_path):
    (tmp_path / "f.txt").write_text("f")
    err = one_error_line(cas("add", tmp_path / "f.txt", env={"CAS_RUN": "feedbeef-0000"}), 1)
    assert "CAS_RUN" in err
    assert store.list_objects() == []  # nothing stored under a run that does not exist
    run = store.runs().begin("p").id
    err = one_error_line(
        cas("add", tmp_path / "f.txt", env={"CAS_RUN": run, "CAS_STEP": "feedbeef"}), 1
    )
    assert "step" in err
    err = one_error_line(cas("add", tmp_path / "f.txt", env={"CAS_STEP": "feedbeef"}), 2)
    assert "CAS_RUN" in err


def test_cas_run_links_what_cas_commands_store(cas, store: Store, tmp_path):
    (tmp_path / "f.txt").write_text("f")
    log = store.runs()
    run = log.begin("p")
    step = log.begin_step(run.id, "load")
    added = cas(
        "add", tmp_path / "f.txt", "--json", env={"CAS_RUN": run.id[:8], "CAS_STEP": step.id}
    )
    assert added.exit_code == 0, added
    oid = added.json()[0]["id"] if isinstance(added.json(), list) else added.json()["id"]
    ((_, record),) = store.records(oid)
    assert (record.pipeline.run_id, record.pipeline.step_id) == (run.id, step.id)  # expanded
    sample = cas("sample", oid, "--head", "1", "--json", env={"CAS_RUN": run.id})
    assert sample.exit_code == 0, sample
    assert [o.type for o in log.objects(run.id)] == ["import", "sample"]


def test_export_openlineage_shape(cas, store: Store, finished, tmp_path):
    parent = finished["object"]
    with (
        store.pipeline_run("derive_job") as run,
        run.step("upper"),
        store.derive([parent], "upper") as out,
    ):
        out.path.write_text("A\n1\n")
    failed = store.runs().begin("broken")
    store.runs().finish(failed.id, "FAILED", "disk full")

    result = cas("runs", "export", "--openlineage")
    assert result.exit_code == 0, result
    events = [json.loads(line) for line in result.lines]
    required = {
        "eventType",
        "eventTime",
        "producer",
        "schemaURL",
        "run",
        "job",
        "inputs",
        "outputs",
    }
    for ev in events:
        assert required <= set(ev)
        assert ev["producer"] == "https://github.com/casstore/casstore"
        assert ev["schemaURL"] == (
            "https://openlineage.io/spec/2-0-2/OpenLineage.json#/definitions/RunEvent"
        )
        assert ev["eventTime"].endswith("Z")
        assert ev["job"]["namespace"] == "casstore://default"
    top = [e for e in events if "parent" not in e["run"]["facets"]]
    assert [(e["job"]["name"], e["eventType"]) for e in top] == [
        ("daily_ingest", "START"),
        ("daily_ingest", "COMPLETE"),
        ("derive_job", "START"),
        ("derive_job", "COMPLETE"),
        ("broken", "START"),
        ("broken", "FAIL"),
    ]
    assert top[0]["run"]["runId"] == finished["run"]
    assert top[1]["outputs"][0]["name"] == f"sha256:{parent}"
    assert top[1]["outputs"][0]["namespace"] == "casstore"
    assert top[1]["outputs"][0]["facets"]["casstore"]["size"] == 4
    derived = top[3]
    assert [d["name"] for d in derived["outputs"]] == [f"sha256:{out.result.id}"]
    assert [d["name"] for d in derived["inputs"]] == [f"sha256:{parent}"]  # not made by this run
    assert top[5]["run"]["facets"]["errorMessage"]["message"] == "disk full"

    children = [e for e in events if "parent" in e["run"]["facets"]]
    assert {(e["job"]["name"], e["eventType"]) for e in children} == {
        ("daily_ingest.load", "START"),
        ("daily_ingest.load", "COMPLETE"),
        ("derive_job.upper", "START"),
        ("derive_job.upper", "COMPLETE"),
    }
    parent_facet = children[0]["run"]["facets"]["parent"]
    assert parent_facet["run"]["runId"] == finished["run"]
    assert parent_facet["job"] == {"namespace": "casstore://default", "name": "daily_ingest"}
    assert parent_facet["_producer"] and parent_facet["_schemaURL"]

    only = cas("runs", "export", "--openlineage", run.id[:8], "--json").json()
    assert {e["run"]["runId"] for e in only if "parent" not in e["run"]["facets"]} == {run.id}
    assert cas("runs", "export", "--openlineage", "--since", "2999-01-01").stdout == ""
