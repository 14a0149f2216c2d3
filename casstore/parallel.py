"""Worker processes that store many small files at once, for :meth:`Store.add_many`.

Storing a small file costs a handful of system calls (create, write, rename, ``mkdir``)
and some Python around them. Threads cannot share that work: the Python part holds the
GIL, and measured here, two threads were slower than one. Separate processes do share it:
each stores its files on its own core, and the store is already safe for concurrent
writers (objects and records appear by atomic rename, a record's provenance check runs
under the lock of its ``.meta`` directory).

The adding process keeps everything that orders and indexes. It hands out chunks of
inputs in input order, gets back for each file its result and index rows (plain tuples,
cheap to pickle), and indexes them after its batch barrier, as for files it stores itself.

Workers are forked, not spawned: a spawned worker imports casstore again (about 0.2 s).
They are forked only from a process with a single thread, since a fork copies locks held
by other threads; where that does not hold, :func:`worker_count` says 0 and the caller
stores every file itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from casstore import _fs
from casstore.errors import CasError

_MAX_WORKERS = 8
_PR_SET_PDEATHSIG = 1  # prctl(2): a signal sent to this process when its parent dies

# Set in the adding process just before the fork, so that every worker inherits it: the
# function storing one input, and the pid workers watch to stop when the adder is gone.
_job: Callable[..., Any] | None = None
_adder = 0
_prctl: Callable[..., int] | None = None


def worker_count() -> int:
    """How many worker processes to use here: one per usable core, or 0 when forking is
    not safe or not worth it (one core, another platform, other threads running, native
    ones such as zstd's included)."""
    if sys.platform != "linux" or threading.active_count() > 1 or _native_threads() > 1:
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except OSError:
        cores = os.cpu_count() or 1
    return min(cores, _MAX_WORKERS) if cores > 1 else 0


def _find_prctl() -> None:
    """Look up prctl(2) in the adder, so that a worker only calls it: looking a symbol up
    takes the dynamic loader's lock, which a fork may have copied in a held state."""
    global _prctl
    if _prctl is None:
        with contextlib.suppress(OSError, AttributeError):
            _prctl = ctypes.CDLL(None, use_errno=True).prctl


def _native_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 2  # cannot tell: assume the worst


class Workers:
    """A pool of forked workers, each running ``job(*item)`` over chunks of items."""

    def __init__(self, count: int, job: Callable[..., Any]) -> None:
        global _job, _adder
        # Output buffered but not yet written would be written again by each child.
        sys.stdout.flush()
        sys.stderr.flush()
        _job, _adder = job, os.getpid()
        _find_prctl()
        # Ctrl-C is held back while the workers start: until a worker ignores SIGINT,
        # it has the handler that only notes it, so none can be killed by it half-made.
        with _fs.interrupts_held():
            self._pool = ProcessPoolExecutor(
                count, mp_context=multiprocessing.get_context("fork"), initializer=_started
            )
            try:
                # Fork now, while this process has one thread: the pool starts a thread
                # of its own right after its workers.
                self._pool.submit(int).result()
            except BaseException:
                self._pool.shutdown(wait=False, cancel_futures=True)
                raise
            finally:
                _job = None

    def submit(self, chunk: list[tuple[Any, ...]]) -> Future[list[Any]]:
        """Run the job over ``chunk`` in a worker; the future's result lists what each item
        returned, in order, ending early at the first item that raised (its error)."""
        return self._pool.submit(_run, chunk)

    def close(self) -> None:
        """Drop chunks not yet started, let the workers finish the ones they hold, and
        wait for them to exit."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def _started() -> None:
    # Ctrl-C reaches the whole process group: the adder handles it, waiting for the
    # chunks in flight so that what they stored gets indexed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker holds copies of the adder's descriptors, the store lock among them: if
    # the adder is killed, its workers must end too, not wait on their queue for ever.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != _adder:  # it died before the line above took effect
        os._exit(1)


def _run(chunk: list[tuple[Any, ...]]) -> list[Any]:
    """A worker's part: store each item until the first error, which ends the list."""
    assert _job is not None
    out: list[Any] = []
    for item in chunk:
        if os.getppid() != _adder:  # the adder died: nobody would index what we write
            break
        try:
            out.append(_job(*item))
        except Exception as exc:
            out.append(_picklable(exc))
            break
    return out


def _picklable(exc: Exception) -> Exception:
    """``exc`` itself when it survives the trip back to the adder, else its message."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return CasError(f"{type(exc).__name__}: {exc}")
    return exc
