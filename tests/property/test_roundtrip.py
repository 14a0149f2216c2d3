"""Any bytes round-trip through the store; ids equal hashlib.sha256."""

import hashlib
import io
import random

import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from casstore.objects import CHUNK, ObjectStore
from casstore.store import Store
from tests._helpers import check_store

# Small arbitrary bytes, and large inputs (up to 3 chunks) built from a seed so that
# hypothesis need not generate megabytes: compressible, incompressible or mixed.
small = st.binary(max_size=4096)


@st.composite
def large(draw):
    size = draw(
        st.one_of(st.integers(0, 3 * CHUNK), st.sampled_from([CHUNK - 1, CHUNK, CHUNK + 1]))
    )
    rng = random.Random(draw(st.integers(0, 2**32)))
    kind = draw(st.sampled_from(["random", "repetitive", "mixed"]))
    if kind == "random":
        return rng.randbytes(size)
    unit = rng.randbytes(draw(st.integers(1, 64)))
    data = (unit * (size // len(unit) + 1))[:size]
    if kind == "mixed" and size:
        cut = rng.randrange(size)
        data = data[:cut] + rng.randbytes(size - cut)
    return data


any_bytes = st.one_of(small, large())


@given(data=any_bytes)
def test_any_bytes_round_trip_through_add_and_read(store: Store, data: bytes):
    result = store.add(io.BytesIO(data))
    assert result.id == hashlib.sha256(data).hexdigest()
    assert result.size == len(data)
    assert store.read(result.id) == data
    out = io.BytesIO()
    assert store.cat(result.id[:16], out) == len(data)
    assert out.getvalue() == data
    [rec] = [r for _, r in store.records(result.id)]
    assert rec.blake3 == blake3.blake3(data).hexdigest()
    assert rec.size == len(data)


@settings(max_examples=30)
@given(data=st.lists(any_bytes, min_size=1, max_size=4))
def test_a_store_full_of_arbitrary_objects_checks_out(store: Store, data: list[bytes]):
    ids = [store.add(io.BytesIO(d)).id for d in data]
    found = check_store(store.root)
    assert set(ids) <= set(found["objects"])


@given(data=any_bytes, policy=st.sampled_from(["auto", "zstd", "none"]))
def test_every_policy_returns_the_original_bytes(tmp_path, data: bytes, policy: str):
    (tmp_path / "objects").mkdir(exist_ok=True)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    objects = ObjectStore(tmp_path / "objects", tmp_path / "tmp", policy)  # type: ignore[arg-type]
    stored = objects.write(io.BytesIO(data))
    assert stored.id == hashlib.sha256(data).hexdigest()
    with objects.open(stored.id) as f:
        assert f.read() == data


@settings(max_examples=30)
@given(data=st.binary(max_size=2048))
def test_cli_add_stdin_then_cat(store: Store, cas, data: bytes):
    digest = hashlib.sha256(data).hexdigest()
    added = cas("add", "-", input=data)
    assert added.exit_code == 0, added
    assert added.stdout == f"{digest}  -\n"
    shown = cas("cat", digest)
    assert shown.exit_code == 0, shown
    assert shown.stdout_bytes == data
