"""`cas sample` on the command line: the output line, --json, --ref, usage errors."""

from __future__ import annotations

import io
import re

import pytest

RECORDS = b"[\n" + b",\n".join(b'{"id":%d}' % i for i in range(40)) + b"\n]\n"


@pytest.fixture
def parent(store) -> str:
    return store.add(io.BytesIO(RECORDS)).id


def test_prints_one_line_then_reused(store, cas, parent):
    first = cas("sample", parent, "--head", "3")
    assert first.exit_code == 0, first
    line = rf"[0-9a-f]{{64}}  samples/{parent[:12]}/head-3  \(3 records, head of {parent[:12]}"
    assert re.fullmatch(line + r"\)\n", first.stdout), first
    again = cas("sample", parent, "--head", "3")
    assert re.fullmatch(line + r", reused\)\n", again.stdout), again
    oid = first.stdout.split()[0]
    assert cas("cat", oid).stdout_bytes == b'[{"id":0},\n{"id":1},\n{"id":2}]\n'
    assert cas("ref", "show", f"samples/{parent[:12]}/head-3").stdout == f"{oid}\n"


def test_json_output_is_the_result_model(store, cas, parent):
    result = cas("sample", parent, "--random", "4", "--seed", "7", "--json")
    assert result.exit_code == 0, result
    doc = result.json()
    assert set(doc) == {
        "object", "record_id", "reused", "ref", "parent", "regime", "n_requested",
        "n_taken", "input_format", "output_format", "size", "record",
    }  # fmt: skip
    assert doc["reused"] is False and doc["parent"] == parent
    assert (doc["regime"], doc["n_requested"], doc["n_taken"]) == ("random", 4, 4)
    assert doc["ref"] == f"samples/{parent[:12]}/random-4-s7"
    assert doc["record"]["type"] == "sample" and doc["record"]["seed"] == 7
    assert doc["record"]["object"] == doc["object"]
    assert len(cas("cat", doc["object"]).stdout_bytes) == doc["size"]


def test_systematic_with_offset_and_a_named_ref(store, cas, parent):
    result = cas("sample", parent, "--systematic", "10", "--offset", "3", "--ref", "tags/every10")
    assert result.exit_code == 0, result
    assert "tags/every10  (4 records, systematic of" in result.stdout
    out = cas("cat", "tags/every10").stdout_bytes
    assert out == b'[{"id":3},\n{"id":13},\n{"id":23},\n{"id":33}]\n'


def test_obj_may_be_a_ref_or_a_prefix(store, cas, parent):
    store.set_ref("sources/dump", parent)
    assert cas("sample", "dump", "--head", "1").exit_code == 0
    result = cas("sample", parent[:8], "--head", "1", "--json")
    assert result.json()["reused"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give exactly one of --head N, --random N or --systematic K"),
        (["--head", "2", "--random", "2"], "give exactly one of"),
        (["--head", "2", "--seed", "1"], "--seed goes with --random"),
        (["--random", "2", "--offset", "1"], "--offset goes with --systematic"),
        (["--head", "0"], "--head"),
        (["--systematic", "-1"], "--systematic"),
        (["--random", "2", "--seed", "-3"], "--seed"),
        (["--head", "2", "--ref", "bad..name"], "invalid ref name"),
    ],
)
def test_usage_errors_exit_2(store, cas, parent, args, message):
    result = cas("sample", parent, *args)
    assert result.exit_code == 2, result
    assert result.stderr.startswith("cas: error: ") and result.stderr.count("\n") == 1, result
    assert message in result.stderr
    assert store.list_refs("samples/") == [] and store.list_refs("tags/") == []


def test_unknown_object(store, cas):
    result = cas("sample", "0" * 64, "--head", "1")
    assert result.exit_code == 1
    assert result.stderr == f"cas: error: object {'0' * 64} not found\n"


def test_help_names_the_formats(cas):
    result = cas("sample", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "JSON-lines, a JSON array of records" in text and "gzip, bz2, zstd or xz" in text
