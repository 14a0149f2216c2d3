"""Fixtures for the lineage tests."""

from __future__ import annotations

import io

import pytest

from casstore.store import Store


@pytest.fixture
def diamond(store: Store) -> dict[str, str]:
    """D made from B and C, both made from A: ``{"A": id, ...}``."""
    a = store.add(io.BytesIO(b"A\n")).id
    b = store.add(io.BytesIO(b"B\n"), parents=[a], transform="left").id
    c = store.add(io.BytesIO(b"C\n"), parents=[a], transform="right").id
    d = store.add(io.BytesIO(b"D\n"), parents=[b, c], transform="join").id
    return {"A": a, "B": b, "C": c, "D": d}
