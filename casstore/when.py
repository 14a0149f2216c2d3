"""Durations and points in time as users type them: ``90d``, ``7d``, ``2024-01-10``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from casstore.errors import UsageError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``0``, ``30m``, ``1h``, ``90d``, ``2w`` -> seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise UsageError(f"not a duration: {text!r} (try 0, 30m, 1h, 90d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """A point in time: a duration ago (``7d``, ``12h``) or an ISO-8601 date or time.

    A time without a zone is UTC; ``now`` defaults to the current time.
    """
    now = now or datetime.now(UTC)
    value = text.strip()
    if _DURATION.fullmatch(value.lower()):
        return now - timedelta(seconds=parse_duration(value))
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"not a time: {text!r} (try 7d, 12h, 2024-01-10 or 2024-01-10T05:00:00Z)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
