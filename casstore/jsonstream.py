"""An incremental scanner for JSON arrays of records, and JSON checks for samplers.

:class:`JsonArrayScanner` is fed a decompressed stream in chunks of any size and finds the
byte span of every top-level element of the array, without ever holding the document (or
even one unwanted element) in memory. It hands the elements a :class:`Picker` asks for to
that picker as the input's own bytes, validated with :func:`json.loads`; every other
element is checked for structure only: strings closed, brackets balanced and matched,
nothing but ``,`` between elements, nothing after the closing ``]``.

Python cannot afford a loop per byte on multi-GB input, so the scanner works at three
speeds, all over the same state:

* *line mode*: the layout of large dumps, one record per line (``{...},\\n``), is proved
  for a whole buffer of lines at once with C-speed bytes operations (see
  :func:`object_lines`); records then are lines, and only wanted ones are cut out.
* *element mode*: a regular expression matches a whole element (nested up to
  :data:`REGEX_DEPTH` levels) plus its separator in one call: pretty-printed arrays, arrays
  on one line.
* *token mode*: a small state machine that jumps from one structural byte to the next
  with ``re.search``. It resumes across chunk boundaries, takes elements nested deeper
  than the regex, and finds the exact offset of any problem.
"""

from __future__ import annotations

import json
import re
from typing import Protocol

from casstore.errors import SampleFormatError

REGEX_DEPTH = 6  # nesting the one-call element regex handles; deeper goes token by token
MAX_DEPTH = 10_000  # deeper nesting is refused (a list of open brackets is kept)
_REDUCE_ROUNDS = 64  # bracket-pair reduction rounds line mode tries before giving up
_BOM = b"\xef\xbb\xbf"


class Picker(Protocol):
    """Which records a scanner hands over: the sampling regime's side of the contract."""

    want: int
    """Index (0-based) of the next record wanted; -1 once no more are wanted (stop)."""

    def take(self, index: int, record: bytes) -> None:
        """Receive record ``index`` (the input's bytes); update :attr:`want`."""


def format_error(fmt: str, record: int, offset: int, problem: str) -> SampleFormatError:
    """The error for malformed input: one line naming the record and the byte offset."""
    return SampleFormatError(
        f"malformed {fmt} input at record {record}, byte {offset}: {problem}",
        record=record,
        offset=offset,
        format=fmt,
    )


def check_json(data: bytes, *, fmt: str, record: int, offset: int) -> None:
    """Parse one kept record with :func:`json.loads`; raise :class:`SampleFormatError` if bad.

    ``offset`` is where ``data`` starts in the decompressed input, so the error can say
    where exactly the problem is.
    """
    try:
        json.loads(data)
    except json.JSONDecodeError as exc:
        # exc.pos counts characters of the decoded text: turn it back into bytes.
        text = data.decode("utf-8", "replace")
        at = offset + len(text[: exc.pos].encode("utf-8", "surrogatepass"))
        raise format_error(fmt, record, at, f"invalid JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise format_error(fmt, record, offset + exc.start, "not UTF-8 text") from None
    except RecursionError:
        raise format_error(fmt, record, offset, "JSON nested too deeply to parse") from None


# ---- regular expressions ----------------------------------------------------------------
_WS = re.compile(rb"[ \t\r\n]*+")
# A string body up to (not including) its closing quote; raw control bytes end it.
_STR_BODY = re.compile(rb'[^"\\\x00-\x1f]*+(?:\\.[^"\\\x00-\x1f]*+)*+', re.S)
_STR = rb'"[^"\\\x00-\x1f]*+(?:\\.[^"\\\x00-\x1f]*+)*+"'
_SCALAR = rb"-?+(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?+(?:[eE][-+]?+[0-9]++)?+|true|false|null"
_SCALAR_FULL = re.compile(_SCALAR)
_SCALAR_CHARS = re.compile(rb"[-+.0-9a-zA-Z]*+")
_STRUCT = re.compile(rb'["\[\]{}]')
_STRPAIR = re.compile(rb'"[^"\n]*+"')
_INDENT = re.compile(rb"[ \t]*+")
_ESCAPE = re.compile(rb"\\.", re.S)


def _element_regex(depth: int) -> bytes:
    """An object or array nested at most ``depth`` levels, as one possessive regex.

    Inside brackets anything but quotes and brackets is skipped in one run; strings are
    matched whole, so brackets inside them do not count. Possessive quantifiers keep the
    engine from backtracking on input that does not match.
    """
    content = rb'(?:[^"\[\]{}]++|' + _STR + rb")*+"
    for _ in range(depth):
        opened = rb"(?:\{" + content + rb"\}|\[" + content + rb"\])"
        content = rb'(?:[^"\[\]{}]++|' + _STR + rb"|" + opened + rb")*+"
    return opened


_ELEMENT = rb"(?:" + _element_regex(REGEX_DEPTH) + rb"|" + _STR + rb"|" + _SCALAR + rb")"
# One element and what follows it: group 1 the element, group 2 a comma, group 3 the "]".
_ELEMENT_SEP = re.compile(rb"[ \t\r\n]*+(" + _ELEMENT + rb")[ \t\r\n]*+(?:(,)|(\]))")
# A line that holds exactly one value (JSON-lines), blanks around it allowed.
_VALUE_LINE = re.compile(rb"[ \t\r]*+" + _ELEMENT + rb"[ \t\r]*+")
_SKELETON_DELETE = bytes(b for b in range(256) if b not in b'{}[]"\n')

_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_OPEN = frozenset(b"{[")
_CLOSE_FOR = {ord("}"): ord("{"), ord("]"): ord("[")}
_SCALAR_START = frozenset(b"-0123456789tfn")


# ---- line mode ------------------------------------------------------------------------
def object_lines(region: bytes, sep: bytes) -> tuple[bytes, bytes] | None:
    """Whether every line of ``region`` is one JSON object followed by ``sep``.

    ``region`` is whole lines (it ends with a newline); ``sep`` is ``b","`` inside an
    array, ``b""`` for JSON-lines. The lines must share one indentation and one line end.
    Returns ``(indent, eol)`` when the check passes, else None (the caller then goes
    element by element, which also finds the exact place of any problem).

    The check is structural, like the token scanner's, and runs at C speed: escapes are
    blanked so every quote is a real one; a ``translate`` keeps only brackets, quotes and
    newlines; quote pairs are dropped (strings vanish with any brackets inside them); the
    first and last bracket of each line are marked; then innermost pairs are removed until
    none is left. A line reduces to its two marks exactly when it is one balanced object,
    with nothing but blanks outside it (the count of exact line boundaries sees to that).
    """
    if not region.endswith(b"\n"):
        return None
    indent = _INDENT.match(region).group()  # type: ignore[union-attr]
    eol = b"\r\n" if region.endswith(b"\r\n") else b"\n"
    if region[len(indent) : len(indent) + 1] != b"{" or not region.endswith(b"}" + sep + eol):
        return None
    boundaries = region.count(b"}" + sep + eol + indent + b"{")
    plain = _ESCAPE.sub(b"__", region) if b"\\" in region else region
    skeleton = plain.translate(None, _SKELETON_DELETE).replace(b'""', b"")
    if b'"' in skeleton:
        skeleton = _STRPAIR.sub(b"", skeleton)  # strings that held brackets
        if b'"' in skeleton:
            return None  # an unclosed string, or one with a newline in it
    lines = skeleton.count(b"\n")
    if boundaries != lines - 1:
        return None
    marked = b"A" + skeleton[1:-2].replace(b"}\n{", b"a\nA") + b"a\n"
    for _ in range(_REDUCE_ROUNDS):
        reduced = marked.replace(b"{}", b"").replace(b"[]", b"")
        if len(reduced) == len(marked):
            break
        marked = reduced
    if len(marked) != 3 * lines or marked.count(b"Aa\n") != lines:
        return None
    return indent, eol


# ---- single values --------------------------------------------------------------------
def value_problem(data: bytes) -> tuple[int, str] | None:
    """The first structural problem in ``data``, which must hold exactly one JSON value.

    Returns ``(offset, description)``, or None when the structure is sound (the content
    is left to :func:`check_json`). Used for JSON-lines records the regex did not take.
    """
    if _VALUE_LINE.fullmatch(data):
        return None
    pos = _WS.match(data).end()  # type: ignore[union-attr]
    n = len(data)
    if pos == n:
        return pos, "empty record"
    c = data[pos]
    if c == _QUOTE or c in _OPEN:
        stack: list[int] = []
        while True:
            if c == _QUOTE:
                end = _STR_BODY.match(data, pos + 1).end()  # type: ignore[union-attr]
                if end >= n or data[end] != _QUOTE:
                    return end, "unterminated string"
                pos = end + 1
            elif c in _OPEN:
                stack.append(c)
                if len(stack) > MAX_DEPTH:
                    return pos, f"nested deeper than {MAX_DEPTH} levels"
                pos += 1
            else:
                if not stack or stack.pop() != _CLOSE_FOR[c]:
                    return pos, f"unbalanced {chr(c)!r}"
                pos += 1
            if not stack:
                break
            m = _STRUCT.search(data, pos)
            if m is None:
                return n, "the record ends before its brackets are closed"
            pos = m.start()
            c = data[pos]
    else:
        m = _SCALAR_FULL.match(data, pos)
        if m is None:
            return pos, f"not a JSON value (starts with {chr(c)!r})"
        pos = m.end()
    pos = _WS.match(data, pos).end()  # type: ignore[union-attr]
    if pos < n:
        return pos, f"unexpected {chr(data[pos])!r} after the record"
    return None


# ---- the array scanner ----------------------------------------------------------------
_BEFORE, _FIRST, _NEXT, _IN, _AFTER, _DONE = range(6)


class JsonArrayScanner:
    """Finds the elements of one JSON array fed in chunks; see the module docstring.

    Call :meth:`feed` with each chunk of decompressed input (it returns False once the
    picker wants nothing more: stop reading), then :meth:`finish` at the end of the input.
    Memory: the current chunk, plus the bytes of a wanted element that spans chunks.
    """

    def __init__(self, picker: Picker, *, fmt: str = "json", line_chunk: int = 1 << 20) -> None:
        self.picker = picker
        self.fmt = fmt
        self.count = 0  # elements completed
        self.base = 0  # offset of the current buffer in the decompressed input
        self.stage = _BEFORE
        self.stack: list[int] = []  # open brackets of the element being scanned
        self.in_str = False
        self.esc = False  # a backslash ended the last buffer, inside a string
        self.scalar = False
        self.elem_start = 0  # offset of the element being scanned
        self.parts: list[bytes] | None = None  # its bytes so far, when wanted or scalar
        self.carry = b""  # a partial line kept from line mode
        self.max_carry = line_chunk
        self.stopped = False

    # ---- public ------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> bool:
        """Scan the next chunk; False once the picker wants no more records."""
        if self.stopped:
            return False
        if self.carry:
            buf, self.carry = self.carry + chunk, b""
        else:
            buf = chunk
        pos = 0
        lines_tried = False
        n = len(buf)
        while pos < n:
            stage = self.stage
            if stage == _NEXT or stage == _FIRST:
                if not lines_tried:
                    lines_tried = True
                    done = self._lines(buf, pos)
                    if done is not None:
                        if done < 0:
                            return self._stop()
                        tail = n - done
                        if tail <= self.max_carry:
                            self.carry = buf[done:]
                            self.base += done
                            return True
                        pos = done
                        continue
                pos = self._elements(buf, pos)
                if pos < 0:
                    return self._stop()
                if pos == n:
                    break
            pos = self._token(buf, pos)
            if pos < 0:
                return self._stop()
        self.base += n
        return True

    def finish(self) -> int:
        """End of input: check the array was closed; return the number of elements."""
        if self.carry and not self.stopped:
            carry, self.carry = self.carry, b""
            # A partial last line: no line mode for it (it has no newline).
            self.max_carry = -1
            if not self.feed(carry):
                return self.count
        if self.stopped or self.stage == _DONE:
            return self.count
        record = self.count + 1
        if self.stage == _BEFORE:
            raise self._error(record, self.base, "no JSON array: the input is empty")
        if self.stage == _IN:
            raise self._error(
                record,
                self.base,
                f"the input ends inside record {record}, which starts at byte {self.elem_start}",
            )
        raise self._error(record, self.base, "the input ends before the array is closed by ']'")

    # ---- helpers -----------------------------------------------------------------------
    def _stop(self) -> bool:
        self.stopped = True
        return False

    def _error(self, record: int, offset: int, problem: str) -> SampleFormatError:
        return format_error(self.fmt, record, offset, problem)

    def _take(self, index: int, data: bytes, offset: int) -> bool:
        """Validate and hand over a wanted element; False once the picker is done."""
        check_json(data, fmt=self.fmt, record=index + 1, offset=offset)
        self.picker.take(index, data)
        return self.picker.want >= 0

    def _lines(self, buf: bytes, pos: int) -> int | None:
        """Line mode over the whole lines after ``pos``; the new position, or None.

        Returns -1 when the picker is done, None when the lines are not one object each
        (the element and token modes take over).
        """
        nl = buf.find(b"\n", pos)
        if nl < 0 or buf[pos:nl].strip():
            return None  # the current line still holds data
        start = nl + 1
        lf, crlf = buf.rfind(b",\n", start), buf.rfind(b",\r\n", start)
        end = max(lf + 2 if lf >= 0 else -1, crlf + 3 if crlf >= 0 else -1)
        if end < 0:
            return None
        region = buf[start:end]
        layout = object_lines(region, b",")
        if layout is None:
            return None
        indent, eol = layout
        lines = region.count(b"\n")
        first = self.count
        picker = self.picker
        if first <= picker.want < first + lines:
            rows = region.split(b"\n")
            cut = len(b",") + len(eol) - 1
            # Offsets only matter for error messages, but are kept exact: a cursor moves
            # forward with the wanted rows, so the sum costs one pass at most.
            row_at, offset = 0, self.base + start
            while first <= picker.want < first + lines:
                i = picker.want
                for r in rows[row_at : i - first]:
                    offset += len(r) + 1
                row_at = i - first
                row = rows[row_at]
                data = row[len(indent) : len(row) - cut]
                if not self._take(i, data, offset + len(indent)):
                    self.count = i + 1
                    return -1
        self.count = first + lines
        self.stage = _NEXT
        return end

    def _elements(self, buf: bytes, pos: int) -> int:
        """Element mode: whole elements with one regex call each; -1 when the picker is done."""
        match = _ELEMENT_SEP.match
        picker = self.picker
        i = self.count
        want = picker.want
        while True:
            m = match(buf, pos)
            if m is None:
                break
            if i == want:
                s, e = m.span(1)
                if not self._take(i, buf[s:e], self.base + s):
                    self.count = i + 1
                    return -1
                want = picker.want
            i += 1
            pos = m.end()
            if m.lastindex == 3:
                self.stage = _DONE
                break
            self.stage = _NEXT
        self.count = i
        return pos

    def _token(self, buf: bytes, pos: int) -> int:
        """Token mode: one step (a separator, or an element as far as the buffer goes)."""
        if self.stage == _IN:
            return self._inside(buf, pos)
        pos = _WS.match(buf, pos).end()  # type: ignore[union-attr]
        n = len(buf)
        if pos == n:
            return pos
        c = buf[pos]
        stage = self.stage
        record = self.count + 1
        at = self.base + pos
        if stage == _BEFORE:
            if at == 0 and buf.startswith(_BOM):
                return pos + len(_BOM)
            if c == ord("["):
                self.stage = _FIRST
                return pos + 1
            raise self._error(1, at, f"not a JSON array (it starts with {chr(c)!r})")
        if stage == _AFTER:
            if c == ord(","):
                self.stage = _NEXT
                return pos + 1
            if c == ord("]"):
                self.stage = _DONE
                return pos + 1
            raise self._error(
                record, at, f"expected ',' or ']' after record {self.count}, found {chr(c)!r}"
            )
        if stage == _DONE:
            raise self._error(record, at, f"unexpected {chr(c)!r} after the end of the array")
        # _FIRST or _NEXT: an element starts here.
        if c == ord("]"):
            if stage == _FIRST:
                self.stage = _DONE
                return pos + 1
            raise self._error(record, at, "expected a record after ',', found ']'")
        self.elem_start = at
        self.stack = []
        if c in _OPEN:
            self.stack.append(c)
            pos += 1
        elif c == _QUOTE:
            self.in_str = True
            pos += 1
        elif c in _SCALAR_START:
            self.scalar = True
        else:
            raise self._error(record, at, f"expected a record, found {chr(c)!r}")
        wanted = self.count == self.picker.want
        self.parts = [] if wanted or self.scalar else None
        self.stage = _IN
        start = pos - (0 if self.scalar else 1)
        return self._inside(buf, pos, start)

    def _inside(self, buf: bytes, pos: int, start: int = 0) -> int:
        """Scan the element in progress from ``pos``; ``start`` is where its bytes begin here."""
        n = len(buf)
        stack = self.stack
        while pos < n:
            if self.in_str:
                if self.esc:
                    self.esc = False
                    pos += 1
                    continue
                j = _STR_BODY.match(buf, pos).end()  # type: ignore[union-attr]
                if j == n:
                    pos = n
                    break
                c = buf[j]
                if c == _BACKSLASH:  # only possible as the buffer's last byte
                    self.esc = True
                    pos = n
                    break
                if c != _QUOTE:
                    raise self._error(
                        self.count + 1,
                        self.base + j,
                        f"control character {c:#04x} inside a string (unterminated string?)",
                    )
                self.in_str = False
                pos = j + 1
                if not stack:
                    return self._complete(buf, start, pos)
            elif self.scalar:
                j = _SCALAR_CHARS.match(buf, pos).end()  # type: ignore[union-attr]
                if j == n:
                    pos = n
                    break
                return self._complete(buf, start, j)
            else:
                m = _STRUCT.search(buf, pos)
                if m is None:
                    pos = n
                    break
                j = m.start()
                c = buf[j]
                pos = j + 1
                if c == _QUOTE:
                    self.in_str = True
                elif c in _OPEN:
                    stack.append(c)
                    if len(stack) > MAX_DEPTH:
                        raise self._error(
                            self.count + 1, self.base + j, f"nested deeper than {MAX_DEPTH} levels"
                        )
                else:
                    if not stack or stack.pop() != _CLOSE_FOR[c]:
                        raise self._error(self.count + 1, self.base + j, f"unbalanced {chr(c)!r}")
                    if not stack:
                        return self._complete(buf, start, pos)
        if self.parts is not None:
            self.parts.append(buf[start:pos])
        return pos

    def _complete(self, buf: bytes, start: int, end: int) -> int:
        """The element in progress ends at ``end``; hand it over if wanted."""
        index = self.count
        parts = self.parts
        self.parts = None
        self.stage = _AFTER
        self.count = index + 1
        if parts is not None:
            parts.append(buf[start:end])
            data = b"".join(parts)
            if self.scalar:
                self.scalar = False
                if not _SCALAR_FULL.fullmatch(data):
                    raise self._error(
                        index + 1, self.elem_start, f"not a JSON value: {data[:40]!r}"
                    )
            if index == self.picker.want and not self._take(index, data, self.elem_start):
                return -1
        return end
