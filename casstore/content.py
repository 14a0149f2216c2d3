"""What a byte stream contains, and checks that run over it as it streams past.

Two jobs, both for downloads (and later for samples):

* :func:`sniff` names the format from the first bytes: a compression wrapper (gzip, bz2,
  xz, zstd, zip…) or, for plain data, JSON, JSON-lines, CSV, text or binary.
* :func:`checker_for` picks one small strategy object per format (the Strategy pattern in
  its plain Python form: objects with the same two methods, no base class needed). For a
  compressed stream it decompresses on the fly, which checks the format's own CRC or
  trailer and notices truncation, and it measures the content: SHA-256 of the decompressed
  bytes, their size, and for text the line count (records, for JSON-lines).
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import lzma
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import zstandard

from casstore.errors import IntegrityError
from casstore.formats import sniff_magic

SNIFF_BYTES = 1024
_NEWLINE_PAIR = re.compile(rb"(?=\n\n)")
_OUT_CHUNK = 1 << 20  # bound on decompressed output per step: memory stays flat


def sniff_text(head: bytes) -> str:
    """Name the format of uncompressed data from its first bytes.

    Returns one of ``json``, ``jsonl``, ``csv``, ``text``, ``binary``.
    """
    if not head:
        return "binary"
    if b"\x00" in head:
        return "binary"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end
            return "binary"
        text = head[: exc.start].decode("utf-8")
    stripped = text.lstrip("\ufeff \t\r\n")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    complete = lines[:-1] if len(lines) > 1 and not text.endswith("\n") else lines
    if stripped.startswith("["):
        return "json"
    if stripped.startswith("{"):
        if len(complete) >= 2 and all(
            ln.lstrip().startswith("{") and ln.rstrip().endswith("}") for ln in complete
        ):
            return "jsonl"
        return "json"
    if len(complete) >= 2:
        try:
            dialect = csv.Sniffer().sniff("\n".join(complete[:20]), delimiters=",;\t|")
            sample = io.StringIO("\n".join(complete[:20]))
            widths = {len(row) for row in csv.reader(sample, dialect)}
            if len(widths) == 1 and widths.pop() > 1:
                return "csv"
        except csv.Error:
            pass
    return "text"


def sniff(head: bytes) -> str:
    """The format of a stream from its first bytes: a compression format or :func:`sniff_text`."""
    return sniff_magic(head) or sniff_text(head)


@dataclass
class ContentResult:
    """What a checker learned about a stream."""

    format: str
    content_format: str | None = None
    content_sha256: str | None = None
    uncompressed_size: int | None = None
    line_count: int | None = None
    record_count: int | None = None


class Checker(Protocol):
    """A format strategy: fed every chunk of the raw stream, then asked for a result."""

    def update(self, chunk: bytes | memoryview) -> None:
        """Take the next raw chunk."""

    def finish(self) -> ContentResult:
        """End of stream: return what was learned, or raise :class:`IntegrityError`."""


class _LineCounter:
    """Counts lines and non-empty lines across chunk boundaries."""

    def __init__(self) -> None:
        self.lines = 0
        self.blank = 0
        self.last = b"\n"
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        if not data:
            return
        b = bytes(data) if isinstance(data, memoryview) else data
        self.size += len(b)
        self.lines += b.count(b"\n")
        # Empty lines: every newline that directly follows another one (overlapping).
        self.blank += len(_NEWLINE_PAIR.findall(b)) + (
            1 if self.last == b"\n" and b[:1] == b"\n" else 0
        )
        self.last = b[-1:]

    def totals(self) -> tuple[int, int]:
        """(lines, non-empty lines); a last line without a newline still counts."""
        lines = self.lines + (1 if self.size and self.last != b"\n" else 0)
        leading_blank = 0  # a stream starting with "\n" has one empty first line
        return lines, max(lines - self.blank - leading_blank, 0)


class PlainChecker:
    """Uncompressed data: count lines for text formats; nothing to verify in the bytes."""

    def __init__(self, fmt: str) -> None:
        self.format = fmt
        self.counter = _LineCounter() if fmt in ("json", "jsonl", "csv", "text") else None

    def update(self, chunk: bytes | memoryview) -> None:
        if self.counter is not None:
            self.counter.update(chunk)

    def finish(self) -> ContentResult:
        if self.counter is None:
            return ContentResult(format=self.format)
        lines, records = self.counter.totals()
        return ContentResult(
            format=self.format,
            line_count=lines,
            record_count=records if self.format == "jsonl" else None,
        )


class _ZstdFrames:
    """Walks zstd frame and block headers to know whether the stream ended cleanly.

    zstd's streaming decoder accepts a stream cut at any point without complaint, so the
    frame structure (RFC 8878: frame header, blocks with a last-block bit, optional
    checksum; skippable frames) is followed here, header by header, without decoding.
    """

    _MAGIC = 0xFD2FB528

    def __init__(self) -> None:
        self.buf = b""
        self.need = 4
        self.state = "magic"
        self.skip = 0
        self.after_skip = "magic"
        self.checksum = False
        self.frames = 0

    def at_boundary(self) -> bool:
        return self.state == "magic" and not self.buf and not self.skip and self.frames > 0

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n:
            if self.skip:
                k = min(self.skip, n - i)
                self.skip -= k
                i += k
                if not self.skip:
                    self._goto(self.after_skip)
                continue
            take = min(self.need - len(self.buf), n - i)
            self.buf += data[i : i + take]
            i += take
            if len(self.buf) == self.need:
                head, self.buf = self.buf, b""
                self._parse(head)

    def _goto(self, state: str) -> None:
        self.state = state
        self.need = 4 if state == "magic" else 3

    def _parse(self, head: bytes) -> None:
        if self.state == "magic":
            magic = int.from_bytes(head, "little")
            if magic == self._MAGIC:
                self.state, self.need = "fhd", 1
            elif magic & 0xFFFFFFF0 == 0x184D2A50:
                self.state, self.need = "skipsize", 4
            else:
                raise IntegrityError(
                    "zstd stream is corrupt: data after the last frame", what="stream"
                )
        elif self.state == "skipsize":
            self.frames += 1
            self.skip = int.from_bytes(head, "little")
            self.after_skip = "magic"
            if not self.skip:
                self._goto("magic")
        elif self.state == "fhd":
            fhd = head[0]
            single = bool(fhd & 0x20)
            self.checksum = bool(fhd & 0x04)
            rest = (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
            rest += ((1 if single else 0), 2, 4, 8)[fhd >> 6]
            self.skip, self.after_skip = rest, "block"
            if not rest:
                self._goto("block")
        else:  # block header
            value = int.from_bytes(head, "little")
            last, btype, size = value & 1, (value >> 1) & 3, value >> 3
            if btype == 3:
                raise IntegrityError("zstd stream is corrupt: reserved block type", what="stream")
            payload = 1 if btype == 1 else size
            if last:
                self.frames += 1
                payload += 4 if self.checksum else 0
                self.after_skip = "magic"
            else:
                self.after_skip = "block"
            self.skip = payload
            if not payload:
                self._goto(self.after_skip)


class StreamInflater:
    """gzip, bz2 or xz pushed in pieces, decompressed in pieces of at most ``out_size``.

    Concatenated members (gzip) and streams (bz2, xz) are followed, as the command-line
    tools do. Bounded output means a small malicious input cannot expand in memory.
    :attr:`ended` says whether the data so far stops exactly at an end marker; corrupt
    data raises the decompressor's own error (``zlib.error``, ``OSError``, ``EOFError``,
    ``lzma.LZMAError``). Used by the download checker and by ``cas sample``.
    """

    def __init__(self, fmt: str, out_size: int = _OUT_CHUNK) -> None:
        self.format = fmt
        self.out_size = out_size
        self.ended = False
        self._d = self._new()

    def _new(self) -> Any:
        if self.format == "gzip":
            return zlib.decompressobj(wbits=31)
        if self.format == "bz2":
            return bz2.BZ2Decompressor()
        return lzma.LZMADecompressor()

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Decompress ``data``; yields the output it completes, in bounded pieces."""
        d = self._d
        gzip = self.format == "gzip"
        while True:
            if self.ended:
                if not data:
                    return
                self._d = d = self._new()  # the next member or stream
                self.ended = False
            piece = d.decompress(data, self.out_size)
            if piece:
                yield piece
            if d.eof:
                self.ended = True
                data = d.unused_data
                continue
            if gzip:
                data = d.unconsumed_tail
                # Output was capped: zlib may hold more even when no input is left.
                if not data and len(piece) < self.out_size:
                    return
            else:
                data = b""
                if d.needs_input:
                    return


class CompressedChecker:
    """A compressed stream: decompress as it arrives, hash and count the content.

    Concatenated members (gzip, bz2, xz) and frames (zstd) are followed, as the
    command-line tools do. Output is produced in bounded pieces, so a small malicious
    input cannot expand in memory. Corruption raises at once, truncation at :meth:`finish`.
    """

    def __init__(self, fmt: str) -> None:
        self.format = fmt
        self.sha = hashlib.sha256()
        self.counter = _LineCounter()
        self.head = b""
        if fmt == "zstd":
            self._frames = _ZstdFrames()
            self._zw = zstandard.ZstdDecompressor().stream_writer(
                _Take(self._take), write_size=_OUT_CHUNK
            )
        else:
            self._inflater = StreamInflater(fmt)

    def update(self, chunk: bytes | memoryview) -> None:
        data = bytes(chunk)
        if not data:
            return
        try:
            if self.format == "zstd":
                self._frames.feed(data)
                self._zw.write(data)
            else:
                for piece in self._inflater.feed(data):
                    self._take(piece)
        except (zlib.error, OSError, EOFError, lzma.LZMAError, zstandard.ZstdError) as exc:
            raise IntegrityError(
                f"{self.format} stream is corrupt: {exc}", what="stream", actual=str(exc)
            ) from exc

    def _take(self, out: bytes) -> None:
        if not out:
            return
        if len(self.head) < SNIFF_BYTES:
            self.head += out[: SNIFF_BYTES - len(self.head)]
        self.sha.update(out)
        self.counter.update(out)

    def finish(self) -> ContentResult:
        if self.format == "zstd":
            self._zw.flush()
            complete = self._frames.at_boundary()
        else:
            complete = self._inflater.ended
        if not complete:
            raise IntegrityError(
                f"{self.format} stream is truncated: it ends before its own end marker",
                what="stream",
            )
        content = sniff_text(self.head)
        lines, records = self.counter.totals()
        text = content in ("json", "jsonl", "csv", "text")
        return ContentResult(
            format=self.format,
            content_format=content,
            content_sha256=self.sha.hexdigest(),
            uncompressed_size=self.counter.size,
            line_count=lines if text else None,
            record_count=records if content == "jsonl" else None,
        )


class _Take:
    """A file-like sink that hands each decompressed piece to a function."""

    def __init__(self, fn: Callable[[bytes], None]) -> None:
        self.fn = fn

    def write(self, data: bytes) -> int:
        self.fn(bytes(data))
        return len(data)


STREAM_FORMATS = ("gzip", "bz2", "xz", "zstd")


def checker_for(head: bytes) -> PlainChecker | CompressedChecker:
    """The strategy for a stream starting with ``head`` (at least the first few bytes)."""
    fmt = sniff(head)
    if fmt in STREAM_FORMATS:
        return CompressedChecker(fmt)
    return PlainChecker(fmt)
