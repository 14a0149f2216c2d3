"""``cas meta …``: what users see, exit codes, and one-line errors."""

from __future__ import annotations

import json

import pytest

from casstore.meta.kinds import KINDS
from casstore.store import Store

T0 = "2024-01-10T05:00:00Z"


def ok(result):
    assert result.exit_code == 0, result
    assert result.stderr == "", result
    return result


def one_line_error(result, code: int, starts: str = "") -> str:
    """The command failed with ``code`` and said so in exactly one line on stderr."""
    assert result.exit_code == code, result
    assert result.stdout == "", result
    assert result.stderr.count("\n") == 1, result
    assert result.stderr.startswith(f"cas: error: {starts}"), result
    return result.stderr


def put(cas, kind="ingestion_volume", target="source_id=a", payload='{"bytes": 5}', *more):
    return ok(cas("meta", "put", "--kind", kind, "--target", target, "--payload", payload, *more))


# ---- put -------------------------------------------------------------------------------


def test_put_prints_the_stored_record(cas, store):
    out = put(cas, "ingestion_volume", "source_id=a,table=t", '{"bytes": 5}', "--produced-at", T0)
    assert out.lines == ['2024-01-10 05:00:00  ingestion_volume  source_id=a,table=t  {"bytes":5}']
    doc = put(
        cas,
        "recon_result",
        "source_id=a",
        '{"outcome": "FAIL"}',
        "--produced-at",
        T0,
        "--run-id",
        "r1",
        "--job-id",
        "j1",
        "--producer",
        "recon.v1",
        "--extra",
        "window_start=2024-01",
        "--extra",
        "attempt=2",
        "--json",
    ).json()
    assert doc == {
        "target": {"source_id": "a"},
        "kind": "recon_result",
        "payload": {"outcome": "FAIL"},
        "produced_at": "2024-01-10T05:00:00.000000Z",
        "producer_id": "recon.v1",
        "context": {"job_id": "j1", "run_id": "r1"},
        "extras": {"window_start": "2024-01", "attempt": 2},
        "tenant_id": "default",
    }
    lines = (store.root / "log" / "metadata.jsonl").read_text().splitlines()
    assert json.loads(lines[-1]) == doc  # what --json prints is the log's line


def test_put_reads_a_payload_file(cas, store, tmp_path):
    (tmp_path / "p.json").write_text('{"columns": [{"name": "id", "type": "int"}]}')
    out = put(cas, "schema_snapshot", "schema=s,table=t", "@p.json")
    assert out.stdout.endswith(
        '  schema_snapshot  schema=s,table=t  {"columns":[{"name":"id","type":"int"}]}\n'
    )


def test_put_reads_payload_lines_from_stdin_with_kind(cas, store):
    result = ok(
        cas(
            "meta",
            "put",
            "--kind",
            "ingestion_volume",
            "--target",
            "source_id=b",
            input='{"bytes": 1}\n\n{"bytes": 2}\n',
        )
    )
    assert result.lines == ["stored 2 record(s): 2 new, 0 merged"]
    found = ok(cas("meta", "query", "--target", "source_id=b", "--json")).json()
    assert sorted(r["payload"]["bytes"] for r in found) == [1, 2]
    assert {r["producer_id"] for r in found} == {"cli"}


def test_put_reads_whole_records_from_stdin_without_kind(cas, store):
    lines = [
        {
            "kind": "recon_result",
            "target": {"source_id": "a"},
            "payload": {"outcome": "PASS", "metric": "rows"},
            "produced_at": T0,
            "context": {"run_id": "r1"},
        },
        {
            "kind": "recon_result",
            "target": {"source_id": "a"},
            "payload": {"outcome": "FAIL", "observed": 3},
            "produced_at": T0,
            "context": {"run_id": "r1"},
        },
        {"kind": "custom", "payload": {"x": 1}, "producer_id": "mine"},
    ]
    text = "".join(json.dumps(d) + "\n" for d in lines)
    result = ok(cas("meta", "put", "--producer", "bulk", "--json", input=text))
    assert result.json() == {"stored": 3, "new": 2, "merged": 1}
    latest = ok(
        cas("meta", "latest", "--kind", "recon_result", "--target", "source_id=a", "--json")
    )
    # the later line of the same identity merged into the earlier one, field by field
    assert latest.json()["payload"] == {"outcome": "FAIL", "metric": "rows", "observed": 3}
    assert latest.json()["producer_id"] == "bulk"  # the option fills in what a line lacks
    custom = ok(cas("meta", "latest", "--kind", "custom", "--json")).json()
    assert custom["producer_id"] == "mine"


def test_a_bad_stdin_line_refuses_every_line(cas, store):
    text = '{"bytes": 1}\n{"bytes": 2}\n{"bytes": -3}\n'
    err = one_line_error(cas("meta", "put", "--kind", "ingestion_volume", input=text), 1)
    assert err == (
        "cas: error: line 3: ingestion_volume payload: bytes: Input should be greater than"
        " or equal to 0\n"
    )
    err = one_line_error(cas("meta", "put", "--kind", "k", input='{"a": 1}\n{"a": \n'), 1)
    assert err.startswith("cas: error: line 2: not JSON: ")
    one_line_error(cas("meta", "put", input="[1, 2]\n"), 1, "line 1: not a JSON object")
    assert ok(cas("meta", "query")).stdout == ""
    assert not (store.root / "log" / "metadata.jsonl").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "k", "--payload", "{bad"], "Invalid value for '--payload': not JSON: "),
        (["--kind", "k", "--payload", "[1]"], "Invalid value for '--payload': the payload must"),
        (["--kind", "k", "--payload", "@missing.json"], "Invalid value for '--payload': cannot"),
        (["--payload", "{}"], "--payload needs --kind"),
        (["--kind", "no spaces", "--payload", "{}"], "Invalid value for '--kind'"),
        (["--kind", "k", "--target", "table", "--payload", "{}"], "Invalid value for '--target'"),
        (["--kind", "k", "--target", "sourceid=a", "--payload", "{}"], "Invalid value for '--ta"),
        (["--kind", "k", "--target", '{"source": 1}', "--payload", "{}"], "Invalid value for"),
        (["--kind", "k", "--produced-at", "soon", "--payload", "{}"], "Invalid value for '--pr"),
        (["--kind", "k", "--extra", "novalue", "--payload", "{}"], "Invalid value for '--extra'"),
    ],
)
def test_put_usage_errors_exit_2(cas, store, args, message):
    one_line_error(cas("meta", "put", *args), 2, message)
    assert not (store.root / "log" / "metadata.jsonl").exists()


def test_a_refused_payload_exits_1(cas, store):
    err = one_line_error(put_raw(cas, "recon_result", '{"outcome": "MAYBE"}'), 1)
    assert err.startswith("cas: error: recon_result payload: outcome: Input should be 'PASS'")


def put_raw(cas, kind, payload):
    return cas("meta", "put", "--kind", kind, "--payload", payload)


# ---- latest, history, query ------------------------------------------------------------


@pytest.fixture
def filled(cas, store):
    for n, when in enumerate(["2024-01-10T05:00:00Z", "2024-01-11T05:00:00Z", "2024-01-12"]):
        put(
            cas,
            "ingestion_volume",
            "source_id=a",
            json.dumps({"bytes": n * 10}),
            "--produced-at",
            when,
        )
    put(
        cas,
        "recon_result",
        "source_id=a",
        '{"outcome": "FAIL", "observed": 1}',
        "--produced-at",
        T0,
    )
    put(cas, "recon_result", "source_id=b", '{"outcome": "PASS"}', "--produced-at", T0)
    put(
        cas,
        "recon_result",
        "source_id=a",
        '{"outcome": "FAIL"}',
        "--produced-at",
        T0,
        "--tenant",
        "acme",
    )
    return store


def test_latest(cas, filled):
    out = ok(cas("meta", "latest", "--kind", "ingestion_volume", "--target", "source_id=a"))
    assert out.lines == ['2024-01-12 00:00:00  ingestion_volume  source_id=a  {"bytes":20}']
    doc = ok(
        cas("meta", "latest", "--kind", "ingestion_volume", "--target", "source_id=a", "--json")
    )
    assert doc.json()["payload"] == {"bytes": 20}


def test_latest_without_a_record_is_a_one_line_error(cas, filled):
    err = one_line_error(
        cas("meta", "latest", "--kind", "ingestion_volume", "--target", "source_id=zz"), 1
    )
    assert err == "cas: error: no ingestion_volume record about source_id=zz (tenant default)\n"
    one_line_error(cas("meta", "latest", "--target", "source_id=a"), 2)  # --kind is required


def test_history_is_oldest_first_within_the_window(cas, filled):
    out = ok(cas("meta", "history", "--kind", "ingestion_volume", "--target", "source_id=a"))
    assert [line.split("  ")[-1] for line in out.lines] == [
        '{"bytes":0}',
        '{"bytes":10}',
        '{"bytes":20}',
    ]
    window = ok(
        cas(
            "meta",
            "history",
            "--kind",
            "ingestion_volume",
            "--target",
            "source_id=a",
            "--since",
            "2024-01-11",
            "--until",
            "2024-01-12",
            "--json",
        )
    ).json()
    assert [r["payload"]["bytes"] for r in window] == [10]


def test_query_filters_and_orders_newest_first(cas, filled):
    fails = ok(cas("meta", "query", "--where", "payload.outcome=FAIL")).lines
    assert fails == [
        '2024-01-10 05:00:00  recon_result  source_id=a  {"outcome":"FAIL","observed":1}'
    ]
    big = ok(
        cas("meta", "query", "--kind", "ingestion_volume", "--where", "payload.bytes>=10", "--json")
    )
    assert [r["payload"]["bytes"] for r in big.json()] == [20, 10]
    for cond, want in [
        ("payload.bytes!=10", [20, 0]),
        ("payload.bytes<10", [0]),
        ("payload.bytes<=10", [10, 0]),
        ("payload.bytes>10", [20]),
        ("payload.bytes=10", [10]),
    ]:
        got = ok(cas("meta", "query", "--kind", "ingestion_volume", "--where", cond, "--json"))
        assert [r["payload"]["bytes"] for r in got.json()] == want, cond
    limited = ok(cas("meta", "query", "--limit", "2", "--json")).json()
    assert [r["produced_at"][:10] for r in limited] == ["2024-01-12", "2024-01-11"]
    both = ok(
        cas(
            "meta",
            "query",
            "--target",
            "source_id=a",
            "--where",
            "payload.outcome=FAIL",
            "--where",
            "payload.observed=1",
            "--json",
        )
    )
    assert len(both.json()) == 1
    assert ok(cas("meta", "query", "--since", "1d")).stdout == ""  # all of it is older


def test_tenants_see_only_their_records(cas, filled):
    acme = ok(cas("meta", "query", "--tenant", "acme", "--json")).json()
    assert [(r["kind"], r["tenant_id"]) for r in acme] == [("recon_result", "acme")]
    mine = ok(cas("meta", "query", "--json")).json()
    assert {r["tenant_id"] for r in mine} == {"default"}
    assert len(mine) == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["query", "--where", "payload.status"], "Invalid value for '--where': not a condition"),
        (["query", "--where", "status=FAIL"], "Invalid value for '--where': cannot filter on"),
        (["query", "--where", "payload.x=[1]"], "Invalid value for '--where': cannot compare"),
        (["query", "--since", "last week"], "Invalid value for '--since': not a time"),
        (["query", "--limit", "-1"], "Invalid value for '--limit'"),
        (["query", "--target", "schema"], "Invalid value for '--target': expected KEY=VALUE"),
        (["history", "--kind", "k", "--until", "x"], "Invalid value for '--until'"),
    ],
)
def test_read_usage_errors_exit_2(cas, store, args, message):
    one_line_error(cas("meta", *args), 2, message)


# ---- tail ------------------------------------------------------------------------------


def test_tail_prints_the_last_records(cas, filled):
    out = ok(cas("meta", "tail", "-n", "2"))
    assert out.lines == [
        '2024-01-10 05:00:00  recon_result  source_id=a  {"outcome":"FAIL","observed":1}',
        '2024-01-10 05:00:00  recon_result  source_id=b  {"outcome":"PASS"}',
    ]
    raw = ok(cas("meta", "tail", "--json")).lines
    log = (filled.root / "log" / "metadata.jsonl").read_text().splitlines()
    assert raw == [line for line in log if json.loads(line)["tenant_id"] == "default"]
    assert ok(cas("meta", "tail", "--tenant", "acme", "--json")).lines == log[-1:]
    assert ok(cas("meta", "tail", "-n", "0")).stdout == ""


def test_tail_of_an_empty_store_prints_nothing(cas, store):
    assert ok(cas("meta", "tail")).stdout == ""


# ---- kinds, compact, import ------------------------------------------------------------


def test_kinds_lists_the_registered_kinds_and_the_ones_in_use(cas, filled):
    put(cas, "my.kind", "source_id=a", "{}")
    text = ok(cas("meta", "kinds")).lines
    assert text[0].split()[:2] == [
        "dq_result",
        "expectations_passed,expectations_failed,overall_status",
    ]
    assert text[0].endswith("casstore/meta/schemas/kinds/dq_result.json")
    assert "in use (tenant default; unregistered allowed):" in text
    assert text[-3:] == [
        "  ingestion_volume  3",
        "  my.kind           1  (not registered)",
        "  recon_result      2",
    ]
    doc = ok(cas("meta", "kinds", "--json")).json()
    assert [k["kind"] for k in doc["registered"]] == sorted(KINDS)
    assert doc["in_use"] == {"ingestion_volume": 3, "my.kind": 1, "recon_result": 2}
    assert ok(cas("meta", "kinds", "--tenant", "acme", "--json")).json()["in_use"] == {
        "recon_result": 1
    }


def test_compact_without_retention_drops_nothing(cas, filled):
    assert ok(cas("meta", "compact")).lines == [
        "no retention configured ([meta.retention] in config.toml): nothing to drop"
    ]


def test_compact_applies_the_configured_retention(cas, filled):
    config = filled.root / "config.toml"
    config.write_text(
        config.read_text().replace('# ingestion_volume = "90d"', 'ingestion_volume = "90d"')
    )
    put(cas, "ingestion_volume", "source_id=a", '{"bytes": 99}')  # now: kept
    log = filled.root / "log" / "metadata.jsonl"
    before = log.read_bytes()
    dry = ok(cas("meta", "compact", "--dry-run"))
    assert dry.lines == [
        "would drop 3 ingestion_volume line(s) older than 90d",
        "would drop 3 line(s) of the log",
    ]
    assert log.read_bytes() == before
    done = ok(cas("meta", "compact", "--json")).json()
    assert done == {
        "dry_run": False,
        "tenant": None,
        "retention": {"ingestion_volume": "90d"},
        "dropped": {"ingestion_volume": 3},
    }
    left = ok(cas("meta", "query", "--kind", "ingestion_volume", "--json")).json()
    assert [r["payload"]["bytes"] for r in left] == [99]
    assert (
        ok(cas("meta", "compact")).lines[0] == "dropped 0 ingestion_volume line(s) older than 90d"
    )


def test_import_reports_counts(cas, store, tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_text(
        json.dumps({"kind": "recon_result", "payload": {"outcome": "PASS"}, "produced_at": T0})
        + "\n"
    )
    out = ok(cas("meta", "import", "old.jsonl"))
    assert out.lines == [f"imported {path}: read 1, new 1, merged 0"]
    again = ok(cas("meta", "import", str(path), "--source-name", "legacy", "--json")).json()
    assert again == {
        "path": str(path),
        "original_source": "legacy",
        "read": 1,
        "new": 0,
        "merged": 1,
    }
    one_line_error(cas("meta", "import", "missing.jsonl"), 1, "cannot read missing.jsonl")


def test_every_meta_command_is_documented():
    from pathlib import Path

    from casstore.cli.meta_cmds import meta

    docs = (Path(__file__).resolve().parents[2] / "docs" / "metadata.md").read_text()
    for name in meta.commands:
        assert f"$ cas meta {name}" in docs, f"docs/metadata.md has no example of cas meta {name}"


def test_meta_store_handle_reads_the_configured_tenant(cas, store):
    config = store.root / "config.toml"
    config.write_text(config.read_text().replace('tenant = "default"', 'tenant = "team-a"'))
    put(cas, "k", "source_id=a", "{}")
    with Store.open(store.root) as s:
        assert [r.tenant_id for r in s.metadata().query()] == ["team-a"]
        assert s.metadata("default").query() == []
