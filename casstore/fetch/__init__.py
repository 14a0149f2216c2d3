"""Fetching over HTTP: probe, download once with a chain of custody, check for changes."""

from casstore.fetch.fetcher import CheckResult, FetchFailure, FetchResult, check, fetch, fetch_many
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
