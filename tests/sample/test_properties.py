"""Properties of the three regimes on every format, layout and compression.

Records carry their input position, so a sample says which records it took: head takes
the first N; random takes min(N, total) distinct records, in input order, the same ones
for the same seed (checked in a second, separate store so the recipe memo cannot help);
systematic takes exactly positions offset, offset + K, ….
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casstore.sample import sample_object
from casstore.store import Store
from tests.sample._data import CODECS, LAYOUTS, compress, decode, encode, input_format

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    # the characters that matter to a structural scanner, densely
    | st.text(alphabet='[]{}",:\\ /\n\tu', max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
# Letters, digits and harmless punctuation: nothing that would make text look like CSV.
text_lines = st.text(
    alphabet=st.characters(whitelist_categories=("L", "N")) | st.sampled_from(" .-:!?'()/"),
    max_size=30,
)
csv_fields = st.text(alphabet=st.sampled_from('ab ,"\n;x'), max_size=6)

regimes = st.one_of(
    st.builds(lambda n: {"regime": "head", "n": n}, st.integers(1, 40)),
    st.builds(
        lambda n, seed: {"regime": "random", "n": n, "seed": seed},
        st.integers(1, 40),
        st.integers(0, 2**32),
    ),
    st.builds(
        lambda k, o: {"regime": "systematic", "stride": k, "offset": o},
        st.integers(1, 7),
        st.integers(0, 12),
    ),
)


def make_records(layout: str, draw: Any) -> list[Any]:
    """Input records that carry their position (CSV: a header row first)."""
    count = draw(st.integers(0, 40))
    if layout.startswith("json-") or layout == "jsonl":
        return [{"i": i, "v": draw(json_values)} for i in range(count)]
    if layout == "csv":  # a header alone would be one line of text: no way to tell
        return [["i", "a", "b"]] + [
            [str(i), draw(csv_fields), draw(csv_fields)] for i in range(max(count, 1))
        ]
    return [f"L{i} {draw(text_lines)}".rstrip() for i in range(count)]


def position(record: Any, layout: str) -> int:
    if layout == "csv":
        return int(record[0])
    if layout == "text":
        return int(record.split()[0][1:])
    return record["i"]


def expected_positions(params: dict[str, Any], total: int) -> list[int] | None:
    """What head and systematic must take (random: None, checked by its properties)."""
    if params["regime"] == "head":
        return list(range(min(params["n"], total)))
    if params["regime"] == "systematic":
        return list(range(params["offset"], total, params["stride"]))
    return None


def store_in(tmp_path: Path) -> Store:
    return Store.init(tempfile.mkdtemp(dir=tmp_path))


@pytest.mark.parametrize("layout", LAYOUTS)
@given(data=st.data())
def test_regimes_take_the_right_records(store, tmp_path, layout, data):
    records = make_records(layout, data.draw)
    codec = data.draw(st.sampled_from(CODECS), label="codec")
    params = data.draw(regimes, label="params")
    raw = encode(records, layout)
    parent = store.add(io.BytesIO(compress(raw, codec))).id

    result = sample_object(store, parent, **params)

    body = records[1:] if layout == "csv" else records
    total = len(body)
    out = store.read(result.object)
    got = decode(out, layout)
    positions = [position(r, layout) for r in got]
    assert got == [body[p] for p in positions], "a sampled record differs from its input"
    assert result.n_taken == len(got)
    if raw:  # empty input has no format to find
        assert result.input_format == input_format(layout, codec)
    if layout == "csv":
        assert out.startswith(b"i,a,b\n"), "the header row is kept"
    want = expected_positions(params, total)
    if want is not None:
        assert positions == want
    else:
        assert len(positions) == min(params["n"], total)
        assert positions == sorted(set(positions)), "distinct records, in input order"
        # The same seed on the same input gives the same bytes, in another store too.
        with store_in(tmp_path) as other:
            again = other.add(io.BytesIO(compress(raw, codec))).id
            assert sample_object(other, again, **params).object == result.object


@pytest.mark.parametrize("layout", ["json-lines", "jsonl", "csv", "text"])
def test_sample_bytes_are_the_input_bytes(store, layout):
    """Records come out as they went in (line layouts can be compared byte for byte)."""
    if layout == "csv":
        records = [["i", "a"]] + [[str(i), f'x "{i}",\ny'] for i in range(30)]
    elif layout == "text":
        records = [f"line {i}  with  spaces " for i in range(30)]
    else:
        records = [{"i": i, "s": f'{i}é[}}\\"', "n": [i, {"d": None}]} for i in range(30)]
    raw = encode(records, layout)
    parent = store.add(io.BytesIO(raw)).id
    out = store.read(sample_object(store, parent, regime="systematic", stride=3).object)
    if layout == "json-lines":
        lines = raw.split(b",\n")
        lines[0] = lines[0].removeprefix(b"[\n")
        lines[-1] = lines[-1].removesuffix(b"\n]\n")
        assert out == b"[" + b",\n".join(lines[0::3]) + b"]\n"
    elif layout == "csv":
        rows = raw.split(b'\ny"\n')  # each row ends with its quoted field's second line
        header, rows[0] = rows[0].split(b"\n", 1)
        rows = [r + b'\ny"\n' for r in rows if r]
        assert out == header + b"\n" + b"".join(rows[0::3])
    else:
        lines = raw.splitlines(keepends=True)
        assert out == b"".join(lines[0::3])


def test_different_seeds_usually_differ(store):
    parent = store.add(io.BytesIO(encode([{"i": i} for i in range(500)], "jsonl"))).id
    ids = {sample_object(store, parent, regime="random", n=10, seed=s).object for s in range(5)}
    assert len(ids) == 5


def test_default_seed_is_zero_and_reproducible(store, tmp_path):
    raw = encode([{"i": i} for i in range(300)], "json-lines")
    parent = store.add(io.BytesIO(raw)).id
    implicit = sample_object(store, parent, regime="random", n=7)
    with store_in(tmp_path) as other:
        other_parent = other.add(io.BytesIO(raw)).id
        explicit = sample_object(other, other_parent, regime="random", n=7, seed=0)
    assert implicit.object == explicit.object
    assert implicit.record["seed"] == 0


def test_head_beyond_the_end_takes_everything(store):
    parent = store.add(io.BytesIO(encode([{"i": i} for i in range(5)], "json-indent"))).id
    result = sample_object(store, parent, regime="head", n=100)
    assert result.n_taken == 5
    assert [r["i"] for r in decode(store.read(result.object), "json-indent")] == list(range(5))


def test_empty_inputs_give_empty_samples(store):
    cases = {b"[]": b"[]\n", b"  [ \n ]\n": b"[]\n", b"": b""}
    for raw, want in cases.items():
        parent = store.add(io.BytesIO(raw)).id
        result = sample_object(store, parent, regime="random", n=3)
        assert result.n_taken == 0
        assert store.read(result.object) == want, raw


def test_csv_header_alone_is_kept(store):
    parent = store.add(io.BytesIO(b"a,b\n1,2\n")).id
    result = sample_object(store, parent, regime="systematic", stride=5, offset=1)
    assert (result.n_taken, store.read(result.object)) == (0, b"a,b\n")


@pytest.mark.parametrize(
    ("raw", "want", "taken"),
    [
        (b"a,b\r\n1,2\r\n\r\n3,4\r\n\n5,6\r\n", b"a,b\r\n1,2\r\n3,4\r\n5,6\r\n", 3),
        (b'{"a":1}\n\n   \n{"a":2}\r\n\n', b'{"a":1}\n{"a":2}\r\n', 2),
        (b"one\n\nthree\n", b"one\n\nthree\n", 3),  # text: an empty line is a line
    ],
)
def test_blank_lines(store, raw, want, taken):
    """Blank lines are not CSV or JSON-lines records; in text they are lines like others."""
    parent = store.add(io.BytesIO(raw)).id
    result = sample_object(store, parent, regime="systematic", stride=1)
    assert store.read(result.object) == want
    assert result.n_taken == taken
