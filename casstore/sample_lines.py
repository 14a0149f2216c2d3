"""Records that are lines: plain text, JSON-lines and CSV, scanned in chunks.

A record is the input's bytes of one line (CSV: of one row, which may span lines inside
a quoted field), handed to the picker with its line end, so a sample's lines are the
input's lines. Only whole lines are looked at; the partial line at the end of a chunk
waits for the next one.

* text: every line is a record, empty ones included.
* JSON-lines: every non-blank line is a record; each is checked for structure (one
  balanced JSON value, as :mod:`casstore.jsonstream` does for arrays) and kept ones are
  parsed with :func:`json.loads`. Buffers whose lines are all ``{...}`` are proved at
  once by :func:`casstore.jsonstream.balanced_elements`.
* CSV: the first non-blank row is the header (given to ``on_header``, never sampled);
  blank lines are skipped; a quoted field may hold newlines (a row ends at a newline
  outside quotes, found by counting quotes: ``""`` inside a field counts twice). The
  number of fields per row is not checked: ragged rows are taken as they are.

A record longer than :data:`MAX_RECORD` is refused (it would have to sit in memory).
"""

from __future__ import annotations

from collections.abc import Callable

from casstore.jsonstream import (
    Picker,
    balanced_elements,
    check_json,
    format_error,
    json_problem,
    value_problem,
)

MAX_RECORD = 256 * 1024 * 1024


_QUOTES_AND_NEWLINES = bytes(b for b in range(256) if b not in b'"\n')


def _rows_are_lines(region: bytes) -> bool:
    """Whether each line of a CSV region is one row: no blank line, no newline in quotes.

    At C speed: keep quotes and newlines only, drop quote pairs; a line with an odd number
    of quotes (a quoted field that goes on to the next line) leaves one behind.
    """
    if region.startswith((b"\n", b"\r\n")) or b"\n\n" in region or b"\n\r\n" in region:
        return False
    if b'"' not in region:
        return True
    return b'"' not in region.translate(None, _QUOTES_AND_NEWLINES).replace(b'""', b"")


class LineScanner:
    """Feeds the line records of ``fmt`` (``text``, ``jsonl`` or ``csv``) to a picker.

    Call :meth:`feed` with each chunk (False once the picker wants nothing more), then
    :meth:`finish` at the end of the input.
    """

    def __init__(
        self, picker: Picker, fmt: str, *, on_header: Callable[[bytes], None] | None = None
    ) -> None:
        self.picker = picker
        self.fmt = fmt
        self.on_header = on_header
        self.count = 0  # records seen
        self.base = 0  # offset of the current buffer in the decompressed input
        self.carry: list[bytes] = []  # a partial line, in pieces
        self.carry_size = 0
        self.stopped = False
        self.header: bytes | None = None if fmt == "csv" else b""
        # CSV: the rows of a record whose quoted field is still open
        self.pending: list[bytes] = []
        self.pending_at = 0
        self.pending_size = 0

    def feed(self, chunk: bytes) -> bool:
        """Scan the next chunk; False once the picker wants no more records."""
        if self.stopped:
            return False
        if b"\n" not in chunk:  # a long line: gather its pieces, join them once
            self.carry.append(chunk)
            self.carry_size += len(chunk)
            self._check_size(self.carry_size, self.base)
            return True
        buf = b"".join((*self.carry, chunk)) if self.carry else chunk
        end = buf.rfind(b"\n") + 1
        rest = buf[end:]
        self.carry, self.carry_size = ([rest], len(rest)) if rest else ([], 0)
        region = buf[:end] if rest else buf
        ok = self._region(region)
        self.base += end
        if not ok:
            self.stopped = True
        return ok

    def finish(self) -> int:
        """End of input: the last line (even without a newline); return the record count."""
        if not self.stopped and self.carry:
            last = b"".join(self.carry) + b"\n"
            self.carry, self.carry_size = [], 0
            if not self._region(last):
                self.stopped = True
        if not self.stopped and self.pending:
            raise format_error(
                self.fmt,
                self.count + 1,
                self.base,
                f"the input ends inside a quoted field of record {self.count + 1},"
                f" which starts at byte {self.pending_at}",
            )
        return self.count

    # ---- internals ---------------------------------------------------------------------
    def _check_size(self, size: int, start: int) -> None:
        """Refuse a record that would grow past :data:`MAX_RECORD` in memory."""
        if size > MAX_RECORD:
            raise format_error(
                self.fmt,
                self.count + 1,
                start,
                f"a record longer than {MAX_RECORD >> 20} MiB (is this line-oriented data?)",
            )

    def _region(self, region: bytes) -> bool:
        """Whole lines; False once the picker is done."""
        if self.fmt == "text":
            return self._all_lines(region, region.count(b"\n"))
        if self.fmt == "jsonl":
            eol = b"\r\n" if region.endswith(b"\r\n") else b"\n"
            count = balanced_elements(region[: -len(eol)], b"}" + eol + b"{")
            if count is not None:
                lines = region.count(b"\n")
                if count == lines:  # one object per line, no blank lines
                    return self._all_lines(region, lines, check=True)
            return self._each_line(region)
        if self.header is not None and not self.pending and _rows_are_lines(region):
            return self._all_lines(region, region.count(b"\n"))
        return self._each_line(region)

    def _all_lines(self, region: bytes, lines: int, *, check: bool = False) -> bool:
        """Each of the ``lines`` lines of ``region`` is one record: cut out the wanted ones."""
        first = self.count
        picker = self.picker
        if first <= picker.want < first + lines:
            rows = region.split(b"\n")
            while first <= picker.want < first + lines:
                i = picker.want
                row = rows[i - first]
                if check:
                    problem = json_problem(row)
                    if problem is not None:  # where exactly: only worth adding up now
                        at = self.base + sum(len(r) + 1 for r in rows[: i - first])
                        raise format_error(self.fmt, i + 1, at + problem[0], problem[1])
                picker.take(i, row + b"\n")
                if picker.want < 0:
                    self.count = i + 1
                    return False
        self.count = first + lines
        return True

    def _each_line(self, region: bytes) -> bool:
        """One line at a time: blank lines, CSV quotes, JSON-lines checks."""
        offset = self.base
        picker = self.picker
        jsonl = self.fmt == "jsonl"
        for row in region.split(b"\n")[:-1]:
            at = offset
            offset += len(row) + 1
            if self.pending:
                self.pending.append(row)
                self.pending_size += len(row) + 1
                self._check_size(self.pending_size, self.pending_at)
                if row.count(b'"') % 2 == 0:
                    continue
                record = b"\n".join(self.pending) + b"\n"
                at, self.pending = self.pending_at, []
            elif (not row.strip()) if jsonl else (row in (b"", b"\r")):
                continue  # blank lines are not records (text never comes here)
            elif jsonl:
                problem = value_problem(row)
                if problem is not None:
                    raise format_error(self.fmt, self.count + 1, at + problem[0], problem[1])
                record = row + b"\n"
            else:  # csv
                if row.count(b'"') % 2:
                    self.pending, self.pending_at, self.pending_size = [row], at, len(row) + 1
                    continue
                record = row + b"\n"
            if self.header is None:
                self.header = record
                if self.on_header is not None:
                    self.on_header(record)
                continue
            i = self.count
            self.count = i + 1
            if i == picker.want:
                if jsonl:
                    check_json(record, fmt=self.fmt, record=i + 1, offset=at)
                picker.take(i, record)
                if picker.want < 0:
                    return False
        return True
