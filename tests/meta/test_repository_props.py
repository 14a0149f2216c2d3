"""``latest``, ``history`` and ``query`` agree with a brute-force filter over the same records.

Records come from several tenants, kinds, targets, times and runs, with payload fields of
each JSON type; identities repeat on purpose, so merges (JSON merge patch, null deletes a
key) are exercised. Stores go one by one and in small bulk chunks, in arrival order. The
same log replayed into a fresh index must answer the same.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from casstore.meta.models import MetadataContext, MetadataRecord, MetadataTarget
from casstore.meta.repository import Condition, EmbeddedRepository
from tests.meta._model import Model, normal, open_repo_pair

TENANTS = ["default", "acme"]
KINDS = ["ingestion_volume", "custom.kind"]  # one registered (checked), one free
TARGETS = [
    MetadataTarget(),
    MetadataTarget(source_id="a"),
    MetadataTarget(source_id="b", table="t"),
    MetadataTarget(source_id="b", schema="s", table="t"),
]
BASE = datetime(2024, 1, 10, 5, 0, tzinfo=UTC)
TIMES = [BASE + timedelta(hours=h, microseconds=us) for h in (0, 1, 30) for us in (0, 7)]
RUNS = [None, "r1", "r2"]
WORDS = ["FAIL", "PASS", "ok", "Ω", ""]
FLOATS = [-2.0, 0.5, 1.25, 1e20]

# (path, the values a condition on it compares with): each of one JSON type
FIELDS: dict[str, list[Any]] = {
    "payload.bytes": [0, 1, 2, 5],
    "payload.status": WORDS,
    "payload.ratio": FLOATS,
    "payload.ok": [True, False],
    "payload.m.x": [0, 3],
    "target.source_id": ["a", "b", "c"],
    "context.run_id": ["r1", "r2"],
    "producer_id": ["p1", "p2"],
    "extras.window": ["2024-01", "2024-02"],
}


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {"bytes": draw(st.sampled_from(FIELDS["payload.bytes"]))}
    for key, values in (
        ("status", WORDS),
        ("ratio", FLOATS),
        ("ok", [True, False]),
    ):
        choice = draw(st.integers(0, 2))
        if choice == 1:
            out[key] = None  # stored as null; in a merge, deletes the key
        elif choice == 2:
            out[key] = draw(st.sampled_from(values))
    if draw(st.booleans()):
        out["m"] = draw(st.sampled_from([None, {"x": 0}, {"x": 3}, {"y": 1}]))
    return out


@st.composite
def records(draw: st.DrawFn) -> MetadataRecord:
    extras = draw(st.sampled_from([None, {"window": "2024-01"}, {"window": "2024-02"}]))
    return MetadataRecord(
        tenant_id=draw(st.sampled_from(TENANTS)),
        kind=draw(st.sampled_from(KINDS)),
        target=draw(st.sampled_from(TARGETS)),
        produced_at=draw(st.sampled_from(TIMES)),
        context=MetadataContext(run_id=draw(st.sampled_from(RUNS))),
        producer_id=draw(st.sampled_from(["p1", "p2"])),
        payload=draw(payloads()),
        extras=extras,
    )


@st.composite
def conditions(draw: st.DrawFn) -> tuple[str, str, Any]:
    path = draw(st.sampled_from(sorted(FIELDS)))
    op = draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">="]))
    return path, op, draw(st.sampled_from(FIELDS[path]))


times = st.none() | st.sampled_from([*TIMES, BASE - timedelta(days=1), BASE + timedelta(hours=2)])


@st.composite
def questions(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "tenant": draw(st.sampled_from(TENANTS)),
        "kind": draw(st.none() | st.sampled_from(KINDS)),
        "where": draw(st.lists(conditions(), max_size=2)),
        "since": draw(times),
        "until": draw(times),
        "target": draw(st.none() | st.sampled_from(TARGETS)),
        "limit": draw(st.none() | st.integers(0, 6)),
    }


def _store_all(repo: EmbeddedRepository, ops: list[tuple[MetadataRecord, bool]]) -> Model:
    """Store in order: single stores, and runs of bulk ones in chunks of 2."""
    model = Model()
    batch: list[MetadataRecord] = []
    for record, bulk in ops:
        if bulk:
            batch.append(record)
            continue
        if batch:
            repo.bulk_store(batch, chunk=2)
            batch = []
        repo.store(record)
    if batch:
        repo.bulk_store(batch, chunk=2)
    for record, _ in ops:
        model.store(record)
    return model


def _check(repos: dict[str, EmbeddedRepository], model: Model, asks: list[dict]) -> None:
    for tenant, repo in repos.items():
        for kind in KINDS:
            for target in TARGETS:
                got = repo.latest(target, kind)
                assert normal([got] if got else []) == model.latest(tenant, target, kind)
                for since, until in ((None, None), (TIMES[2], None), (TIMES[1], TIMES[4])):
                    assert normal(repo.history(target, kind, since, until)) == model.history(
                        tenant, target, kind, since, until
                    ), (tenant, kind, target, since, until)
    for ask in asks:
        repo = repos[ask["tenant"]]
        got = repo.query(
            kind=ask["kind"],
            where=[Condition(*c) for c in ask["where"]],
            since=ask["since"],
            until=ask["until"],
            target=ask["target"],
            limit=ask["limit"],
        )
        assert normal(got) == model.query(**ask), ask


@given(
    ops=st.lists(st.tuples(records(), st.booleans()), max_size=30),
    asks=st.lists(questions(), min_size=1, max_size=8),
)
def test_reads_agree_with_brute_force_and_survive_replay(
    ops: list[tuple[MetadataRecord, bool]], asks: list[dict]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        live, replayed = open_repo_pair(Path(tmp), TENANTS)
        model = _store_all(live["default"], ops)
        _check(live, model, asks)
        # The log alone, replayed into an index that never saw a write, answers the same.
        _check(replayed, model, asks)
        counts = {t: r.kinds_in_use() for t, r in live.items()}
        assert counts == {t: r.kinds_in_use() for t, r in replayed.items()}
        for r in (*live.values(), *replayed.values()):
            r.db.close()
