"""Fetching over HTTP: probe, download once with a chain of custody, check for changes."""

from casstore.fetch.fetcher import CheckResult, FetchFailure, FetchResult, check, fetch
from casstore.fetch.http import HttpOptions
from casstore.fetch.probe import ProbeResult, probe
from casstore.fetch.sources import Source, SourceRegistry

__all__ = [
    "CheckResult",
    "FetchFailure",
    "FetchResult",
    "HttpOptions",
    "ProbeResult",
    "Source",
    "SourceRegistry",
    "check",
    "fetch",
    "fetch_many",
    "probe",
]


def __getattr__(name: str) -> object:
    # fetch_many needs asyncio: imported only when asked for, so a single fetch does not pay
    if name == "fetch_many":
        from casstore.fetch.many import fetch_many

        return fetch_many
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
