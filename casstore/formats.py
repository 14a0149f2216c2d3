"""Recognise data formats from their first bytes (magic numbers).

Used by the compression policy (data that is already compressed is stored raw) and, later,
by fetch and sample to pick a format strategy.
"""

from __future__ import annotations

# (magic, offset, name, already_compressed)
_MAGIC: tuple[tuple[bytes, int, str, bool], ...] = (
    (b"\x1f\x8b", 0, "gzip", True),
    (b"BZh", 0, "bz2", True),
    (b"\xfd7zXZ\x00", 0, "xz", True),
    (b"\x28\xb5\x2f\xfd", 0, "zstd", True),
    (b"\x04\x22\x4d\x18", 0, "lz4", True),
    (b"PK\x03\x04", 0, "zip", True),
    (b"PK\x05\x06", 0, "zip", True),
    (b"7z\xbc\xaf\x27\x1c", 0, "7z", True),
    (b"PAR1", 0, "parquet", True),
    (b"\x89PNG\r\n\x1a\n", 0, "png", True),
    (b"\xff\xd8\xff", 0, "jpeg", True),
    (b"GIF8", 0, "gif", True),
    (b"WEBP", 8, "webp", True),
    (b"ftyp", 4, "mp4", True),
    (b"%PDF-", 0, "pdf", False),
)

COMPRESSED_FORMATS = frozenset(name for _, _, name, packed in _MAGIC if packed)


def sniff_magic(head: bytes) -> str | None:
    """The format named by the magic bytes at the start of ``head``, or None."""
    for magic, offset, name, _ in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    return None


def is_compressed(head: bytes) -> bool:
    """True when ``head`` starts a format that zstd would not shrink further."""
    return sniff_magic(head) in COMPRESSED_FORMATS
