"""An incremental scanner for JSON arrays of records, and JSON checks for samplers.

:class:`JsonArrayScanner` is fed a decompressed stream in chunks of any size and finds the
byte span of every top-level element of the array, without ever holding the document (or
even one unwanted element) in memory. It hands the elements a :class:`Picker` asks for to
that picker as the input's own bytes, validated with :func:`json.loads`; every other
element is checked for structure only: strings closed, brackets balanced and matched,
nothing but ``,`` between elements, nothing after the closing ``]``.

Python cannot afford a loop per byte on multi-GB input, so the scanner works at three
speeds, all over the same state:

* *bulk mode*: most large arrays repeat one boundary between records: ``},\\n{`` for one
  record per line (the layout of large dumps), ``\\n  },\\n  {`` when pretty-printed,
  ``},{`` on one line. A whole buffer of records is proved at once with C-speed bytes
  operations (see :func:`balanced_elements`); only wanted records are looked at again.
* *element mode*: a regular expression matches a whole element (nested up to
  :data:`REGEX_DEPTH` levels) plus its separator in one call: what bulk mode cannot prove
  (records of mixed kinds, arrays of objects inside records on one line) and the first
  record of each buffer.
* *token mode*: a small state machine that jumps from one structural byte to the next
  with ``re.search``. It resumes across chunk boundaries, takes elements nested deeper
  than the regex, and finds the exact offset of any problem.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Protocol

from casstore.errors import SampleFormatError

REGEX_DEPTH = 5  # nesting the one-call element regex handles; deeper goes token by token
MAX_DEPTH = 10_000  # deeper nesting is refused (a list of open brackets is kept)
_REDUCE_ROUNDS = 64  # bracket-pair reduction rounds bulk mode tries before giving up
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


def json_problem(data: bytes) -> tuple[int, str] | None:
    """Parse one kept record with :func:`json.loads`: None, or ``(byte offset, problem)``."""
    try:
        json.loads(data)
    except json.JSONDecodeError as exc:
        # exc.pos counts characters of the decoded text: turn it back into bytes.
        text = data.decode("utf-8", "replace")
        return len(text[: exc.pos].encode("utf-8", "surrogatepass")), f"invalid JSON: {exc.msg}"
    except UnicodeDecodeError as exc:
        return exc.start, "not UTF-8 text"
    except RecursionError:
        return 0, "JSON nested too deeply to parse"
    return None


def check_json(data: bytes, *, fmt: str, record: int, offset: int) -> None:
    """Parse one kept record; raise :class:`SampleFormatError` if it is not JSON.

    ``offset`` is where ``data`` starts in the decompressed input, so the error can say
    where exactly the problem is.
    """
    problem = json_problem(data)
    if problem is not None:
        raise format_error(fmt, record, offset + problem[0], problem[1])


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


@functools.cache
def _element_sep() -> re.Pattern[bytes]:
    """One element and what follows: group 1 the element, 2 a comma, 3 the closing ``]``.

    Compiled on first use (about 10 ms), like :func:`_value_line`: ``cas`` starts faster
    for the formats that do not need them.
    """
    return re.compile(rb"[ \t\r\n]*+(" + _ELEMENT + rb")[ \t\r\n]*+(?:(,)|(\]))")


@functools.cache
def _value_line() -> re.Pattern[bytes]:
    """A line that holds exactly one value (JSON-lines), blanks around it allowed."""
    return re.compile(rb"[ \t\r]*+" + _ELEMENT + rb"[ \t\r]*+")


_SKELETON_DELETE = bytes(b for b in range(256) if b not in b'{}[]"\n\x00')

_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_OPEN = frozenset(b"{[")
_CLOSE_FOR = {ord("}"): ord("{"), ord("]"): ord("[")}
_SCALAR_START = frozenset(b"-0123456789tfn")


# ---- bulk mode ------------------------------------------------------------------------
def balanced_elements(region: bytes, boundary: bytes) -> int | None:
    """How many elements ``region`` holds, if it is sound elements joined by ``boundary``.

    ``boundary`` is the exact bytes from the end of one element to the start of the next:
    the closing bracket (with the blanks before it when it stands on a line of its own),
    the separator, the next opening bracket: ``},\\n{`` for one record per line,
    ``\\n  },\\n  {`` for ``json.dumps(indent=2)``, ``},{`` on one line. ``region``
    starts with the first element's opening bracket and ends with the last one's closing
    bracket. Returns None when any element is not balanced, or when a "boundary" sits
    inside a string (so that splitting at the boundary would cut an element).

    The check is structural, like the token scanner's, and runs at C speed: boundaries
    are marked (by their newline when every newline is one, else by a NUL byte); escapes
    are blanked so every quote is a real one; a ``translate`` keeps only brackets, quotes,
    newlines and marks; strings are dropped (with any brackets or marks inside them,
    which the count of marks notices); the first and last bracket of each element are
    marked; then innermost pairs are removed until none is left. An element reduces to
    its two marks exactly when it is balanced, and nothing can hide between elements:
    only a boundary's exact bytes are there. None means "not this layout" as well as
    "malformed": the caller then goes element by element, which finds the exact place
    of any problem.
    """
    marks = region.count(boundary)
    plain = _ESCAPE.sub(b"__", region) if b"\\" in region else region
    skeleton = b""
    if boundary.count(b"\n") == 1:  # perhaps one element per line: newlines mark them
        skeleton = plain.translate(None, _SKELETON_DELETE)
    if skeleton and skeleton.count(b"\n") == marks:
        mark = b"\n"
    else:
        mark = b"\x00"
        if marks:
            plain = plain.replace(boundary, b"\x00")
        skeleton = plain.translate(None, _SKELETON_DELETE)
    quotes = skeleton.count(b'"')
    if quotes and 2 * skeleton.count(b'""') == quotes:
        skeleton = skeleton.translate(None, b'"')  # no string holds a bracket or a mark
    elif quotes:
        skeleton = _STRPAIR.sub(b"", skeleton.replace(b'""', b""))
        if b'"' in skeleton:
            return None  # an unclosed string, or one with a newline in it
    if mark == b"\x00":
        if skeleton.count(mark) != marks:
            return None  # a boundary inside a string, or a NUL byte in the data
        skeleton = skeleton.replace(b"\n", b"")
    elif b"\x00" in skeleton:
        return None  # a NUL byte in the data
    first, last = skeleton[:1], skeleton[-1:]
    if first not in (b"{", b"[") or last != (b"}" if first == b"{" else b"]"):
        return None
    if mark == b"\n":  # the boundary's own brackets are still there: "}\n{"
        mark = last + mark + first
    marked = b"A" + skeleton[1:-1].replace(mark, b"a\nA") + b"a"
    for _ in range(_REDUCE_ROUNDS):
        reduced = marked.replace(b"{}", b"").replace(b"[]", b"")
        if len(reduced) == len(marked):
            break
        marked = reduced
    if len(marked) != 3 * marks + 2 or marked.count(b"Aa") != marks + 1:
        return None
    return marks + 1


# ---- single values --------------------------------------------------------------------
def value_problem(data: bytes) -> tuple[int, str] | None:
    """The first structural problem in ``data``, which must hold exactly one JSON value.

    Returns ``(offset, description)``, or None when the structure is sound (the content
    is left to :func:`check_json`). Used for JSON-lines records the regex did not take.
    """
    if _value_line().fullmatch(data):
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

    def __init__(self, picker: Picker, *, fmt: str = "json") -> None:
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
        self.stopped = False

    # ---- public ------------------------------------------------------------------------
    def feed(self, buf: bytes) -> bool:
        """Scan the next chunk; False once the picker wants no more records."""
        if self.stopped:
            return False
        pos = 0
        bulk_tried = False  # once per chunk: a failed try costs a pass over it
        n = len(buf)
        while pos < n:
            if self.stage in (_NEXT, _FIRST):
                if not bulk_tried:
                    bulk_tried = True
                    done = self._bulk(buf, pos)
                    if done is not None:
                        if done < 0:
                            return self._stop()
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

    def _bulk(self, buf: bytes, pos: int) -> int | None:
        """Bulk mode: the elements from ``pos`` up to the last boundary in the buffer.

        The first element (matched by the regex) and the blanks and comma after it give
        the boundary; :func:`balanced_elements` proves the run up to its last occurrence in
        the buffer. Returns the position
        after the last element taken (the separator comes next), -1 when the picker is
        done, None when the run does not pass (element and token modes take over).
        """
        m = _element_sep().match(buf, pos)
        if m is None or m.lastindex != 2:
            return None
        start, end = m.span(1)
        opener = buf[start]
        if opener not in _OPEN:
            return None
        after = _WS.match(buf, m.end()).end()  # type: ignore[union-attr]
        if buf[after : after + 1] != buf[start : start + 1]:
            return None
        # The closing bracket, with its line's indentation when it stands alone on it.
        nl = buf.rfind(b"\n", start, end - 1)
        tail = buf[nl:end] if nl >= 0 and not buf[nl + 1 : end - 1].strip() else buf[end - 1 : end]
        boundary = tail + buf[end:after] + buf[after : after + 1]
        last = buf.rfind(boundary, after)
        if last < 0:
            return None
        region = buf[start : last + len(tail)]
        count = balanced_elements(region, boundary)
        if count is None:
            return None
        first = self.count
        picker = self.picker
        if first <= picker.want < first + count:
            pieces = region.split(boundary)
            opening = boundary[-1:]
            while first <= picker.want < first + count:
                i = picker.want
                k = i - first
                data = (opening if k else b"") + pieces[k] + (tail if k < count - 1 else b"")
                problem = json_problem(data)
                if problem is not None:  # where exactly: only worth adding up now
                    at = self.base + start + sum(len(p) + len(boundary) for p in pieces[:k])
                    raise self._error(i + 1, at - (1 if k else 0) + problem[0], problem[1])
                picker.take(i, data)
                if picker.want < 0:
                    self.count = i + 1
                    return -1
        self.count = first + count
        self.stage = _AFTER
        return last + len(tail)

    def _elements(self, buf: bytes, pos: int) -> int:
        """Element mode: whole elements with one regex call each; -1 when the picker is done."""
        match = _element_sep().match
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
