"""Refs (names that point to objects) and their append-only reflogs.

A ref ``a/b/c`` is the file ``refs/a/b/c`` holding one line, the object id. It moves only
under its lock (``refs/a/b/c.lock``, see :class:`casstore._fs.LockFile`), by
compare-and-swap: the old value is re-read while the lock is held, and a caller that says
which value it expects loses with :class:`RefConflict` when another process got there first.

Every move is appended to the ref's reflog, ``logs/refs/<name with / as %2F>``, one JSON
line per event. Reflogs are flat files so that removing ``a/b`` and later creating
``a/b/c`` can never clash over a path; a removed ref keeps its reflog.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from casstore import _fs
from casstore.errors import InvalidRefName, RefConflict, RefError, RefNotFound
from casstore.ids import check_object_id, is_object_id
from casstore.records import iso_utc, utcnow

_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_MAX_FLAT = 240  # longest reflog file name; longer ref names use a hashed file name
MAX_NAME = 1024
MAX_SEGMENT = 200


class _Any:
    """Marker: no expectation about a ref's old value."""

    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()


def check_ref_name(name: str, *, what: str = "ref name") -> str:
    """Return ``name`` if it is a valid ref name (or source id), else raise.

    Valid: segments of ``[A-Za-z0-9._-]`` joined by ``/``; no empty segment, no segment
    starting with ``.`` (so no ``..``, no hidden files), none ending in ``.lock``.
    """
    if not isinstance(name, str) or not name:
        raise InvalidRefName(f"invalid {what}: empty")
    if len(name) > MAX_NAME:
        raise InvalidRefName(f"invalid {what}: longer than {MAX_NAME} characters")
    for seg in name.split("/"):
        if not seg:
            raise InvalidRefName(f"invalid {what} {name!r}: empty segment or leading/trailing '/'")
        if not _SEGMENT.fullmatch(seg):
            raise InvalidRefName(
                f"invalid {what} {name!r}: segments may only use letters, digits, '.', '_', '-'"
            )
        if seg.startswith("."):
            raise InvalidRefName(f"invalid {what} {name!r}: a segment may not start with '.'")
        if ".." in seg:
            raise InvalidRefName(f"invalid {what} {name!r}: '..' is not allowed")
        if seg.endswith(".lock"):
            raise InvalidRefName(f"invalid {what} {name!r}: a segment may not end with '.lock'")
        if len(seg) > MAX_SEGMENT:
            raise InvalidRefName(f"invalid {what} {name!r}: a segment is over {MAX_SEGMENT} chars")
    return name


class ReflogEntry(BaseModel):
    """One event in a ref's history."""

    model_config = ConfigDict(frozen=True)

    time: datetime = Field(default_factory=utcnow)
    ref: str
    action: str  # "set", "delete", or an event such as "fetch-unchanged"
    old: str | None = None
    new: str | None = None
    user: str = ""
    host: str = ""
    message: str = ""
    details: dict[str, Any] = Field(default_factory=dict)

    @field_serializer("time")
    def _iso(self, value: datetime) -> str:
        return iso_utc(value)


class RefUpdate(BaseModel):
    """The outcome of a ref move."""

    ref: str
    old: str | None
    new: str | None
    changed: bool


def whoami() -> tuple[str, str]:
    """``(user, host)`` for records and reflogs."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return user, socket.gethostname()


class RefStore:
    """The ``refs/`` and ``logs/refs/`` directories of a store."""

    def __init__(self, root: Path, *, lock_timeout: float = 30.0) -> None:
        self.dir = root / "refs"
        self.logs = root / "logs" / "refs"
        self.lock_timeout = lock_timeout

    def _path(self, name: str) -> Path:
        return self.dir.joinpath(*check_ref_name(name).split("/"))

    def _log_path(self, name: str) -> Path:
        flat = check_ref_name(name).replace("/", "%2F")
        if len(flat) > _MAX_FLAT:  # too long for one file name: name it by its hash
            flat = "h-" + hashlib.sha256(name.encode()).hexdigest()
        return self.logs / flat

    def _read(self, path: Path, name: str) -> str | None:
        try:
            text = path.read_text(encoding="ascii").strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except (UnicodeDecodeError, OSError) as exc:
            raise RefError(f"ref {name!r} is unreadable: {exc}") from exc
        if not is_object_id(text):
            raise RefError(f"ref {name!r} is corrupt: {text[:40]!r} is not an object id")
        return text

    def get(self, name: str) -> str | None:
        """The object a ref points to, or None when the ref does not exist."""
        return self._read(self._path(name), name)

    def require(self, name: str) -> str:
        """Like :meth:`get` but raise :class:`RefNotFound` for a missing ref."""
        value = self.get(name)
        if value is None:
            raise RefNotFound(f"no ref named {name!r}")
        return value

    def names(self, prefix: str = "") -> Iterator[str]:
        """Every ref name under ``prefix`` (a ref-name prefix such as ``tags/``), sorted."""
        out = []
        for dirpath, dirnames, filenames in os.walk(self.dir):
            dirnames.sort()
            rel = os.path.relpath(dirpath, self.dir)
            for f in filenames:
                if f.endswith(".lock"):
                    continue
                name = f if rel == "." else f"{rel}/{f}".replace(os.sep, "/")
                if name.startswith(prefix):
                    out.append(name)
        yield from sorted(out)

    def items(self, prefix: str = "") -> dict[str, str]:
        """``{name: object_id}`` for every readable ref under ``prefix``."""
        out = {}
        for name in self.names(prefix):
            try:
                value = self.get(name)
            except (RefError, InvalidRefName):
                continue  # verify reports these; listing should not fail on one bad file
            if value is not None:
                out[name] = value
        return out

    def set(
        self,
        name: str,
        object_id: str,
        *,
        expected: str | _Any | None = ANY,
        action: str = "set",
        message: str = "",
        details: dict[str, Any] | None = None,
    ) -> RefUpdate:
        """Point ``name`` at ``object_id`` by compare-and-swap.

        ``expected`` is the value the caller believes the ref has (``None``: must not
        exist); when the ref holds something else, :class:`RefConflict` is raised and
        nothing changes. The caller must have checked that the object exists.
        """
        check_object_id(object_id)
        path = self._path(name)
        self._clear_empty_dir(path, name)
        lock = _fs.LockFile(path, timeout=self.lock_timeout)
        try:
            lock.acquire()
        except (NotADirectoryError, FileExistsError) as exc:
            self._prune(path.parent)
            raise RefConflict(f"ref {name!r} clashes with an existing ref above it") from exc
        try:
            old = self._read(path, name)
            if expected is not ANY and old != expected:
                raise RefConflict(
                    f"ref {name!r} moved: expected {_show(expected)}, found {_show(old)}"
                )
            if old == object_id:
                return RefUpdate(ref=name, old=old, new=object_id, changed=False)
            lock.write(f"{object_id}\n".encode())
            # The reflog line goes first, while the lock is held (as git does): lines stay
            # in the order of the moves, and a crash leaves at worst a line for a move that
            # did not happen, never a move without its line.
            self._append(name, action, old, object_id, message, details)
            try:
                lock.commit()
            except IsADirectoryError as exc:
                raise RefConflict(f"ref {name!r} clashes with refs below it") from exc
        finally:
            lock.release()
            if not path.exists():
                self._prune(path.parent)  # a refused new ref leaves no directories behind
        return RefUpdate(ref=name, old=old, new=object_id, changed=True)

    def check_free(self, name: str) -> None:
        """Raise :class:`RefConflict` if ``name`` could not be set as things stand: a ref is
        named by one of its leading parts, or refs exist below it. For a check before
        work that ends in :meth:`set` (which checks again, under its lock)."""
        path = self._path(name)
        above = path.parent
        while above != self.dir and self.dir in above.parents:
            if above.is_file():
                raise RefConflict(f"ref {name!r} clashes with an existing ref above it")
            above = above.parent
        if path.is_dir() and any(files for _, _, files in os.walk(path)):
            raise RefConflict(f"ref {name!r} clashes with refs below it")

    def delete(
        self, name: str, *, expected: str | _Any | None = ANY, message: str = ""
    ) -> RefUpdate:
        """Remove a ref (its reflog stays, with a ``delete`` entry)."""
        path = self._path(name)
        if self._read(path, name) is None:
            raise RefNotFound(f"no ref named {name!r}")
        try:
            with _fs.LockFile(path, timeout=self.lock_timeout):
                old = self._read(path, name)
                if old is None:
                    raise RefNotFound(f"no ref named {name!r}")
                if expected is not ANY and old != expected:
                    raise RefConflict(
                        f"ref {name!r} moved: expected {_show(expected)}, found {_show(old)}"
                    )
                self._append(name, "delete", old, None, message, None)
                os.unlink(path)
                _fs.fsync_dir(path.parent)
        finally:
            self._prune(path.parent)
        return RefUpdate(ref=name, old=old, new=None, changed=True)

    def record_event(
        self, name: str, action: str, *, message: str = "", details: dict[str, Any] | None = None
    ) -> None:
        """Append an event that does not move the ref (for example "checked, unchanged")."""
        path = self._path(name)
        if self._read(path, name) is None:
            raise RefNotFound(f"no ref named {name!r}")
        with _fs.LockFile(path, timeout=self.lock_timeout):
            current = self._read(path, name)
            self._append(name, action, current, current, message, details)

    def log(self, name: str) -> list[ReflogEntry]:
        """A ref's history, oldest first. Lines that do not parse are skipped."""
        try:
            lines = self._log_path(name).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(ReflogEntry.model_validate_json(line))
            except ValueError:
                continue  # verify reports corrupt lines
        return out

    def logged_names(self) -> list[str]:
        """Names of every ref that has a reflog (including removed refs)."""
        try:
            files = os.listdir(self.logs)
        except FileNotFoundError:
            return []
        names = []
        for f in files:
            if not f.startswith("h-"):
                names.append(f.replace("%2F", "/"))
                continue
            try:  # a hashed file name: the ref's name is in its entries
                with open(self.logs / f, encoding="utf-8") as fh:
                    names.append(json.loads(fh.readline())["ref"])
            except (OSError, ValueError, KeyError):
                continue
        return sorted(names)

    def _append(
        self,
        name: str,
        action: str,
        old: str | None,
        new: str | None,
        message: str,
        details: dict[str, Any] | None,
    ) -> None:
        user, host = whoami()
        entry = ReflogEntry(
            ref=name,
            action=action,
            old=old,
            new=new,
            user=user,
            host=host,
            message=message,
            details=details or {},
        )
        line = json.dumps(entry.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        path = self._log_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        # One write() of a single line with O_APPEND: concurrent appenders never interleave.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def _clear_empty_dir(self, path: Path, name: str) -> None:
        """Empty directories where ref ``name`` should go (left by removed refs) go away."""
        if not path.is_dir():
            return
        try:
            for dirpath, _, _ in sorted(os.walk(path), key=lambda w: -len(w[0])):
                os.rmdir(dirpath)  # deepest first; fails on the first non-empty directory
        except OSError as exc:
            raise RefConflict(f"ref {name!r} clashes with refs below it") from exc

    def _prune(self, directory: Path) -> None:
        """Remove empty directories from ``directory`` up to ``refs/``, as git does."""
        while directory != self.dir and self.dir in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent


def _show(value: object) -> str:
    if value is None:
        return "no ref"
    return str(value)[:12]
