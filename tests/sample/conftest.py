"""Fixtures for the sampling tests; importing the CLI module registers ``cas sample``."""

from __future__ import annotations

import casstore.cli.sample_cmds  # noqa: F401 - registers `cas sample` on the group
