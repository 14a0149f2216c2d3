import bz2
import gzip
import io
import lzma
import zipfile

import pytest
import zstandard

from casstore.formats import COMPRESSED_FORMATS, is_compressed, sniff_magic

TEXT = b'{"a": 1, "b": [1, 2, 3]}\n' * 10


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", TEXT)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (gzip.compress(TEXT), "gzip"),
        (bz2.compress(TEXT), "bz2"),
        (lzma.compress(TEXT), "xz"),
        (zstandard.ZstdCompressor().compress(TEXT), "zstd"),
        (_zip(), "zip"),
        (b"PAR1" + b"\x00" * 20, "parquet"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "png"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 20, "jpeg"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
        (b"\x00\x00\x00\x18ftypmp42", "mp4"),
        (b"%PDF-1.7\n", "pdf"),
    ],
)
def test_sniff_magic_names_the_format(data, name):
    assert sniff_magic(data[:16]) == name


@pytest.mark.parametrize("data", [b"", b"\x1f", TEXT, b"hello world", b"\x00" * 32])
def test_sniff_magic_unknown_or_short_input(data):
    assert sniff_magic(data) is None
    assert is_compressed(data) is False


@pytest.mark.parametrize(
    "data",
    [gzip.compress(TEXT), bz2.compress(TEXT), lzma.compress(TEXT), _zip(), b"\x89PNG\r\n\x1a\n"],
)
def test_already_compressed_formats(data):
    assert is_compressed(data[:16])


def test_pdf_is_recognised_but_not_treated_as_compressed():
    assert is_compressed(b"%PDF-1.7\n") is False


def test_the_issue_s_compressed_formats_are_all_known():
    wanted = {"gzip", "bz2", "xz", "zstd", "zip", "parquet", "png", "jpeg"}
    assert wanted <= COMPRESSED_FORMATS
