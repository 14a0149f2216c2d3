"""Canonical JSON is stable under key order; records reload equal."""

import json
import random
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from casstore.records import (
    DeriveRecord,
    ImportRecord,
    canonical_bytes,
    load_records,
    parse_record,
    record_id,
    write_record,
)

hexid = st.binary(min_size=8, max_size=8).map(lambda b: (b.hex() * 8)[:64])
name = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}(/[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}){0,2}",
                     fullmatch=True)  # fmt: skip
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
times = st.datetimes(
    min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
)
text = st.text(max_size=40)


@st.composite
def record_docs(draw):
    """A record as the JSON document a producer would build, fields in any order."""
    doc = {
        "object": draw(hexid),
        "size": draw(st.integers(0, 2**53)),
        "blake3": draw(hexid),
        "created": draw(times).isoformat(),
        "user": draw(text),
        "host": draw(text),
        "producer": {"name": draw(st.sampled_from(["cas", "pipeline"])), "version": draw(text)},
    }
    for key, strat in (("source_id", name), ("dataset", text), ("path", text)):
        if draw(st.booleans()):
            doc[key] = draw(strat)
    if draw(st.booleans()):
        doc["type"] = "derive"
        doc["parents"] = draw(st.lists(hexid, min_size=1, max_size=3, unique=True))
        if draw(st.booleans()):
            doc["transform"] = draw(text)
        doc["params"] = draw(st.dictionaries(text, text, max_size=4))
    else:
        doc["type"] = "import"
    return doc


def shuffled(value, rng: random.Random):
    """The same JSON value with every object's keys in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


def build(doc):
    cls = DeriveRecord if doc["type"] == "derive" else ImportRecord
    return cls.model_validate(doc)


@given(doc=record_docs(), seed=st.integers())
def test_canonical_json_is_stable_under_key_order(doc, seed):
    rng = random.Random(seed)
    reference = canonical_bytes(build(doc))
    for _ in range(3):
        assert canonical_bytes(build(shuffled(doc, rng))) == reference
    # and through JSON text in another key order
    again = json.dumps(shuffled(doc, rng), indent=2).encode()
    assert canonical_bytes(build(json.loads(again))) == reference


@given(doc=record_docs())
def test_canonical_bytes_parse_back_equal(doc):
    record = build(doc)
    data = canonical_bytes(record)
    back = parse_record(data, name=record_id(data), object_id=record.object)
    assert back == record
    assert canonical_bytes(back) == data
    assert json.loads(data) == json.loads(data.decode("utf-8"))
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False).encode()  # fmt: skip


@given(docs=st.lists(record_docs(), min_size=1, max_size=4))
def test_records_reload_equal(docs):
    with tempfile.TemporaryDirectory() as d:
        check_reload(Path(d), docs)


def check_reload(base: Path, docs: list[dict]) -> None:
    objects, tmp = base / "objects", base / "tmp"
    objects.mkdir()
    tmp.mkdir()
    oid = docs[0]["object"]
    written = {}
    for doc in docs:
        record = build({**doc, "object": oid})
        rid, _ = write_record(objects, tmp, record)
        written.setdefault(rid, record)
    loaded = dict(load_records(objects, oid))
    for rid, record in written.items():
        assert loaded[rid] == record
    assert list(tmp.iterdir()) == []


@given(when=times)
def test_created_is_kept_to_the_microsecond_in_utc(when):
    r = ImportRecord(object="a" * 64, size=0, blake3="b" * 64, created=when)
    back = parse_record(canonical_bytes(r))
    assert back.created == when
    assert back.created.tzinfo is not None and back.created.utcoffset() == timedelta(0)
    assert json.loads(canonical_bytes(r))["created"].endswith("Z")
    assert back.created.astimezone(UTC) == when.astimezone(UTC)
