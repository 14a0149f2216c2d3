"""Test data for sampling: records written in every format and layout, and compressed."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
from typing import Any

import zstandard

# Formats as the sampler names them, with the JSON array in each of its layouts.
LAYOUTS = ("json-lines", "json-indent", "json-oneline", "jsonl", "csv", "text")
CODECS = ("none", "gzip", "bz2", "zstd", "xz")


def encode(records: list[Any], layout: str) -> bytes:
    """``records`` written in ``layout``.

    JSON layouts take JSON values; ``csv`` takes lists of strings (the first is the
    header); ``text`` takes strings without line breaks.
    """
    if layout == "json-lines":  # one record per line, as large dumps do
        body = b",\n".join(json.dumps(r).encode() for r in records)
        return b"[\n" + body + b"\n]\n"
    if layout == "json-indent":
        return json.dumps(records, indent=2, ensure_ascii=False).encode()
    if layout == "json-oneline":
        return json.dumps(records, separators=(",", ":"), ensure_ascii=False).encode()
    if layout == "jsonl":
        return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)
    if layout == "csv":
        out = io.StringIO(newline="")
        csv.writer(out, lineterminator="\n").writerows(records)
        return out.getvalue().encode()
    if layout == "text":
        return "".join(f"{r}\n" for r in records).encode()
    raise ValueError(layout)


def decode(data: bytes, layout: str) -> list[Any]:
    """The records of a sample (CSV: the rows after the header, which must be kept)."""
    if layout.startswith("json-"):
        return json.loads(data)
    if layout == "jsonl":
        return [json.loads(line) for line in data.splitlines()]
    if layout == "csv":
        rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
        return rows[1:]
    if layout == "text":
        return data.decode().splitlines()
    raise ValueError(layout)


def compress(data: bytes, codec: str) -> bytes:
    """``data`` compressed with ``codec`` (``none`` leaves it as it is)."""
    if codec == "none":
        return data
    if codec == "gzip":
        return gzip.compress(data, mtime=0)
    if codec == "bz2":
        return bz2.compress(data)
    if codec == "xz":
        return lzma.compress(data)
    if codec == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    raise ValueError(codec)


def input_format(layout: str, codec: str) -> str:
    """What the sample record must call this input."""
    fmt = "json" if layout.startswith("json-") else layout
    return fmt if codec == "none" else f"{fmt}+{codec}"
