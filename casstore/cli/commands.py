"""Imports every command module so that each registers its commands on the group."""

from casstore.cli import (
    fetch_cmds,
    gc_cmds,
    index_cmds,
    lineage_cmds,
    manifest_cmds,
    meta_cmds,
    ref_cmds,
    run_cmds,
    runs_cmds,
    sample_cmds,
    store_cmds,
    verify_cmds,
)

__all__ = [
    "fetch_cmds",
    "gc_cmds",
    "index_cmds",
    "lineage_cmds",
    "manifest_cmds",
    "meta_cmds",
    "ref_cmds",
    "run_cmds",
    "runs_cmds",
    "sample_cmds",
    "store_cmds",
    "verify_cmds",
]
