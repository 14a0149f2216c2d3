"""The run tables come from the shipped schema files, and the row models agree with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from casstore.cli import runs_cmds
from casstore.meta import tables
from casstore.meta.tables import TABLES, TABLES_DIR, create_sql
from casstore.store import Store

ROOT = Path(__file__).resolve().parents[2]
SEED_COLUMNS = {
    "pipeline_runs": [
        "pipeline_logging_id", "pipeline_id", "tenant_id", "status", "trigger_type",
        "trigger_by", "start_time", "end_time", "duration_ms", "config_version",
        "worker_instance", "error_message", "parameters",
    ],
    "step_logs": [
        "step_logging_id", "pipeline_logging_id", "tenant_id", "step_name", "step_type",
        "step_index", "status", "start_time", "end_time", "duration_ms", "rows_processed",
        "error_message", "metadata",
    ],
    "dq_results": [
        "dq_result_id", "pipeline_logging_id", "tenant_id", "target_table", "dq_config_id",
        "executed_at", "expectations_passed", "expectations_failed", "failed_expectations",
        "overall_status", "ingestion_date",
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TABLES))
def test_schema_file_has_the_seed_columns_in_bigquery_shape(name: str):
    raw = json.loads((TABLES_DIR / f"{name}.json").read_text())
    assert [c["name"] for c in raw] == SEED_COLUMNS[name]
    for column in raw:
        assert set(column) == {"name", "type", "mode", "description"}
        assert column["mode"] in ("REQUIRED", "NULLABLE")
        assert column["description"].strip()


@pytest.mark.parametrize("name", sorted(TABLES))
def test_row_model_fields_match_the_schema_file(name: str):
    table = TABLES[name]
    model_fields = table.model.model_fields
    assert list(model_fields) == [c.name for c in table.columns]
    for c in table.columns:
        assert model_fields[c.name].is_required() == (c.mode == "REQUIRED"), c.name


@pytest.mark.parametrize("name", sorted(TABLES))
def test_docs_copy_equals_the_shipped_file(name: str):
    shipped = (TABLES_DIR / f"{name}.json").read_bytes()
    assert (ROOT / "docs" / "schemas" / "tables" / f"{name}.json").read_bytes() == shipped, (
        "run scripts/gen_schemas.py"
    )


def test_the_index_tables_are_generated_from_the_files(store: Store):
    store.runs()  # creates the tables
    db = store.index.db
    for name, table in TABLES.items():
        info = {r[1]: r for r in db.execute(f"PRAGMA table_info({name})")}
        assert list(info) == [c.name for c in table.columns]
        for c in table.columns:
            _, _, sql_type, notnull, _, pk = info[c.name]
            want = "INTEGER" if c.type in ("INTEGER", "BOOLEAN") else "TEXT"
            assert sql_type == want, (name, c.name)
            assert bool(notnull) == (c.mode == "REQUIRED"), (name, c.name)
            assert bool(pk) == (c.name == table.key)
        indexed = {
            tuple(r[2] for r in db.execute(f"PRAGMA index_info({idx[1]})"))
            for idx in db.execute(f"PRAGMA index_list({name})")
        }
        for cluster in table.indexes:
            assert cluster in indexed, (name, cluster)
    assert ("tenant_id", "pipeline_id", "status", "start_time") in {
        tuple(r[2] for r in db.execute(f"PRAGMA index_info({i[1]})"))
        for i in db.execute("PRAGMA index_list(pipeline_runs)")
    }


def test_type_mapping_follows_the_rule(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    (tmp_path / "pipeline_runs.json").write_text(
        json.dumps(
            [
                {"name": "pipeline_logging_id", "type": "STRING", "mode": "REQUIRED",
                 "description": "id"},
                {"name": "at", "type": "TIMESTAMP", "mode": "NULLABLE", "description": "t"},
                {"name": "day", "type": "DATE", "mode": "REQUIRED", "description": "d"},
                {"name": "doc", "type": "JSON", "mode": "NULLABLE", "description": "j"},
                {"name": "n", "type": "INTEGER", "mode": "REQUIRED", "description": "n"},
                {"name": "ok", "type": "BOOLEAN", "mode": "NULLABLE", "description": "b"},
            ]
        )
    )  # fmt: skip
    monkeypatch.setattr(tables, "TABLES_DIR", tmp_path)
    tables.load_columns.cache_clear()
    try:
        sql = create_sql(TABLES["pipeline_runs"])
    finally:
        tables.load_columns.cache_clear()
    assert "    pipeline_logging_id TEXT NOT NULL PRIMARY KEY" in sql
    assert "    at TEXT,\n" in sql
    assert "    day TEXT NOT NULL" in sql
    assert "    doc TEXT,\n" in sql
    assert "    n INTEGER NOT NULL" in sql
    assert "    ok INTEGER\n" in sql


def test_the_cli_choices_are_the_model_values():
    assert runs_cmds.RUN_STATUSES == tables.RUN_STATUSES
    assert runs_cmds.TRIGGERS == tables.TRIGGER_TYPES
    assert (*tables.RUN_STATUSES, "SKIPPED") == tables.STEP_STATUSES
    assert tables.DQ_STATUSES == ("PASS", "WARNING", "FAIL")


def test_schema_files_are_package_data():
    from importlib.resources import files

    shipped = files("casstore").joinpath("meta", "schemas", "tables")
    assert sorted(p.name for p in shipped.iterdir() if p.name.endswith(".json")) == [
        "dq_results.json",
        "pipeline_runs.json",
        "step_logs.json",
    ]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"meta/schemas/*/*.json"' in pyproject
