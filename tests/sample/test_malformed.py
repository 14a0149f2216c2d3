"""Malformed input: one `cas: error:` line naming the record and byte offset; nothing stored."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re

import pytest
import zstandard

from tests._helpers import check_store


def snapshot(store) -> tuple[set[str], dict[str, str]]:
    found = check_store(store.root)  # also: tmp/ is empty, records valid, index agrees
    return set(found["objects"]), found["refs"]


def run_bad(store, cas, data: bytes, *args: str) -> str:
    """Sample ``data``; assert it fails cleanly and changes nothing; return the message."""
    parent = store.add(io.BytesIO(data)).id
    before = snapshot(store)
    result = cas("sample", parent, *args)
    assert result.exit_code == 1, result
    assert result.stdout == ""
    assert result.stderr.startswith("cas: error: ") and result.stderr.count("\n") == 1, result
    assert snapshot(store) == before, "a failed sample left something behind"
    return result.stderr


def at(data: bytes, marker: bytes) -> int:
    return data.index(marker)


TRUNCATED = b'[\n{"a":1},\n{"a":2},\n{"a":3'
MIDDLE = b'[\n{"a":1},\n{"a":[2}},\n{"a":3}\n]\n'
AFTER = b'[\n{"a":1},\n{"a":2}\n]\n  xyz\n'
BETWEEN = b'[{"a":1} , {"a":2} oops, {"a":3}]'
DANGLING = b'[{"a":1}, {"a":2},]'
NEWLINE_IN_STRING = b'[\n{"a":"one\ntwo"},\n{"a":2}\n]'


@pytest.mark.parametrize(
    ("data", "args", "record", "offset", "problem"),
    [
        (TRUNCATED, ["--head", "10"], 3, len(TRUNCATED), "the input ends inside record 3"),
        (MIDDLE, ["--random", "1"], 2, at(MIDDLE, b"}},"), "unbalanced '}'"),
        (MIDDLE, ["--systematic", "5"], 2, at(MIDDLE, b"}},"), "unbalanced '}'"),
        (AFTER, ["--systematic", "1"], 3, at(AFTER, b"xyz"), "unexpected 'x' after the end"),
        (BETWEEN, ["--random", "2"], 3, at(BETWEEN, b"oops"), "expected ',' or ']' after record 2"),
        (DANGLING, ["--head", "5"], 3, len(DANGLING) - 1, "expected a record after ','"),
        (NEWLINE_IN_STRING, ["--head", "5"], 1, at(NEWLINE_IN_STRING, b"\ntwo"), "control"),
        (b'{"a":1}\n{"a":[1}\n{"a":3}\n', ["--systematic", "2"], 2, 15, "unbalanced '}'"),
        (b'{"a":1}\n{"a":1} {"b":2}\n', ["--random", "1"], 2, 16, "unexpected '{' after"),
        (b'a,b\n1,2\n3,"x\ny\n', ["--random", "5"], 2, 15, "inside a quoted field"),
        (b'id,name\n1,x\n2,y\n3,"open\n', ["--head", "9"], 3, 24, "inside a quoted field"),
    ],
)
def test_structural_errors_name_record_and_offset(store, cas, data, args, record, offset, problem):
    message = run_bad(store, cas, data, *args)
    assert f"at record {record}, byte {offset}: " in message
    assert problem in message


@pytest.mark.parametrize("codec", ["gzip", "bz2", "xz", "zstd"])
def test_errors_count_bytes_of_the_decompressed_data(store, cas, codec):
    pack = {
        "gzip": gzip.compress,
        "bz2": bz2.compress,
        "xz": lzma.compress,
        "zstd": zstandard.ZstdCompressor().compress,
    }[codec]
    message = run_bad(store, cas, pack(MIDDLE), "--systematic", "3")
    assert f"malformed json input at record 2, byte {at(MIDDLE, b'}},')}: " in message


def test_bad_content_in_a_kept_record(store, cas):
    data = b'[\n{"a":1},\n{"a":tru},\n{"a":3}\n]\n'
    message = run_bad(store, cas, data, "--head", "3")
    assert f"at record 2, byte {at(data, b'tru')}: invalid JSON" in message


def test_bad_content_in_a_kept_json_lines_record(store, cas):
    data = b'{"a":1}\n{"a":2}\n{"a":[1,]}\n'
    message = run_bad(store, cas, data, "--systematic", "2")
    assert f"at record 3, byte {at(data, b']}')}: invalid JSON" in message


def test_content_of_records_not_kept_is_not_parsed(store, cas):
    """Documented: structure is checked everywhere, content only where records are kept."""
    data = b'[\n{"a":1},\n{"a":tru},\n{"a":3}\n]\n'
    parent = store.add(io.BytesIO(data)).id
    result = cas("sample", parent, "--systematic", "2")
    assert result.exit_code == 0, result
    assert store.read(result.lines[0].split()[0]) == b'[{"a":1},\n{"a":3}]\n'


@pytest.mark.parametrize(
    ("pack", "name"),
    [
        (gzip.compress, "gzip"),
        (bz2.compress, "bz2"),
        (lzma.compress, "xz"),
        (zstandard.ZstdCompressor().compress, "zstd"),
    ],
)
def test_truncated_compressed_stream(store, cas, pack, name):
    data = b"[\n" + b",\n".join(b'{"i":%d,"pad":"%s"}' % (i, b"x" * 50) for i in range(2000))
    data += b"\n]\n"
    packed = pack(data)
    message = run_bad(store, cas, packed[: len(packed) * 2 // 3], "--random", "3")
    assert re.search(rf"at record \d+, byte \d+: {name} stream is truncated", message), message


def test_corrupt_gzip_stream(store, cas):
    packed = bytearray(gzip.compress(b"[" + b",".join(b"%d" % i for i in range(50_000)) + b"]"))
    packed[len(packed) // 2 : len(packed) // 2 + 8] = b"\xff" * 8
    message = run_bad(store, cas, bytes(packed), "--random", "3")
    assert re.search(r"at record \d+, byte \d+: gzip stream is corrupt", message), message


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x00\x01\x02binary\x00" * 10, "cannot sample binary data"),
        (b"PK\x03\x04" + b"\x00" * 40, "cannot sample zip data"),
        (gzip.compress(b"\x00\x00\x00tar-ish\x00" * 100), "cannot sample binary data"),
    ],
)
def test_formats_that_cannot_be_sampled(store, cas, data, problem):
    assert problem in run_bad(store, cas, data, "--head", "1")
