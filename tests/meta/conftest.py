"""Fixtures of the metadata tests: a repository on a fresh store, and the fetch tests'
programmable HTTP server (for the records ``cas fetch`` emits)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from casstore.meta.repository import EmbeddedRepository
from casstore.store import Store
from tests.fetch.conftest import _no_netrc, faults

__all__ = ["_no_netrc", "faults", "repo"]


@pytest.fixture
def repo(store: Store) -> Iterator[EmbeddedRepository]:
    """The metadata repository of the fresh ``store`` (default tenant)."""
    yield store.metadata()
