"""Several fetches at once (``cas fetch --all``, ``-i``): asyncio httpx, one connection pool.

Bodies stream on the event loop through :func:`download_async`, which drives the same
protocol state (:class:`~casstore.fetch.download.DownloadState`) as a single blocking fetch.
The store's blocking work (waiting for a source's fetch lock, records with their fsync,
the index, ref moves, metadata) runs in worker threads, one store handle per target.
Kept apart from :mod:`casstore.fetch.fetcher` so that a single fetch never imports
asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

import httpx

from casstore.errors import CasError, IntegrityError
from casstore.fetch.download import DownloadResult, DownloadState, RetryableStatus, Validators
from casstore.fetch.fetcher import FetchFailure, FetchJob, FetchResult
from casstore.fetch.http import HttpOptions, make_async_client, make_async_pool
from casstore.fetch.redact import redact_url
from casstore.objects import ObjectStore

T = TypeVar("T")


def fetch_many(
    root: str | os.PathLike[str],
    targets: list[str],
    *,
    jobs: int = 4,
    opts: HttpOptions | None = None,
    env: Mapping[str, str] | None = None,
    dataset: str | None = None,
    expected_sha256: str | None = None,
    max_size: int | None = None,
    on_done: Callable[[FetchResult | FetchFailure], None] | None = None,
) -> list[FetchResult | FetchFailure]:
    """Fetch several targets, ``jobs`` at once, on one event loop and one connection pool.

    Bodies stream on the event loop; the store's blocking work (waiting for locks, the
    records, fsync, the ref moves) runs in worker threads, one store handle per target.
    One failure does not stop the others; it is returned as a :class:`FetchFailure`.
    Results come in the order of ``targets``; ``on_done`` sees each as it finishes.
    """
    return asyncio.run(
        _fetch_many(
            root,
            targets,
            max(1, jobs),
            opts or HttpOptions(),
            dict(env or {}),
            on_done,
            dataset=dataset,
            expected_sha256=expected_sha256,
            max_size=max_size,
        )
    )


async def _fetch_many(
    root: str | os.PathLike[str],
    targets: list[str],
    jobs: int,
    opts: HttpOptions,
    env: Mapping[str, str],
    on_done: Callable[[FetchResult | FetchFailure], None] | None,
    **kwargs: Any,
) -> list[FetchResult | FetchFailure]:
    # The loop's own pool: a job waiting on a source's fetch lock holds a thread, and the
    # default pool (cores + 4) could leave the other jobs none.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(jobs + 2, thread_name_prefix="cas-fetch")
    )
    limit = asyncio.Semaphore(jobs)
    plain = replace(opts, headers={})  # a target's headers go with its requests only
    async with make_async_pool(opts) as pool:

        async def one(target: str) -> FetchResult | FetchFailure:
            async with limit:
                result: FetchResult | FetchFailure
                try:
                    async with make_async_client(plain, pool) as http:
                        result = await _fetch_async(root, target, http, opts, env, **kwargs)
                except CasError as exc:
                    result = FetchFailure(target=redact_url(target), error=str(exc))
            if on_done is not None:
                on_done(result)
            return result

        # Every fetch runs to its end; an unexpected error (a full disk, a bug) is raised
        # only then, so it never cuts the others short mid-write.
        outcomes = await asyncio.gather(*(one(t) for t in targets), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return [o for o in outcomes if not isinstance(o, BaseException)]


async def _settle(
    fn: Callable[..., T],
    *args: Any,
    on_cancel: Callable[[], None] | None = None,
    on_late: Callable[[T], None] | None = None,
) -> T:
    """Run a blocking step in a worker thread, and let it finish even when cancelled.

    A thread cannot be stopped: if the caller moved on at a cancellation (Ctrl-C), the
    locks would be released and the store closed under a step still writing. So on
    cancellation this waits for the thread itself to end (``on_cancel`` may ask it to
    hurry: a lock wait gives up), hands a result that came too late to ``on_late`` (to
    close it), then passes the cancellation on. It watches the thread, not the task that
    wraps it, which a second Ctrl-C cancels while the thread runs on.
    """
    finished = threading.Event()
    late: list[T] = []

    def run() -> T:
        try:
            result = fn(*args)
            late.append(result)
            return result
        finally:
            finished.set()

    task = asyncio.ensure_future(asyncio.to_thread(run))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # never "unretrieved"
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if on_cancel is not None:
            on_cancel()
        while not finished.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)
        if late and on_late is not None:
            on_late(late[0])
        raise


async def _fetch_async(
    root: str | os.PathLike[str],
    target: str,
    http: httpx.AsyncClient,
    opts: HttpOptions,
    env: Mapping[str, str],
    *,
    dataset: str | None,
    expected_sha256: str | None,
    max_size: int | None,
) -> FetchResult:
    """:func:`fetch` for one target of :func:`fetch_many`."""
    from casstore.store import Store

    store = await _settle(Store.open, root, on_late=lambda s: s.close())
    try:
        job = await _settle(
            functools.partial(
                FetchJob,
                store,
                target,
                source_id=None,
                dataset=dataset,
                expected_sha256=expected_sha256,
                opts=opts,
                env=env,
            )
        )
        try:
            try:
                await _settle(job.acquire, on_cancel=job.abandon.set)
                result = await download_async(http, opts=opts, **job.download_args(max_size))
                fetched = await _settle(job.conclude, result)
            finally:
                await _settle(job.release)  # also after an acquire that ended late
            await _settle(job.emit, fetched, result)
            return fetched
        except CasError as exc:
            job.scrub(exc)
            raise
    finally:
        await _settle(store.close)


async def download_async(
    client: httpx.AsyncClient,
    url: str,
    objects: ObjectStore,
    *,
    opts: HttpOptions,
    validators: Validators | None = None,
    expected_sha256: str | None = None,
    max_size: int | None = None,
    redact: Callable[[str], str] = redact_url,
    headers: Mapping[str, str] | None = None,
    probe: bool = False,
) -> DownloadResult:
    """:func:`download` on an asyncio event loop, for many fetches at once on one client.

    The same rules and the same writer; the body comes in httpx's pieces. The closing
    work that blocks (the last writes, fsync and rename) runs in a worker thread, so the
    loop keeps serving the other downloads.
    """
    d = DownloadState(
        url,
        objects,
        opts=opts,
        validators=validators,
        expected_sha256=expected_sha256,
        max_size=max_size,
        progress=None,
        on_total=None,
        redact=redact,
        headers=headers,
    )
    if probe:
        with contextlib.suppress(httpx.HTTPError):
            d.probed(await client.head(url, headers=d.extra, extensions=d.guard))
    try:
        while True:
            try:
                async with client.stream(
                    "GET", url, headers=d.headers(), extensions=d.guard
                ) as resp:
                    done = d.start(resp)
                    if done is not None:
                        return done
                    assert d.body is not None
                    try:
                        async for chunk in resp.aiter_raw(opts.chunk_size):
                            d.body.feed(chunk)
                            d.check_received()
                    except IntegrityError as exc:
                        raise d.stream_failed(exc) from exc
                break
            except (RetryableStatus, httpx.HTTPError) as exc:
                await asyncio.sleep(d.delay(exc))
        return await _settle(d.finish)
    except BaseException:
        d.abort()
        raise
