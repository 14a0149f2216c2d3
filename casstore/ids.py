"""Object ids: 64-digit lowercase hex SHA-256, their prefixes and their fan-out paths.

Ids are validated here before they ever become a path, so no string from a user, a record
or a remote can name a file outside ``objects/``.
"""

from __future__ import annotations

import re
from pathlib import Path

from casstore.errors import InvalidObjectId

ID_LEN = 64
MIN_PREFIX = 4
_FULL = re.compile(r"[0-9a-f]{64}")
_PREFIX = re.compile(r"[0-9a-f]{4,64}")


def is_object_id(text: str) -> bool:
    """True when ``text`` is a full 64-digit lowercase hex id."""
    return bool(_FULL.fullmatch(text))


def is_prefix(text: str) -> bool:
    """True when ``text`` could be an abbreviated id (4 to 64 lowercase hex digits)."""
    return bool(_PREFIX.fullmatch(text))


def check_object_id(text: str) -> str:
    """Return ``text`` when it is a full id, else raise :class:`InvalidObjectId`."""
    if not is_object_id(text):
        raise InvalidObjectId(f"not a sha256 object id: {text!r}")
    return text


def fanout(object_id: str) -> tuple[str, str]:
    """Split a valid id into its fan-out directory and file name: ``ab``, ``cdef…``."""
    check_object_id(object_id)
    return object_id[:2], object_id[2:]


def object_path(objects_dir: Path, object_id: str) -> Path:
    """The path of an object's raw file (``objects/ab/cdef…``), without any suffix."""
    head, tail = fanout(object_id)
    return objects_dir / head / tail


def object_path_str(objects_dir: str, object_id: str) -> str:
    """:func:`object_path` as a plain string, for the write path of many small files,
    where each :class:`~pathlib.Path` built costs more than a simple system call."""
    check_object_id(object_id)
    return f"{objects_dir}/{object_id[:2]}/{object_id[2:]}"


def short(object_id: str, n: int = 12) -> str:
    """The abbreviated id shown to people."""
    return object_id[:n]
