"""The end of the metadata log, and following it as it grows (``cas meta tail [-f]``).

Only complete lines are ever returned: a line still being written (no newline yet) waits
for its newline, and a torn line a dead writer left is never shown (the next writer cuts
it).

Following survives the log being replaced, which is what compaction does (it writes the
kept lines to a new file and renames it over the log, under the log's lock). The old file
is final once replaced (writers reopen the path after taking the lock), so the follower
first reads what is left of it, then opens the new file and skips the lines that were
carried over from the old one: those are matched in order against the old file, and the
first line of the new file that is not among them starts what is new. A deleted log is
waited for; every line of the next one is new.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

_BLOCK = 1 << 16  # bytes read per step when reading backwards
_READ = 8 << 20  # bytes read per step when reading forwards


class LogFollower:
    """Reads a JSON-lines log's last lines, then the lines appended after them.

    ``tenant`` keeps only the lines of that tenant (``tenant_id``); lines that are not JSON
    objects belong to no tenant. With ``tenant=None`` every complete line is returned.
    """

    def __init__(self, path: Path, tenant: str | None = None) -> None:
        self.path = path
        self.tenant = tenant
        self._file: BinaryIO | None = None
        self._pos = 0  # offset of the first byte not yet returned (a line boundary)

    def close(self) -> None:
        """Close the log file, if open."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> LogFollower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _keep(self, line: bytes) -> bool:
        if not line.strip():
            return False
        if self.tenant is None:
            return True
        try:
            doc = json.loads(line)
        except ValueError:
            return False
        return isinstance(doc, dict) and doc.get("tenant_id") == self.tenant

    def _open(self) -> BinaryIO | None:
        try:
            return open(self.path, "rb")  # kept open while following; closed by close()
        except FileNotFoundError:
            return None

    # ---- the last lines ------------------------------------------------------------------
    def last(self, n: int) -> list[str]:
        """The last ``n`` complete lines (of the tenant); following starts after them."""
        self.close()
        self._file = self._open()
        self._pos = 0
        if self._file is None:
            return []
        size = os.fstat(self._file.fileno()).st_size
        self._pos = _boundary(self._file, size)
        if n <= 0:
            return []
        return [line.decode("utf-8", "replace") for line in self._read_back(self._pos, n)]

    def _read_back(self, end: int, n: int) -> list[bytes]:
        f = self._file
        assert f is not None
        found: list[bytes] = []
        pos = end
        rest = b""  # the end of a line that began in an earlier block
        while pos > 0 and len(found) < n:
            step = min(_BLOCK, pos)
            pos -= step
            f.seek(pos)
            parts = (f.read(step) + rest).split(b"\n")
            rest = parts[0] if pos > 0 else b""
            for line in reversed(parts[1:] if pos > 0 else parts):
                if self._keep(line):
                    found.append(line)
                    if len(found) >= n:
                        break
        return found[::-1]

    # ---- what comes next -----------------------------------------------------------------
    def poll(self) -> list[str]:
        """The complete lines appended since the last call (or since :meth:`last`)."""
        out = self._read_new()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if self._file is None:
            if st is not None:
                self._file = self._open()
                self._pos = 0
                out += self._read_new()
            return out
        if st is not None and st.st_ino == os.fstat(self._file.fileno()).st_ino:
            return out
        # Replaced (compaction) or deleted: the old file is final; read the rest of it.
        out += self._read_new()
        old = self._file
        self._file = self._open() if st is not None else None
        self._pos = _skip_carried_over(old, self._file) if self._file is not None else 0
        old.close()
        out += self._read_new()
        return out

    def _read_new(self) -> list[str]:
        f = self._file
        if f is None:
            return []
        out: list[str] = []
        while True:
            f.seek(self._pos)
            data = f.read(_READ)
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                if len(data) == _READ:  # one line longer than a read: take more at once
                    more = data + f.readline()
                    if more.endswith(b"\n"):
                        data, cut = more, len(more)
                if cut == 0:
                    return out
            for line in data[:cut].split(b"\n")[:-1]:
                if self._keep(line):
                    out.append(line.decode("utf-8", "replace"))
            self._pos += cut

    def follow(
        self,
        interval: float = 0.5,
        *,
        stop: Callable[[], bool] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[str]:
        """Yield new lines as they are appended, polling every ``interval`` seconds.

        Runs until ``stop()`` returns true (checked after each poll) or the caller stops
        iterating (Ctrl-C in the CLI).
        """
        while True:
            yield from self.poll()
            if stop is not None and stop():
                return
            sleep(interval)


def _boundary(f: BinaryIO, size: int) -> int:
    """The offset just past the last newline at or before ``size`` (0 when none)."""
    pos = size
    while pos > 0:
        step = min(_BLOCK, pos)
        pos -= step
        f.seek(pos)
        block = f.read(step)
        i = block.rfind(b"\n")
        if i >= 0:
            return pos + i + 1
    return 0


def _skip_carried_over(old: BinaryIO, new: BinaryIO) -> int:
    """The offset in ``new`` of its first line that is not a line carried over from ``old``.

    Compaction keeps a subsequence of the old lines, in order, and appends come after
    them; so walking both files in step, a new line that cannot be found further on in
    the old file is the first one appended.
    """
    old.seek(0)
    new.seek(0)
    olds = (line for line in old if line.endswith(b"\n"))
    pos = 0
    for line in new:
        if not line.endswith(b"\n"):
            break  # still being written: it is new, and read once complete
        if not any(o == line for o in olds):
            break
        pos += len(line)
    return pos


def last_lines(path: Path, n: int, tenant: str | None = None) -> list[str]:
    """The last ``n`` complete lines of the log at ``path`` (of ``tenant``, when given)."""
    with LogFollower(path, tenant) as follower:
        return follower.last(n)
