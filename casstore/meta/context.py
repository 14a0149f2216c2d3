"""Which pipeline run (and step) is in progress here, so that records can say so.

Every place that builds a record asks :func:`current_link` and stores the answer in
``record.pipeline``. The answer comes from a :class:`contextvars.ContextVar`, set by
``run.step(...)`` and ``store.pipeline_run(...)`` in Python, and by the ``cas`` command
group from ``CAS_RUN``/``CAS_STEP`` for shell pipelines. The library never reads the
environment: the CLI turns those variables into a link and sets it here.

A context variable (not a global) keeps concurrent runs in threads or asyncio tasks from
seeing each other's links. Worker threads do not inherit it, which is why record code reads
it in the thread that started the write (``Store.add_many`` takes it up front).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # kept out of the import: `cas --help` must not load pydantic
    from casstore.records import PipelineLink

_LINK: ContextVar[PipelineLink | None] = ContextVar("casstore_pipeline_link", default=None)


def current_link() -> PipelineLink | None:
    """The run and step that records written now belong to, or None outside any run."""
    return _LINK.get()


def set_link(link: PipelineLink | None) -> Token[PipelineLink | None]:
    """Make ``link`` current until :func:`reset_link` is called with the returned token."""
    return _LINK.set(link)


def reset_link(token: Token[PipelineLink | None]) -> None:
    """Restore the link that was current before the matching :func:`set_link`."""
    _LINK.reset(token)


@contextlib.contextmanager
def linked(link: PipelineLink | None) -> Iterator[None]:
    """Records written inside the block carry ``link`` (None: no link)."""
    token = _LINK.set(link)
    try:
        yield
    finally:
        _LINK.reset(token)
