"""Fixtures of the verify and gc tests (defined in ``_maint``, beside their helpers)."""

from tests.maint._maint import built, http_dir

__all__ = ["built", "http_dir"]
