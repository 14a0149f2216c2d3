"""The scanners on their own: any chunking gives the same records and the same errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casstore.errors import SampleFormatError
from casstore.jsonstream import JsonArrayScanner, balanced_elements, value_problem
from casstore.sample import ReservoirPicker
from casstore.sample_lines import LineScanner
from tests.sample._data import encode
from tests.sample.test_properties import json_values


class TakeAll:
    """A picker that wants every record."""

    def __init__(self) -> None:
        self.want = 0
        self.records: list[bytes] = []

    def take(self, index: int, record: bytes) -> None:
        assert index == self.want
        self.records.append(record)
        self.want = index + 1


def scan(data: bytes, chunk: int, fmt: str = "json") -> list[bytes]:
    picker = TakeAll()
    scanner = JsonArrayScanner(picker) if fmt == "json" else LineScanner(picker, fmt)
    for i in range(0, len(data), chunk):
        scanner.feed(data[i : i + chunk])
    assert scanner.finish() == len(picker.records)
    return picker.records


def error_of(data: bytes, chunk: int, fmt: str = "json") -> tuple[int, int] | None:
    try:
        scan(data, chunk, fmt)
    except SampleFormatError as exc:
        return exc.record, exc.offset
    return None


# Deeper than the element regex goes (REGEX_DEPTH): these take the token mode.
def nest(depth: int, leaf: object) -> object:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


deep = st.builds(nest, st.integers(4, 14), json_values)

layouts = st.sampled_from(["json-lines", "json-indent", "json-oneline"])


@given(
    records=st.lists(st.one_of(json_values, deep), max_size=12),
    layout=layouts,
    chunk=st.sampled_from([1, 2, 3, 7, 16, 64, 256, 4096]),
    crlf=st.booleans(),
)
def test_json_array_any_chunking(records, layout, chunk, crlf):
    data = encode(records, layout)
    if crlf:
        data = data.replace(b"\n", b"\r\n")  # JSON strings hold no raw newlines
    got = scan(data, chunk)
    assert [json.loads(r) for r in got] == records
    assert all(r in data for r in got), "records are the input's bytes"


@given(records=st.lists(json_values, max_size=12), chunk=st.integers(1, 64))
def test_json_lines_any_chunking(records, chunk):
    data = encode(records, "jsonl")
    got = scan(data, chunk, "jsonl")
    assert [json.loads(r) for r in got] == records
    assert b"".join(got) == data


@given(
    rows=st.lists(
        st.lists(st.text(alphabet='ab,"\n ', max_size=5), min_size=2, max_size=2), max_size=12
    ),
    chunk=st.integers(1, 64),
)
def test_csv_any_chunking(rows, chunk):
    data = encode([["h1", "h2"], *rows], "csv")
    picker = TakeAll()
    headers: list[bytes] = []
    scanner = LineScanner(picker, "csv", on_header=headers.append)
    for i in range(0, len(data), chunk):
        scanner.feed(data[i : i + chunk])
    scanner.finish()
    assert headers == [b"h1,h2\n"]
    assert b"".join(headers + picker.records) == data
    assert len(picker.records) == len(rows)


@pytest.mark.parametrize("chunk", [1, 2, 5, 9, 64])
def test_csv_blank_lines_any_chunking(chunk):
    data = b'h1,h2\r\n1,2\r\n\r\n3,4\n\n\n5,"6\n\n7"\r\n8,9\n'
    picker = TakeAll()
    scanner = LineScanner(picker, "csv", on_header=lambda row: None)
    for i in range(0, len(data), chunk):
        scanner.feed(data[i : i + chunk])
    assert scanner.finish() == 4
    assert picker.records == [b"1,2\r\n", b"3,4\n", b'5,"6\n\n7"\r\n', b"8,9\n"]


@given(
    records=st.lists(st.dictionaries(st.text(max_size=3), json_values, max_size=3), max_size=10),
    cut=st.integers(0, 10_000),
    junk=st.sampled_from([b"x", b"}", b"]", b"[", b'"', b",", b"{", b":"]),
)
def test_errors_do_not_depend_on_chunking(records, cut, junk):
    data = encode(records, "json-lines")
    at = cut % (len(data) + 1)
    broken = data[:at] + junk + data[at:]
    whole = error_of(broken, len(broken) + 1)
    for chunk in (1, 3, 16):
        assert error_of(broken, chunk) == whole


def test_huge_unwanted_element_streams_through():
    """An element far larger than a chunk, not wanted: scanned without holding it."""
    big = {"s": "x" * 3_000_000, "n": [[1, 2], {"a": "]"}]}
    data = encode([{"i": 0}, big, {"i": 2}], "json-oneline")

    class Ends(TakeAll):
        def take(self, index: int, record: bytes) -> None:
            self.records.append(record)
            self.want = 2 if index == 0 else -1

    picker = Ends()
    scanner = JsonArrayScanner(picker)
    sizes = []
    for i in range(0, len(data), 65536):
        scanner.feed(data[i : i + 65536])
        sizes.append(sum(map(len, scanner.parts or [])))
    assert [json.loads(r) for r in picker.records] == [{"i": 0}, {"i": 2}]
    assert max(sizes) == 0, "the unwanted element was kept in memory"


# ---- bulk mode ------------------------------------------------------------------------
PRETTY = json.dumps([{"a": [1, {"b": 2}]}, {"c": "},\n  {"}, {}], indent=2).encode()


@pytest.mark.parametrize(
    ("region", "boundary", "count"),
    [
        (b'{"a":1},\n{"b":"]}[{"},\n{}', b"},\n{", 3),
        (b'{"a":"\\"}"},\n{"b":"\\\\"}', b"},\n{", 2),
        (b'{"a":[1,{"b":[]}]},\r\n    {"c":{}}', b"},\r\n    {", 2),
        (b'{"a":"x\\u005c"}', b"},\n{", 1),
        (PRETTY[PRETTY.index(b"{") : PRETTY.rindex(b"}") + 1], b"\n  },\n  {", 3),
        (b'{"a":1},{"b":[2]},{"c":"x"}', b"},{", 3),
        (b"[1,2],[3],[[]]", b"],[", 3),
    ],
)
def test_bulk_mode_takes_runs_of_balanced_elements(region, boundary, count):
    assert balanced_elements(region, boundary) == count == len(region.split(boundary))


@pytest.mark.parametrize(
    ("region", "boundary"),
    [
        (b'{"a":1} x},\n{"b":2}', b"},\n{"),  # garbage after a record
        (b'{"a":1},\nx{"b":2}', b"},\n{"),  # garbage before one: no boundary there
        (b'{"a":1} {"b":2},\n{"c":3}', b"},\n{"),  # two records, no comma
        (b'{"a":[1},\n{"b":2}', b"},\n{"),  # unbalanced
        (b'{"a":"1},\n{"b":2}', b"},\n{"),  # unclosed string
        (b'{"a":"1\n"},\n{"b":2}', b"},\n{"),  # a newline inside a string
        (b'{"a":"},{"},{"b":1}', b"},{"),  # a "boundary" inside a string
        (b'{"a":1\x00},\n{"b":2}', b"},\n{"),  # a NUL byte
        (b'{"a":"\\\\"x"},\n{"b":1}', b"},\n{"),  # an escaped backslash, then a real quote
        (b'{"a":[{"x":1},{"y":2}]},{"b":1}', b"},{"),  # arrays of objects inside: not here
        (b'[{"a":1}],{"b":2}', b"],{"),  # mixed kinds
    ],
)
def test_bulk_mode_refuses_anything_else(region, boundary):
    assert balanced_elements(region, boundary) is None


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b'{"a": 1}', None),
        (b" [1, [2, [3, [4, [5, [6, [7]]]]]]] \r", None),  # deeper than the regex
        (b'{"a": tru}', None),  # content: json.loads finds it when the record is kept
        (b'{"a": [1}', (8, "unbalanced '}'")),
        (b'{"a": "1}', (9, "unterminated string")),
        (b'{"a": 1} x', (9, "unexpected 'x' after the record")),
        (b"hello", (0, "not a JSON value (starts with 'h')")),
        (b'{"a": 1', (7, "the record ends before its brackets are closed")),
    ],
)
def test_value_problem(line, problem):
    assert value_problem(line) == problem


# ---- the reservoir ------------------------------------------------------------------------
def test_reservoir_is_uniform():
    """Every position is drawn about n/total of the time (seeds fixed: deterministic)."""
    total, n, trials = 40, 5, 4000
    counts: Counter[int] = Counter()
    for seed in range(trials):
        picker = ReservoirPicker(n, seed)
        for i in range(total):
            if i == picker.want:
                picker.take(i, b"%d" % i)
        taken = [int(r) for r in picker.records()]
        assert taken == sorted(set(taken)) and len(taken) == n
        counts.update(taken)
    expected = trials * n / total  # 500
    assert set(counts) == set(range(total))
    assert all(abs(c - expected) < 0.2 * expected for c in counts.values()), counts


def test_reservoir_skips_are_drawn_not_tossed():
    """After the reservoir fills, far fewer than all records are asked for."""
    picker = ReservoirPicker(10, 1)
    asked = 0
    for i in range(100_000):
        if i == picker.want:
            asked += 1
            picker.take(i, b"")
    assert 10 < asked < 500  # about n (1 + ln(total / n)) ~ 100
