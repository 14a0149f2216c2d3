"""Lineage queries must terminate when the records describe a loop.

Content addressing makes loops ordinary, not corrupt: a command whose output equals its
input (an identity or a normaliser with nothing to change) records the object as made
from itself, and gzip then gunzip records A -> B -> A. Each query runs the installed
``cas`` in a subprocess with a generous time limit, only so that a hang fails the test
instead of stalling the suite (a working query answers in well under a second).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from casstore.store import Store
from tests.lineage._records import when

CAS = str(Path(sys.executable).parent / "cas")
HANG_GUARD_S = 10


def cas_proc(store: Store, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [CAS, "--store", str(store.root), *args],
            capture_output=True,
            text=True,
            timeout=HANG_GUARD_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"cas {' '.join(args)} did not finish in {HANG_GUARD_S} s (a loop?)")


@pytest.fixture
def identity(store: Store, tmp_path) -> str:
    """An object recorded as the output of a run that copied it unchanged."""
    oid = store.add(io.BytesIO(b"already clean\n"), ref="tags/clean").id
    result = store.run(
        ["sh", "-c", "cat {data} > out.txt"],
        inputs=[f"data={oid}"],
        outputs=["out.txt"],
        transform="normalize",
        cwd=str(tmp_path),
    )
    assert result.outputs[0].object == oid
    return oid


@pytest.fixture
def round_trip(store: Store) -> tuple[str, str]:
    """A, then B made from A ("gzip"), then A made again from B ("gunzip")."""
    a = store.add(io.BytesIO(b"plain text\n"), source_id="s", ref="sources/s").id
    b = store.add(io.BytesIO(b"pretend gzip\n"), parents=[a], transform="gzip").id
    again = store.add(io.BytesIO(b"plain text\n"), parents=[b], transform="gunzip").id
    assert again == a
    return a, b


def test_log_of_an_object_made_from_itself(store: Store, identity):
    result = cas_proc(store, "log", identity)
    assert result.returncode == 0, result
    assert result.stdout.splitlines() == [
        f"{identity[:12]}  import    {when(store, identity)}  -  [tags/clean]"
    ]


def test_log_both_ways_around_a_loop(store: Store, round_trip):
    a, b = round_trip
    up = cas_proc(store, "log", "--json", b)
    assert up.returncode == 0, up
    doc = json.loads(up.stdout)
    assert {n["id"]: n["depth"] for n in doc["nodes"]} == {b: 0, a: 1}
    down = cas_proc(store, "log", "--children", "--json", a)
    assert down.returncode == 0, down
    assert {n["id"]: n["depth"] for n in json.loads(down.stdout)["nodes"]} == {a: 0, b: 1}


def test_why_around_a_loop_lists_each_simple_path_once(store: Store, round_trip):
    a, b = round_trip
    result = cas_proc(store, "why", b, a)
    assert result.returncode == 0, result
    assert result.stdout.splitlines() == [f"{b[:12]} <- {a[:12]}"]


def test_stale_through_a_loop(store: Store, round_trip):
    a, b = round_trip
    v2 = store.add(io.BytesIO(b"plain text v2\n"), source_id="s", ref="sources/s").id
    result = cas_proc(store, "stale")
    assert result.returncode == 0, result
    assert result.stdout.splitlines() == [
        f"{b[:12]}  sources/s  built from {a[:12]}  now {v2[:12]}"
    ]
