import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pydantic
import pytest

from casstore._version import __version__
from casstore.errors import BadRecord, IntegrityError
from casstore.records import (
    SCHEMA_VERSION,
    DeriveRecord,
    ImportRecord,
    canonical_bytes,
    load_records,
    meta_dir,
    parse_record,
    record_id,
    record_names,
    write_record,
)
from tests._helpers import sha256

OID = sha256(b"object")
OTHER = sha256(b"other")
B3 = "b" * 64
WHEN = datetime(2026, 11, 22, 16, 5, 1, 123456, tzinfo=UTC)


def imp(**kw) -> ImportRecord:
    fields = {"object": OID, "size": 6, "blake3": B3, "created": WHEN, "user": "u", "host": "h"}
    fields.update(kw)
    return ImportRecord(**fields)


@pytest.fixture
def dirs(tmp_path):
    objects, tmp = tmp_path / "objects", tmp_path / "tmp"
    objects.mkdir()
    tmp.mkdir()
    return objects, tmp


def stored(objects, rid, oid=OID):
    return meta_dir(objects, oid) / f"{rid}.json"


# ---- canonical form -------------------------------------------------------------------


def test_canonical_bytes_are_sorted_compact_utc_and_omit_none():
    data = canonical_bytes(imp(path="/data/x.json"))
    doc = json.loads(data)
    assert data == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert doc["created"] == "2026-11-22T16:05:01.123456Z"
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["type"] == "import"
    assert doc["producer"] == {"name": "cas", "version": __version__}
    assert "source_id" not in doc and "dataset" not in doc  # None is left out
    assert doc["parents"] == []


def test_created_in_another_timezone_is_stored_in_utc():
    plus2 = timezone(timedelta(hours=2))
    r = imp(created=datetime(2026, 11, 22, 18, 5, 1, 123456, tzinfo=plus2))
    assert json.loads(canonical_bytes(r))["created"] == "2026-11-22T16:05:01.123456Z"
    assert canonical_bytes(r) == canonical_bytes(imp())


def test_created_without_microseconds_still_has_six_digits():
    r = imp(created=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert json.loads(canonical_bytes(r))["created"] == "2026-01-02T03:04:05.000000Z"


def test_naive_times_are_refused():
    with pytest.raises(pydantic.ValidationError):
        imp(created=datetime(2026, 1, 1))


def test_non_ascii_text_is_utf8_not_escaped():
    data = canonical_bytes(imp(path="/données/ü.json"))
    assert "/données/ü.json".encode() in data


def test_record_id_is_sha256_of_canonical_bytes():
    data = canonical_bytes(imp())
    assert record_id(data) == hashlib.sha256(data).hexdigest()


def test_default_created_is_now_in_utc():
    before = datetime.now(UTC)
    r = ImportRecord(object=OID, size=1, blake3=B3)
    assert before <= r.created <= datetime.now(UTC)
    assert r.created.tzinfo is not None and r.created.utcoffset() == timedelta(0)


def test_records_are_immutable():
    with pytest.raises(pydantic.ValidationError):
        imp().size = 7  # type: ignore[misc]


def test_derive_record_carries_transform_and_params():
    r = DeriveRecord(
        object=OID,
        size=6,
        blake3=B3,
        created=WHEN,
        parents=(OTHER,),
        transform="head",
        params={"n": "100", "seed": "7"},
    )
    doc = json.loads(canonical_bytes(r))
    assert doc["type"] == "derive"
    assert doc["parents"] == [OTHER]
    assert doc["transform"] == "head"
    assert doc["params"] == {"n": "100", "seed": "7"}
    assert parse_record(canonical_bytes(r)) == r


@pytest.mark.parametrize(
    "fields",
    [
        {"object": "not-an-id"},
        {"blake3": "xyz"},
        {"size": -1},
        {"parents": ("abc",)},
        {"unexpected": 1},
    ],
)
def test_invalid_fields_are_refused(fields):
    with pytest.raises(pydantic.ValidationError):
        imp(**fields)


# ---- parse / load checks ----------------------------------------------------------------


def test_parse_round_trip():
    r = imp(source_id="systems", dataset="daily", path="/x")
    data = canonical_bytes(r)
    back = parse_record(data, name=record_id(data), object_id=OID)
    assert back == r
    assert type(back) is ImportRecord


def test_parse_rejects_bytes_that_do_not_match_the_name():
    data = canonical_bytes(imp())
    with pytest.raises(BadRecord) as info:
        parse_record(data, name=sha256(b"nope"))
    assert info.value.what == "record-hash"
    assert isinstance(info.value, IntegrityError)


def test_parse_rejects_non_canonical_bytes():
    data = json.dumps(json.loads(canonical_bytes(imp())), indent=1).encode()
    with pytest.raises(BadRecord) as info:
        parse_record(data, name=record_id(data))
    assert info.value.what == "record-canonical"


def test_parse_rejects_schema_violations():
    doc = json.loads(canonical_bytes(imp()))
    doc["colour"] = "blue"
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(BadRecord) as info:
        parse_record(data, name=record_id(data))
    assert info.value.what == "record-schema"
    assert "colour" in str(info.value)


@pytest.mark.parametrize(("field", "value"), [("schema_version", 99), ("type", "download-v9")])
def test_parse_rejects_unknown_versions_and_types(field, value):
    doc = json.loads(canonical_bytes(imp()))
    doc[field] = value
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(BadRecord):
        parse_record(data)


def test_parse_rejects_a_record_of_another_object():
    data = canonical_bytes(imp())
    with pytest.raises(BadRecord) as info:
        parse_record(data, name=record_id(data), object_id=OTHER)
    assert info.value.what == "record-object"


def test_write_then_load(dirs):
    objects, tmp = dirs
    rid, written = write_record(objects, tmp, imp(path="/a"))
    assert written is True
    assert stored(objects, rid).read_bytes() == canonical_bytes(imp(path="/a"))
    assert record_names(objects, OID) == [rid]
    assert load_records(objects, OID) == [(rid, imp(path="/a"))]
    assert list(tmp.iterdir()) == []


def test_load_sorts_oldest_first(dirs):
    objects, tmp = dirs
    late, _ = write_record(objects, tmp, imp(dataset="late", created=WHEN + timedelta(days=1)))
    early, _ = write_record(objects, tmp, imp(dataset="early"))
    assert [rid for rid, _ in load_records(objects, OID)] == [early, late]


def test_tampered_record_is_reported(dirs):
    objects, tmp = dirs
    rid, _ = write_record(objects, tmp, imp())
    f = stored(objects, rid)
    f.chmod(0o644)
    f.write_bytes(f.read_bytes().replace(b'"size":6', b'"size":7'))
    with pytest.raises(BadRecord) as info:
        load_records(objects, OID)
    assert info.value.what == "record-hash"
    assert rid[:12] in str(info.value)


def test_renamed_record_is_reported(dirs):
    objects, tmp = dirs
    rid, _ = write_record(objects, tmp, imp())
    other = sha256(b"another name")
    stored(objects, rid).rename(stored(objects, other))
    with pytest.raises(BadRecord) as info:
        load_records(objects, OID)
    assert info.value.what == "record-hash"


def test_non_canonical_record_on_disk_is_reported(dirs):
    objects, _ = dirs
    data = json.dumps(json.loads(canonical_bytes(imp())), sort_keys=True).encode()  # spaces
    rid = record_id(data)
    f = stored(objects, rid)
    f.parent.mkdir(parents=True)
    f.write_bytes(data)
    with pytest.raises(BadRecord) as info:
        load_records(objects, OID)
    assert info.value.what == "record-canonical"


def test_record_filed_under_the_wrong_object_is_reported(dirs):
    objects, _ = dirs
    data = canonical_bytes(imp())
    f = stored(objects, record_id(data), oid=OTHER)
    f.parent.mkdir(parents=True)
    f.write_bytes(data)
    with pytest.raises(BadRecord):
        load_records(objects, OTHER)


def test_malformed_record_file_name_is_reported(dirs):
    objects, tmp = dirs
    write_record(objects, tmp, imp())
    (meta_dir(objects, OID) / "notes.json").write_bytes(b"{}")
    with pytest.raises(BadRecord):
        load_records(objects, OID)


def test_identical_provenance_written_twice_is_one_record(dirs):
    objects, tmp = dirs
    first = write_record(objects, tmp, imp())
    second = write_record(objects, tmp, imp(created=WHEN + timedelta(hours=5)))
    assert second == (first[0], False)
    assert record_names(objects, OID) == [first[0]]
    assert list(tmp.iterdir()) == []


def test_same_record_bytes_twice_is_one_record(dirs):
    objects, tmp = dirs
    assert write_record(objects, tmp, imp())[1] is True
    assert write_record(objects, tmp, imp())[1] is False
    assert len(record_names(objects, OID)) == 1


@pytest.mark.parametrize(
    "change", [{"dataset": "d2"}, {"source_id": "s"}, {"path": "/other"}, {"user": "someone"}]
)
def test_different_provenance_makes_another_record(dirs, change):
    objects, tmp = dirs
    a, _ = write_record(objects, tmp, imp())
    b, written = write_record(objects, tmp, imp(**change))
    assert written and a != b
    assert len(record_names(objects, OID)) == 2


def test_no_records():
    assert record_names(Path("/nonexistent"), OID) == []


def test_created_before_year_1000_round_trips():
    """strftime('%Y') does not pad years below 1000, so such a record cannot be reloaded."""
    r = imp(created=datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC))
    data = canonical_bytes(r)
    assert parse_record(data, name=record_id(data)) == r


def test_download_record_round_trips_with_its_own_times():
    from casstore.records import DownloadRecord, IntegrityCheck

    plus1 = timezone(timedelta(hours=1))
    r = DownloadRecord(
        object=OID,
        size=6,
        blake3=B3,
        created=WHEN,
        url="https://example.org/dump.json.gz",
        final_url="https://cdn.example.org/dump.json.gz",
        http_status=200,
        http_version="HTTP/2",
        etag='"abc"',
        integrity=(IntegrityCheck(tier="sha256", outcome="passed"),),
        started=datetime(2026, 11, 22, 17, 0, 0, tzinfo=plus1),
        finished=WHEN,
    )
    data = canonical_bytes(r)
    doc = json.loads(data)
    assert doc["type"] == "download"
    assert doc["started"] == "2026-11-22T16:00:00.000000Z"
    assert "weak_etag" not in doc
    assert parse_record(data, name=record_id(data)) == r


def test_valid_records_skips_bad_ones(dirs):
    from casstore.records import valid_records

    objects, tmp = dirs
    good, _ = write_record(objects, tmp, imp())
    (meta_dir(objects, OID) / f"{sha256(b'x')}.json").write_bytes(b"{}")
    assert [rid for rid, _ in valid_records(objects, OID)] == [good]
    with pytest.raises(BadRecord):
        load_records(objects, OID)


def test_identical_provenance_from_racing_writers_is_one_record(dirs):
    """Four threads write the same provenance for 300 objects at once: one record each."""
    import threading

    objects, tmp = dirs
    oids = [sha256(f"object {i}".encode()) for i in range(300)]
    start = threading.Barrier(4)
    errors = []

    def writer():
        start.wait()
        try:
            for oid in oids:
                write_record(objects, tmp, imp(object=oid, created=datetime.now(UTC)))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = {oid: len(record_names(objects, oid)) for oid in oids}
    duplicated = sum(1 for n in counts.values() if n > 1)
    assert ([repr(e) for e in errors], duplicated) == ([], 0)
