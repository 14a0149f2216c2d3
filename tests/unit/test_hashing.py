import hashlib

import blake3
import pytest

from casstore.hashing import _THREAD_MIN, Digests, StreamHasher, digest_bytes
from tests._helpers import random_bytes

KIB = 1024
DATA = random_bytes(3 * 1024 * KIB + 17, seed=1)


def expected(data: bytes, md5: bool = False) -> Digests:
    return Digests(
        sha256=hashlib.sha256(data).hexdigest(),
        blake3=blake3.blake3(data).hexdigest(),
        size=len(data),
        md5=hashlib.md5(data).hexdigest() if md5 else None,
    )


def feed(chunks, *, md5: bool = False) -> Digests:
    h = StreamHasher(md5=md5)
    for c in chunks:
        h.update(c)
    return h.finish()


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    out, i = [], 0
    for n in sizes:
        out.append(data[i : i + n])
        i += n
    out.append(data[i:])
    return out


@pytest.mark.parametrize(
    "sizes",
    [
        [],  # one chunk of everything (threaded)
        [1],
        [_THREAD_MIN - 1, 1, _THREAD_MIN, _THREAD_MIN + 1],  # around the thread threshold
        [1024 * KIB] * 3,  # the chunk size objects.py uses
        [10, 600 * KIB, 0, 3, 900 * KIB],  # small, large, empty, mixed
        [64 * KIB] * 40,  # all inline
    ],
)
@pytest.mark.parametrize("md5", [False, True])
def test_chunked_digests_equal_hashlib_and_blake3(sizes, md5):
    assert feed(split(DATA, sizes), md5=md5) == expected(DATA, md5=md5)


def test_empty_input():
    assert feed([]) == expected(b"")
    assert digest_bytes(b"") == expected(b"")


def test_digest_bytes():
    assert digest_bytes(b"hello\n") == expected(b"hello\n")
    assert digest_bytes(DATA) == expected(DATA)


def test_two_reused_buffers_as_objects_py_uses_them():
    """A chunk stays untouched only until the next update: alternate two buffers."""
    n = 512 * KIB
    bufs = (bytearray(n), bytearray(n))
    h = StreamHasher(md5=True)
    for i, start in enumerate(range(0, len(DATA), n)):
        piece = DATA[start : start + n]
        buf = bufs[i % 2]
        buf[: len(piece)] = piece
        h.update(memoryview(buf)[: len(piece)])
    assert h.finish() == expected(DATA, md5=True)


def test_md5_only_when_asked():
    assert feed([b"abc"]).md5 is None
    assert feed([b"abc"], md5=True).md5 == hashlib.md5(b"abc").hexdigest()


def test_close_without_finish_after_a_threaded_chunk():
    h = StreamHasher()
    h.update(DATA[: 2 * _THREAD_MIN])
    h.close()
    h.close()  # idempotent
