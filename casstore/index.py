"""``index.sqlite``: a rebuildable cache of objects, records, lineage edges and refs.

The files are the truth; the index only makes questions fast (list objects, children of an
object, records by source). Everything in it can be rebuilt from ``objects/`` and ``refs/``
by :meth:`Index.rebuild`, and a missing index is rebuilt the first time it is opened.
SQLite runs in WAL mode so readers never block the writer, with a busy timeout so
concurrent writers wait for each other instead of failing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from casstore.errors import StoreFormatError
from casstore.records import iso_utc, summary

INDEX_VERSION = "4"  # 2: the recipes table; 3: records.fact; 4: records.pipeline_*

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    stored_size INTEGER NOT NULL,
    compression TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY,
    object_id TEXT NOT NULL,
    type TEXT NOT NULL,
    created TEXT NOT NULL,
    source_id TEXT,
    dataset TEXT,
    transform TEXT,
    fact TEXT,
    pipeline_run TEXT,
    pipeline_step TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_object ON records (object_id, created);
CREATE INDEX IF NOT EXISTS records_source ON records (source_id, created);
CREATE INDEX IF NOT EXISTS records_pipeline ON records (pipeline_run, created);
CREATE TABLE IF NOT EXISTS edges (
    child TEXT NOT NULL,
    parent TEXT NOT NULL,
    record_id TEXT NOT NULL,
    PRIMARY KEY (child, parent, record_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS edges_parent ON edges (parent, child);
CREATE TABLE IF NOT EXISTS recipes (
    key TEXT NOT NULL,
    object_id TEXT NOT NULL,
    record_id TEXT NOT NULL,
    PRIMARY KEY (key, record_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refs (
    name TEXT PRIMARY KEY,
    object_id TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refs_object ON refs (object_id);
"""


_PUT_OBJECT = "INSERT OR REPLACE INTO objects (id, size, stored_size, compression) VALUES (?,?,?,?)"
_PUT_RECORD = (
    "INSERT OR IGNORE INTO records (id, object_id, type, created, source_id, dataset,"
    " transform, fact, pipeline_run, pipeline_step) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
_PUT_EDGE = "INSERT OR IGNORE INTO edges (child, parent, record_id) VALUES (?,?,?)"
_PUT_RECIPE = "INSERT OR IGNORE INTO recipes (key, object_id, record_id) VALUES (?,?,?)"

# An object row as written: (id, size, stored_size, compression).
ObjectRowIn = tuple[str, int, int, str]
# A record's rows: the record row, its edges, and its recipe row (or None).
RecordRows = tuple[tuple[Any, ...], list[tuple[str, str, str]], tuple[str, str, str] | None]


def record_rows(rid: str, record: Any) -> RecordRows:
    """The index rows of one record, as plain tuples.

    Computed apart from the database so that whoever made the record (a worker process,
    say) can hand over rows that pickle cheaply, and the writer inserts them in bulk.
    """
    # A record type's own fields, read from the model's field values: asking a pydantic
    # model for a field its type lacks goes through a slow __getattr__.
    fields = record.__dict__
    link = fields.get("pipeline")
    row = (
        rid,
        record.object,
        record.type,
        iso_utc(record.created),
        record.source_id,
        record.dataset,
        fields.get("transform"),
        summary(record),
        link.run_id if link is not None else None,
        link.step_id if link is not None else None,
    )
    edges = [(record.object, p, rid) for p in record.parents]
    key = fields.get("recipe") or fields.get("action")
    return row, edges, (key, record.object, rid) if key is not None else None


@dataclass(frozen=True)
class ObjectRow:
    """One object as the index knows it, with its first record's type and time."""

    id: str
    size: int
    stored_size: int
    compression: str
    type: str | None
    created: str | None


class Index:
    """A connection to a store's ``index.sqlite``."""

    def __init__(self, path: Path, *, timeout: float = 60.0) -> None:
        self.path = path
        self.fresh = not path.exists()
        try:
            # One thread at a time uses the connection, but not always the opening one: a
            # bulk metadata store hands its inserts to a writer thread.
            self.db = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            # up to 64 MiB of pages (allocated as used): big metadata loads stay in memory
            self.db.execute("PRAGMA cache_size=-65536")
            self._drop_if_old()
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreFormatError(
                f"index {path} is damaged ({exc}); run 'cas index rebuild'"
            ) from exc

    def _drop_if_old(self) -> None:
        """An index built by another version is dropped whole; the next open rebuilds it."""
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key='built'").fetchone()
        except sqlite3.OperationalError:
            return  # no meta table yet: a new index
        if row is None or row[0] == INDEX_VERSION:
            return
        with self.transaction() as db:
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type='table'"
            ).fetchall():
                db.execute(f'DROP TABLE IF EXISTS "{name}"')

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: writers queue, never deadlock)."""
        return write_transaction(self.db)

    # ---- writers in flight ------------------------------------------------------------
    # A writer registers a token before it writes files and removes it in the transaction
    # that indexes them. A token left by a process that died means files may exist that
    # the index does not know: the next open rebuilds.

    def begin_pending(self) -> str:
        """Register a writer about to add files; return its token."""
        token = f"pending:{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        with self.transaction() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (token, str(time.time())))
        return token

    @staticmethod
    def end_pending(db: sqlite3.Connection, token: str) -> None:
        """Drop a writer's token (inside the transaction that indexes its files)."""
        db.execute("DELETE FROM meta WHERE key=?", (token,))

    def has_dead_writers(self) -> bool:
        """True when a writer died between writing files and indexing them."""
        rows = self.db.execute("SELECT key, value FROM meta WHERE key LIKE 'pending:%'")
        return any(_writer_dead(key, float(value)) for key, value in rows)

    def is_built(self) -> bool:
        """True once a full build has completed at least once."""
        row = self.db.execute("SELECT value FROM meta WHERE key='built'").fetchone()
        return row is not None and row[0] == INDEX_VERSION

    # ---- writes (call inside transaction()) --------------------------------------------
    @staticmethod
    def put_object(db: sqlite3.Connection, oid: str, size: int, stored: int, comp: str) -> None:
        """Insert or refresh an object row."""
        db.execute(_PUT_OBJECT, (oid, size, stored, comp))

    @staticmethod
    def put_record(db: sqlite3.Connection, rid: str, record: Any) -> None:
        """Insert a record row (with the pipeline run and step it names) and its edges."""
        Index.put_rows(db, (), (record_rows(rid, record),))

    @staticmethod
    def put_rows(
        db: sqlite3.Connection, objects: Iterable[ObjectRowIn], records: Iterable[RecordRows]
    ) -> None:
        """Insert many object rows and records' rows (from :func:`record_rows`) at once."""
        db.executemany(_PUT_OBJECT, objects)
        records = list(records)
        db.executemany(_PUT_RECORD, [r[0] for r in records])
        db.executemany(_PUT_EDGE, [e for r in records for e in r[1]])
        db.executemany(_PUT_RECIPE, [r[2] for r in records if r[2] is not None])

    def set_ref(self, name: str, object_id: str | None) -> None:
        """Mirror a ref move (``None`` removes it)."""
        with self.transaction() as db:
            if object_id is None:
                db.execute("DELETE FROM refs WHERE name=?", (name,))
            else:
                db.execute(
                    "INSERT OR REPLACE INTO refs (name, object_id) VALUES (?,?)", (name, object_id)
                )

    def rebuild(
        self,
        scan: Callable[
            [], tuple[Iterable[tuple[str, int, int, str]], Iterable[tuple[str, Any]], dict]
        ],
    ) -> None:
        """Replace the whole content with what ``scan()`` reads from the files.

        ``scan`` runs after the write transaction has begun, so no concurrent writer's
        rows can slip in between the scan and the commit and be lost.
        """
        with self.transaction() as db:
            objects, records, refs = scan()
            for table in ("objects", "records", "edges", "refs", "recipes"):
                db.execute(f"DELETE FROM {table}")
            # A dead writer's files are covered by the scan; a live writer keeps its token
            # (it indexes its own files, and its death must still be noticed).
            for (key,) in db.execute("SELECT key FROM meta WHERE key LIKE 'pending:%'").fetchall():
                if _writer_dead(key, 0.0):
                    db.execute("DELETE FROM meta WHERE key=?", (key,))
            self.put_rows(db, objects, (record_rows(rid, record) for rid, record in records))
            db.executemany("INSERT INTO refs (name, object_id) VALUES (?,?)", refs.items())
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('built', ?)", (INDEX_VERSION,)
            )

    # ---- reads -----------------------------------------------------------------------
    def objects(self) -> list[ObjectRow]:
        """Every object with its earliest record's type and time, oldest first."""
        rows = self.db.execute(
            """
            SELECT o.id, o.size, o.stored_size, o.compression,
                   (SELECT type FROM records WHERE object_id=o.id ORDER BY created LIMIT 1),
                   (SELECT min(created) FROM records WHERE object_id=o.id)
            FROM objects o
            """
        ).fetchall()
        out = [ObjectRow(*row) for row in rows]
        out.sort(key=lambda r: (r.created or "", r.id))
        return out

    def by_recipe(self, key: str) -> list[tuple[str, str]]:
        """``(object_id, record_id)`` pairs made by a sample recipe or a run action."""
        rows = self.db.execute(
            "SELECT p.object_id, p.record_id FROM recipes p JOIN records r ON r.id = p.record_id"
            " WHERE p.key=? ORDER BY r.created DESC, p.record_id",
            (key,),
        )
        return [(r[0], r[1]) for r in rows]

    def children(self, object_id: str) -> list[str]:
        """Objects that name ``object_id`` as a parent."""
        rows = self.db.execute(
            "SELECT DISTINCT child FROM edges WHERE parent=? ORDER BY child", (object_id,)
        )
        return [r[0] for r in rows]

    def counts(self) -> dict[str, int]:
        """Row counts per table, for status output and checks."""
        return {
            t: self.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("objects", "records", "edges", "refs")
        }


@contextlib.contextmanager
def write_transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` on an autocommit connection; rollback on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _writer_dead(token: str, since: float) -> bool:
    """Whether the writer that left ``token`` (``pending:host:pid:rand``) is gone.

    On this host: its pid no longer exists. Another host's writer counts as gone when its
    token is a day old (``since`` is when it registered).
    """
    try:
        _, host, pid, _ = token.split(":", 3)
        if host != socket.gethostname():
            return since > 0 and time.time() - since > 86400
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OSError):
        return False
    return _zombie(int(pid))


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits to be reaped (Linux; elsewhere: False)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] == b"Z"
    except (OSError, IndexError):
        return False
