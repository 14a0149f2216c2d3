"""An append-only JSON-lines log, mirrored into tables of ``index.sqlite``.

The log file is the truth; the tables are a view of it that makes questions fast. The index
keeps, in the ``journals`` table, how far into which file (inode and byte offset) its
tables have applied, updated in the same transaction as the rows. So:

* a writer takes an ``flock`` on the log, begins a write transaction, applies any lines
  other writers left unapplied, appends its own lines (one ``write``, then ``fsync``),
  applies them and moves the offset, and commits. A crash after the append and before
  the commit leaves lines past the offset, which the next reader or writer applies:
  nothing written is lost, nothing applied twice;
* a reader compares the file's size and inode with the offset (one ``stat``, one
  ``SELECT``) and catches up only when they differ;
* a deleted index, or one dropped by a version change, replays the whole log;
* a torn last line (a writer killed mid-``write``) is cut off by the next writer, which
  holds the lock; readers never apply a line without its newline.

Applying must not fail on a line that was valid when written: the tables use upserts.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from casstore import _fs
from casstore.index import write_transaction

_STATE = """
CREATE TABLE IF NOT EXISTS journals (
    name TEXT PRIMARY KEY,
    inode INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    skipped INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""

_CHUNK = 8 << 20  # bytes of log read per step of a replay

# apply(db, lines) -> how many lines it had to skip as unreadable
Apply = Callable[[sqlite3.Connection, list[bytes]], int]


class Journal:
    """One log file and the tables that mirror it.

    ``schema`` creates the tables (idempotent SQL), ``clear`` empties them before a full
    replay, and ``apply`` upserts a batch of lines (each without its newline).
    """

    def __init__(
        self,
        db: sqlite3.Connection,
        path: Path,
        *,
        name: str,
        schema: str,
        apply: Apply,
        clear: Callable[[sqlite3.Connection], None],
        lock_timeout: float = 30.0,
        durable: bool = True,
    ) -> None:
        self.db = db
        self.path = path
        self.name = name
        self.apply = apply
        self.clear = clear
        self.lock_timeout = lock_timeout
        self.durable = durable
        db.executescript(_STATE + schema)

    # ---- state -------------------------------------------------------------------------
    def _state(self) -> tuple[int, int]:
        row = self.db.execute(
            "SELECT inode, offset FROM journals WHERE name=?", (self.name,)
        ).fetchone()
        return (row[0], row[1]) if row else (0, 0)

    def _set_state(self, inode: int, offset: int, skipped: int = 0) -> None:
        self.db.execute(
            "INSERT INTO journals (name, inode, offset, skipped) VALUES (?,?,?,?)"
            " ON CONFLICT(name) DO UPDATE SET inode=excluded.inode, offset=excluded.offset,"
            " skipped=journals.skipped + excluded.skipped",
            (self.name, inode, offset, skipped),
        )

    def skipped(self) -> int:
        """Lines of the log that could not be read and were left out of the tables."""
        row = self.db.execute("SELECT skipped FROM journals WHERE name=?", (self.name,)).fetchone()
        return row[0] if row else 0

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return write_transaction(self.db)

    # ---- reading -----------------------------------------------------------------------
    def sync(self) -> None:
        """Bring the tables up to date with the log (cheap when they already are)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        current = (st.st_ino, st.st_size) if st else (0, 0)
        if self._state() == current:
            return
        with self._transaction():
            self._catch_up(fd=None)

    def _catch_up(self, fd: int | None) -> int:
        """Apply what the tables lack; return the log's size afterwards.

        ``fd`` is the locked log of a writer, which may cut a torn last line; a reader
        passes ``None`` and leaves an unterminated line for its writer to finish or for
        the next writer to cut.
        """
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            inode, size = 0, 0
            f = None
        if f is None:
            if self._state() != (0, 0):
                self.clear(self.db)
            self._set_state(0, 0)
            return 0
        with f:
            st = os.fstat(f.fileno())
            inode, size = st.st_ino, st.st_size
            known_inode, offset = self._state()
            if known_inode != inode or offset > size:
                self.clear(self.db)  # another file (compacted, restored, deleted): replay
                offset = 0
            f.seek(offset)
            skipped = 0
            rest = b""
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    break
                data = rest + chunk
                cut = data.rfind(b"\n") + 1
                lines = data[:cut].splitlines()
                rest = data[cut:]
                if lines:
                    skipped += self.apply(self.db, [ln for ln in lines if ln.strip()])
                offset += cut
            if rest and fd is not None:
                os.ftruncate(fd, offset)  # a torn line left by a writer that died
                size = offset
            self._set_state(inode, offset, skipped)
            return size if fd is not None else offset

    # ---- writing -----------------------------------------------------------------------
    def append(
        self, lines: list[bytes], write_rows: Callable[[sqlite3.Connection], None] | None = None
    ) -> None:
        """Append ``lines`` (each without its newline) and apply them, durably, as one step.

        ``write_rows`` applies exactly these lines when the caller has the rows at hand
        already (skipping a re-parse); by default the lines are applied like a replay.
        """
        if not lines:
            return
        data = b"\n".join(lines) + b"\n"
        with (
            _fs.locked_log(self.path, timeout=self.lock_timeout) as fd,
            self._transaction() as db,
        ):
            size = self._catch_up(fd)
            _fs.append_all(fd, data, durable=self.durable)
            if write_rows is not None:
                write_rows(db)
            else:
                self.apply(db, lines)
            self._set_state(os.fstat(fd).st_ino, size + len(data))

    def rewrite(self, keep: Callable[[bytes], bool], tmp_dir: Path) -> int:
        """Rewrite the log without the lines ``keep`` refuses; return how many were dropped.

        The new log is written beside the old one and renamed over it, then the tables are
        replayed from it, all under the log's lock and one transaction.
        """
        dropped = 0
        with (
            _fs.locked_log(self.path, timeout=self.lock_timeout) as fd,
            self._transaction(),
        ):
            self._catch_up(fd)
            tmp_fd, tmp = _fs.make_temp(tmp_dir, prefix="log")
            try:
                with open(self.path, "rb") as src, os.fdopen(tmp_fd, "wb") as out:
                    for line in src:
                        if not line.endswith(b"\n"):
                            continue
                        if keep(line.rstrip(b"\n")):
                            out.write(line)
                        else:
                            dropped += 1
                    out.flush()
                    os.fsync(out.fileno())
                _fs.publish(tmp, self.path)
                _fs.fsync_dir(self.path.parent)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            self.clear(self.db)
            self._set_state(0, 0)
            self._catch_up(fd=None)
        return dropped
