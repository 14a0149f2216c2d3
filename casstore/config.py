"""``config.toml``: store settings, read with :mod:`tomllib`, validated with pydantic."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from casstore.errors import StoreFormatError, UsageError
from casstore.when import parse_duration

FORMAT_VERSION = 1


class ObjectsConfig(BaseModel):
    """How object bytes are kept at rest."""

    model_config = ConfigDict(extra="forbid")
    compression: Literal["auto", "zstd", "none"] = "auto"
    zstd_level: int = Field(default=3, ge=1, le=19)


class LocksConfig(BaseModel):
    """How long to wait for a lock before giving up with a message naming its holder."""

    model_config = ConfigDict(extra="forbid")
    timeout: float = Field(default=30.0, gt=0)
    # the store lock: writers wait this long for a gc to finish, and gc for writers
    store_timeout: float = Field(default=3600.0, gt=0)


class GcConfig(BaseModel):
    """gc defaults; flags override them. Durations read like 0, 30m, 1h, 90d."""

    model_config = ConfigDict(extra="forbid")
    grace: str = "1h"
    reflog_expire: str = "90d"
    keep_samples: int | None = Field(default=None, ge=0)
    samples_older_than: str | None = None
    keep_last: int | None = Field(default=None, ge=1)
    keep_daily: int | None = Field(default=None, ge=1)
    keep_weekly: int | None = Field(default=None, ge=1)


class MetaConfig(BaseModel):
    """The metadata repository: default tenant, strictness, retention per kind."""

    model_config = ConfigDict(extra="forbid")
    tenant: str = Field(default="default", min_length=1, max_length=200)
    strict: bool = False  # refuse kinds that are not registered
    retention: dict[str, str] = Field(default_factory=dict)  # kind -> duration ("90d")

    @field_validator("retention")
    @classmethod
    def _durations(cls, value: dict[str, str]) -> dict[str, str]:
        for kind, text in value.items():
            try:
                parse_duration(text)
            except UsageError:
                raise ValueError(f"{kind}: not a duration: {text!r} (try 90d)") from None
        return value


class StoreSection(BaseModel):
    """The store's own identity."""

    model_config = ConfigDict(extra="allow")
    format: int = Field(default=FORMAT_VERSION, ge=1)


class StoreConfig(BaseModel):
    """The whole of ``config.toml``. Unknown top-level tables are kept for later versions."""

    model_config = ConfigDict(extra="allow")
    store: StoreSection = Field(default_factory=StoreSection)
    objects: ObjectsConfig = Field(default_factory=ObjectsConfig)
    locks: LocksConfig = Field(default_factory=LocksConfig)
    gc: GcConfig = Field(default_factory=GcConfig)
    meta: MetaConfig = Field(default_factory=MetaConfig)


def default_toml(compression: str = "auto") -> str:
    """The config written by ``cas init``."""
    return f"""\
# casstore store configuration (see docs/format.md)

[store]
format = {FORMAT_VERSION}

[objects]
# auto: zstd at rest unless the data is already compressed or zstd saves under 10%
# zstd: always zstd;  none: always raw
compression = "{compression}"
zstd_level = 3

[locks]
# seconds to wait for a ref or store lock before giving up
timeout = 30

[gc]
# what gc keeps; cas gc flags override these
grace = "1h"            # anything written this recently is never collected
reflog_expire = "90d"   # reflog entries (and what they point to) kept this long
# keep_samples = 5      # per source, the newest N sample refs
# samples_older_than = "30d"
# keep_last = 7         # versions of each source kept in its history
# keep_daily = 7
# keep_weekly = 4

[meta]
# the tenant that metadata records and pipeline runs belong to when none is given
tenant = "default"
# strict = true refuses metadata kinds that are not registered (cas meta kinds)
strict = false

[meta.retention]
# how long cas meta compact keeps records of each kind; kinds not named are kept forever
# ingestion_volume = "90d"
# ingestion_runtime = "90d"
"""


def load_config(path: Path) -> StoreConfig:
    """Read and validate ``config.toml``; a missing file means defaults."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return StoreConfig()
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StoreFormatError(f"{path}: not valid TOML: {exc}") from exc
    try:
        config = StoreConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise StoreFormatError(f"{path}: {where}: {first['msg']}") from exc
    if config.store.format > FORMAT_VERSION:
        raise StoreFormatError(
            f"store format {config.store.format} is newer than this cas supports"
            f" ({FORMAT_VERSION}); upgrade casstore"
        )
    return config
