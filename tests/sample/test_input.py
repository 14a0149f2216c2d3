"""Decompression and format detection: members and frames, bounded pieces, formats."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma

import pytest
import zstandard

from casstore.errors import SampleFormatError
from casstore.sample import sample_object
from casstore.sample_input import detect, inflate, open_input

PACK = {
    "gzip": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "zstd": zstandard.ZstdCompressor().compress,
}


@pytest.mark.parametrize("codec", sorted(PACK))
def test_concatenated_members_and_frames_are_one_stream(store, codec):
    """Like zcat, bzcat, xzcat and zstdcat: every member is read, in order."""
    lines = [b'{"i":%d}\n' % i for i in range(90)]
    packed = b"".join(PACK[codec](b"".join(lines[k : k + 30])) for k in range(0, 90, 30))
    parent = store.add(io.BytesIO(packed)).id
    result = sample_object(store, parent, regime="systematic", stride=10, offset=5)
    assert store.read(result.object) == b"".join(lines[5::10])
    assert result.input_format == f"jsonl+{codec}"


@pytest.mark.parametrize("codec", sorted(PACK))
def test_decompressed_pieces_are_bounded(codec):
    """A small input that expands a lot never comes out in one large piece."""
    packed = PACK[codec](b"x" * (8 << 20))
    pieces = list(inflate(iter([packed[i : i + 4096] for i in range(0, len(packed), 4096)]),
                          codec, 256 * 1024))  # fmt: skip
    assert sum(map(len, pieces)) == 8 << 20
    assert max(map(len, pieces)) <= 256 * 1024


def test_read_ahead_thread_gives_the_same_chunks():
    data = b"".join(b"line %d\n" % i for i in range(200_000))
    chunks = [data[i : i + 10_000] for i in range(0, len(data), 10_000)]
    plain = open_input(iter(chunks), out_size=4096)
    ahead = open_input(iter(chunks), out_size=4096, threaded=True)
    assert (plain.format, ahead.format) == ("text", "text")
    assert b"".join(ahead.chunks) == b"".join(plain.chunks) == data


def test_read_ahead_stops_when_closed():
    def endless():
        while True:
            yield b"[1,2,3],\n" * 1000

    src = open_input(endless(), threaded=True)
    next(src.chunks)
    src.chunks.close()  # returns: the helper thread noticed and ended


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b'[{"a": 1}]', "json"),
        (b'\xef\xbb\xbf\n  [\n{"a": 1}', "json"),
        (b'{"a": 1}\n{"a": 2}\n', "jsonl"),
        (b'{"a": 1}', "jsonl"),
        (b'a,b\n1,"two\nlines"\n3,4\n', "csv"),
        (b"a;b\n1;2\n", "csv"),
        (b"a\tb\tc\n1\t2\t3\n4\t5\t6\n", "csv"),
        (b"Hello, world.\nNo commas here\nA, b, c\n", "text"),
        (b"one column\nonly\n", "text"),
        (b"caf\xe9\nlatin-1 text\n", "text"),
        (b"", "text"),
    ],
)
def test_detect(head, fmt):
    assert detect(head) == fmt


def test_over_long_lines_are_refused(store, monkeypatch):
    monkeypatch.setattr("casstore.sample_lines.MAX_RECORD", 1000)
    data = b"short\n" + b"x" * (3 << 20) + b"\nshort\n"  # longer than a chunk read
    parent = store.add(io.BytesIO(data)).id
    with pytest.raises(SampleFormatError, match=r"at record 2, byte 6: a record longer than"):
        sample_object(store, parent, regime="random", n=2)
