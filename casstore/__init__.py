"""casstore: a content-addressed artifact store with a chain of custody.

The public API is :class:`Store` and the exception tree in :mod:`casstore.errors`::

    from casstore import Store

    with Store.open("data") as store:
        result = store.add("dump.json.gz", source_id="systems")
        print(result.id)

Names are imported lazily (PEP 562) so that ``cas --help`` does not pay for pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from casstore._version import __version__

if TYPE_CHECKING:
    from casstore.errors import (
        AmbiguousPrefix,
        BadRecord,
        CasError,
        CommandFailed,
        FetchError,
        InputError,
        IntegrityError,
        InvalidObjectId,
        InvalidRefName,
        LockError,
        ManifestError,
        MetadataError,
        ObjectNotFound,
        PayloadError,
        RefConflict,
        RefError,
        RefNotFound,
        RunNotFound,
        SourceNotFound,
        StoreFormatError,
        StoreNotFound,
        UsageError,
    )
    from casstore.meta.models import MetadataContext, MetadataRecord, MetadataTarget
    from casstore.meta.repository import Condition, MetadataRepository
    from casstore.store import AddResult, ObjectInfo, Store

__all__ = [
    "AddResult",
    "AmbiguousPrefix",
    "BadRecord",
    "CasError",
    "CommandFailed",
    "Condition",
    "FetchError",
    "InputError",
    "IntegrityError",
    "InvalidObjectId",
    "InvalidRefName",
    "LockError",
    "ManifestError",
    "MetadataContext",
    "MetadataError",
    "MetadataRecord",
    "MetadataRepository",
    "MetadataTarget",
    "ObjectInfo",
    "ObjectNotFound",
    "PayloadError",
    "RefConflict",
    "RefError",
    "RefNotFound",
    "RunNotFound",
    "SourceNotFound",
    "Store",
    "StoreFormatError",
    "StoreNotFound",
    "UsageError",
    "__version__",
]

_HOME = {name: "casstore.store" for name in ("AddResult", "ObjectInfo", "Store")}
_HOME.update(
    {
        name: "casstore.meta.models"
        for name in ("MetadataContext", "MetadataRecord", "MetadataTarget")
    }
)
_HOME.update({name: "casstore.meta.repository" for name in ("Condition", "MetadataRepository")})


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    if name in __all__:
        return getattr(importlib.import_module("casstore.errors"), name)
    raise AttributeError(f"module 'casstore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
