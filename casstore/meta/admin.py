"""Looking after the metadata repository: retention compaction and the kinds overview.

Retention is the store's policy (``[meta.retention]`` in ``config.toml``: a duration per
kind, kinds not named are kept forever). Compaction rewrites the one log every tenant
shares, so by default it applies to every tenant; ``tenant`` narrows it to one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from pydantic import BaseModel

from casstore.meta.kinds import KindInfo, kinds
from casstore.meta.repository import EmbeddedRepository
from casstore.when import parse_duration


class CompactReport(BaseModel):
    """What a compaction dropped (or, with ``dry_run``, would drop), per kind."""

    dry_run: bool
    tenant: str | None  # None: every tenant
    retention: dict[str, str]  # kind -> duration, as configured
    dropped: dict[str, int]  # kind -> log lines dropped (a record stored twice has two)

    @property
    def total(self) -> int:
        """Log lines dropped over every kind."""
        return sum(self.dropped.values())


class KindsOverview(BaseModel):
    """The registered kinds, and the kinds this tenant's records use."""

    tenant: str
    strict: bool
    registered: list[KindInfo]
    in_use: dict[str, int]  # kind -> records, registered or not


def compact(
    repo: EmbeddedRepository,
    retention: Mapping[str, str],
    *,
    dry_run: bool = False,
    tenant: str | None = None,
    now: datetime | None = None,
) -> CompactReport:
    """Drop records older than their kind's retention (``{"ingestion_volume": "90d"}``).

    Raises:
        UsageError: a retention that is not a duration.
    """
    windows = {kind: parse_duration(text) for kind, text in retention.items()}
    dropped = repo.compact(windows, now or datetime.now(UTC), dry_run=dry_run, tenant=tenant)
    return CompactReport(
        dry_run=dry_run,
        tenant=tenant,
        retention=dict(sorted(retention.items())),
        dropped=dict(sorted(dropped.items())),
    )


def kinds_overview(repo: EmbeddedRepository) -> KindsOverview:
    """Every registered kind (fields, schema file) and the record counts per kind in use."""
    return KindsOverview(
        tenant=repo.tenant,
        strict=repo.strict,
        registered=kinds(),
        in_use=repo.kinds_in_use(),
    )
