"""The recipe memo, the sample record, default refs, streaming reads."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os

import pytest

from casstore.errors import ObjectNotFound, UsageError
from casstore.records import SampleRecord
from casstore.refs import whoami
from casstore.sample import SAMPLER_VERSION, sample_object
from tests._helpers import check_store

RECORDS = b"".join(b'{"i":%d,"name":"system %d"}\n' % (i, i) for i in range(200))


@pytest.fixture
def parent(store) -> str:
    """A gzipped JSON-lines object from a source, as a download would be."""
    return store.add(io.BytesIO(gzip.compress(RECORDS)), source_id="edsm", dataset="systems").id


def test_second_request_is_reused_without_reading_the_parent(store, parent):
    first = sample_object(store, parent, regime="random", n=5, seed=3)
    assert not first.reused
    path, _ = store.objects.locate(parent)
    os.unlink(path)  # the parent's bytes are gone: only the memo can answer now
    again = sample_object(store, parent, regime="random", n=5, seed=3)
    assert again.reused
    assert (again.object, again.record_id, again.ref) == (first.object, first.record_id, first.ref)
    with pytest.raises(ObjectNotFound):  # any other recipe must read the parent
        sample_object(store, parent, regime="random", n=5, seed=4)


def test_reuse_moves_the_ref_again(store, parent):
    first = sample_object(store, parent, regime="head", n=3)
    store.delete_ref(first.ref)
    again = sample_object(store, parent, regime="head", n=3, ref="tags/mine")
    assert again.reused and again.ref == "tags/mine"
    assert store.refs.get("tags/mine") == first.object


def test_missing_sample_bytes_mean_sampling_again(store, parent):
    first = sample_object(store, parent, regime="systematic", stride=7)
    os.unlink(store.objects.locate(first.object)[0])
    again = sample_object(store, parent, regime="systematic", stride=7)
    assert not again.reused
    assert again.object == first.object  # same recipe, same bytes
    check_store(store.root)


def test_recipe_key_is_the_hash_of_its_canonical_json(store, parent):
    result = sample_object(store, parent, regime="systematic", stride=4, offset=2)
    doc = {
        "n": None,
        "offset": 2,
        "parent": parent,
        "regime": "systematic",
        "sampler_version": SAMPLER_VERSION,
        "seed": None,
        "stride": 4,
    }
    key = hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()
    assert result.record["recipe"] == key
    assert store.index.by_recipe(key) == [(result.object, result.record_id)]


def test_seed_zero_is_the_default_recipe(store, parent):
    implicit = sample_object(store, parent, regime="random", n=4)
    explicit = sample_object(store, parent, regime="random", n=4, seed=0)
    assert explicit.reused and explicit.object == implicit.object
    assert (implicit.ref, explicit.ref) == ("samples/edsm/random-4", "samples/edsm/random-4-s0")


def test_the_sample_record(store, parent):
    result = sample_object(store, parent, regime="random", n=10, seed=9)
    found = check_store(store.root)
    record = found["records"][result.record_id]
    assert isinstance(record, SampleRecord)
    data = store.read(result.object)
    user, host = whoami()
    assert record.object == result.object
    assert record.size == len(data) == result.size
    assert record.parents == (parent,)
    assert (record.source_id, record.dataset) == ("edsm", "systems")
    assert (record.user, record.host) == (user, host)
    assert record.regime == "random"
    assert (record.n_requested, record.n_taken, record.seed) == (10, 10, 9)
    assert (record.offset, record.stride) == (None, None)
    assert (record.input_format, record.output_format) == ("jsonl+gzip", "jsonl")
    assert record.sampler_version == SAMPLER_VERSION
    assert record.reproducible
    assert result.record == record.model_dump(mode="json", exclude_none=True)
    assert found["refs"]["samples/edsm/random-10-s9"] == result.object
    assert result.object in store.index.children(parent)


@pytest.mark.parametrize(
    ("params", "ref", "fields"),
    [
        ({"regime": "head", "n": 10}, "head-10", {"n_requested": 10, "offset": 0}),
        ({"regime": "random", "n": 5}, "random-5", {"n_requested": 5, "seed": 0}),
        ({"regime": "random", "n": 5, "seed": 2}, "random-5-s2", {"seed": 2}),
        ({"regime": "systematic", "stride": 4}, "systematic-4", {"stride": 4, "offset": 0}),
        (
            {"regime": "systematic", "stride": 4, "offset": 2},
            "systematic-4-o2",
            {"stride": 4, "offset": 2, "n_taken": 50},
        ),
    ],
)
def test_default_refs_and_parameters(store, parent, params, ref, fields):
    result = sample_object(store, parent, **params)
    assert result.ref == f"samples/edsm/{ref}"
    assert fields.items() <= result.record.items()
    if params["regime"] == "systematic":
        assert "n_requested" not in result.record


def test_default_ref_without_a_source_uses_the_short_id(store):
    parent = store.add(io.BytesIO(RECORDS)).id
    assert sample_object(store, parent, regime="head", n=1).ref == f"samples/{parent[:12]}/head-1"


def test_source_comes_from_the_newest_record_that_names_one(store):
    parent = store.add(io.BytesIO(RECORDS), source_id="old").id
    store.add(io.BytesIO(RECORDS), source_id="new", dataset="d")
    result = sample_object(store, parent, regime="head", n=1)
    assert (result.record["source_id"], result.record["dataset"]) == ("new", "d")


def test_a_sample_of_a_sample(store, parent):
    first = sample_object(store, parent, regime="head", n=50)
    second = sample_object(store, first.ref, regime="systematic", stride=10)
    assert second.parent == first.object
    assert second.record["source_id"] == "edsm"  # inherited down the chain
    assert store.read(second.object) == b"".join(RECORDS.splitlines(keepends=True)[0:50:10])


def test_objects_the_store_keeps_as_zstd_are_read_back(store):
    """The store's own compression is invisible: the input is the original bytes."""
    parent = store.add(io.BytesIO(RECORDS * 50))
    assert parent.compression == "zstd"
    result = sample_object(store, parent.id, regime="head", n=2)
    assert result.input_format == "jsonl"
    assert store.read(result.object) == b"".join(RECORDS.splitlines(keepends=True)[:2])


def test_head_stops_reading_early(store):
    lines = b"".join(b'{"i":%d,"pad":"%s"}\n' % (i, b"%x" % (i * 7919)) for i in range(300_000))
    packed = gzip.compress(lines, compresslevel=1)
    parent = store.add(io.BytesIO(packed)).id
    read: list[int] = []
    sample_object(store, parent, regime="head", n=10, progress=read.append)
    assert 0 < sum(read) <= 256 * 1024 < len(packed)
    full: list[int] = []
    sample_object(store, parent, regime="random", n=10, progress=full.append)
    assert sum(full) == len(packed)


@pytest.mark.parametrize(
    "params",
    [
        {"regime": "head"},
        {"regime": "head", "n": 0},
        {"regime": "head", "n": 3, "seed": 1},
        {"regime": "random", "n": 3, "offset": 2},
        {"regime": "random", "n": 3, "stride": 2},
        {"regime": "systematic"},
        {"regime": "systematic", "stride": 0},
        {"regime": "systematic", "stride": 2, "n": 5},
        {"regime": "cluster", "n": 3},
        {"regime": "head", "n": 3, "offset": -1},
    ],
)
def test_bad_parameters(store, parent, params):
    with pytest.raises(UsageError):
        sample_object(store, parent, **params)
    assert store.list_refs("samples/") == []
