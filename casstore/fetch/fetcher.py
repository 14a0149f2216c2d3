"""``cas fetch``: bring a source's bytes into the store once, and never again when unchanged.

The order of a fetch:

1. Work out the URL and source id (a registered source, or a URL and the slug of its file
   name), with credentials added from the caller's headers and the environment variables
   the source names, never from the store.
2. Take the source's fetch lock: two processes fetching one source do one download between
   them (the second waits, then asks the server with the first one's validators).
3. Read the previous state from the store itself: ``sources/<id>`` and that object's newest
   download record for this source (ETag, Last-Modified, content SHA-256).
4. A conditional GET. ``304 Not Modified``: one request, no body, a ``fetch-unchanged`` event
   in the ref's reflog. Otherwise the body streams into the store (see ``download.py``).
5. Same bytes as before (a server without validators): reported unchanged, stored once.
   New bytes: a ``download`` record, the index, then the ref moves by compare-and-swap.
   New bytes whose decompressed content equals the previous one's are reported as
   ``content-unchanged``, so pipelines can skip recomputing.
6. With the locks released, every successful fetch (unchanged ones too) emits
   ``ingestion_volume`` and ``ingestion_runtime`` metadata records about the source (see
   :mod:`casstore.meta.emit`); if that fails, the error says the fetch itself succeeded.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from pydantic import BaseModel

from casstore import _fs
from casstore.errors import CasError, FetchError, IntegrityError, SourceNotFound, UsageError
from casstore.fetch.download import DownloadResult, Validators, download
from casstore.fetch.http import HttpOptions, guard_client, guarded, make_client, split_etag
from casstore.fetch.redact import DEFAULT_SECRET_PARAMS, REDACTED, redact_url, scrub
from casstore.fetch.sources import Source, check_url, slug_for
from casstore.ids import is_object_id
from casstore.meta.context import current_link
from casstore.records import DownloadRecord, iso_utc, utcnow
from casstore.refs import check_ref_name, whoami

if TYPE_CHECKING:
    from casstore.store import Store

FETCH_LOCK_TIMEOUT = 6 * 3600.0  # a fetch waits for another fetch of the same source

FetchStatus = Literal["downloaded", "content-unchanged", "unchanged"]


class FetchResult(BaseModel):
    """The outcome of one fetch."""

    source_id: str
    url: str
    status: FetchStatus
    object: str
    previous: str | None = None
    not_modified: bool = False
    record_id: str | None = None
    record: dict[str, Any] | None = None
    size: int = 0
    seconds: float = 0.0


class FetchFailure(BaseModel):
    """A fetch of a batch (``--all``, ``-i``) that failed, and why."""

    target: str
    error: str


class CheckResult(BaseModel):
    """``cas fetch --check``: would a fetch download something?"""

    source_id: str
    url: str
    status: Literal["changed", "unchanged", "unknown"]
    object: str | None
    detail: str


class _Target:
    """A resolved fetch target: where to ask, under which source id, with which secrets."""

    def __init__(
        self,
        url: str,
        source_id: str,
        dataset: str | None,
        headers: dict[str, str],
        secret_params: tuple[str, ...] = (),
    ):
        self.url = url
        self.source_id = source_id
        self.dataset = dataset
        self.headers = headers
        # Query parameters filled from the environment are secrets whatever their name.
        self.secret_params = DEFAULT_SECRET_PARAMS + secret_params
        self.secrets = [v for v in headers.values() if v]
        query = urlsplit(url).query
        self.secrets += [v for _, v in parse_qsl(query) if v]

    @property
    def shown(self) -> str:
        return self.redact(self.url)

    def redact(self, url: str) -> str:
        """A URL with this target's secrets taken out."""
        return redact_url(url, self.secret_params)


def resolve_target(
    store: Store,
    target: str,
    *,
    source_id: str | None,
    dataset: str | None,
    headers: Mapping[str, str],
    env: Mapping[str, str],
) -> _Target:
    """Turn a URL or a source id into a :class:`_Target`."""
    extra = dict(headers)
    if "://" in target:
        url = check_url(target)
        sid = source_id or _registered_id(store, url) or slug_for(url)
        source = store.sources.get(sid)
    else:
        source = store.sources.get(target)
        sid = target
        url = source.url if source is not None else _url_of_last_fetch(store, target)
        if url is None:
            raise SourceNotFound(
                f"no source {target!r} (register it with 'cas source add {target} URL',"
                " or fetch a URL)"
            )
        if source_id is not None and source_id != sid:
            raise UsageError("--source names the source already given")
    check_ref_name(sid, what="source id")
    if source is not None:
        url = _with_env_params(url, source, env)
        for header, var in source.headers_env.items():
            if header not in extra:
                extra[header] = _env(env, var, source)
        dataset = dataset or source.dataset
    secret = tuple(source.params_env) if source is not None else ()
    return _Target(url, sid, dataset, extra, secret)


def _url_of_last_fetch(store: Store, source_id: str) -> str | None:
    """A source fetched by URL but never registered is fetched again from that URL.

    Not when the recorded URL was redacted: its secret is not in the store, by design.
    """
    try:
        check_ref_name(source_id, what="source id")
    except CasError:
        return None
    prev = previous_download(store, store.refs.get(f"sources/{source_id}"), source_id)
    if prev is None or REDACTED in prev.url:
        return None
    return str(prev.url)


def _registered_id(store: Store, url: str) -> str | None:
    for sid, source in store.sources.load().items():
        if source.url == url:
            return sid
    return None


def _env(env: Mapping[str, str], var: str, source: Source) -> str:
    value = env.get(var)
    if value is None:
        raise UsageError(f"source {source.id!r} needs the environment variable {var}")
    return value


def _with_env_params(url: str, source: Source, env: Mapping[str, str]) -> str:
    if not source.params_env:
        return url
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    pairs += [(name, _env(env, var, source)) for name, var in source.params_env.items()]
    return urlunsplit(parts._replace(query=urlencode(pairs)))


def previous_download(store: Store, object_id: str | None, source_id: str) -> Any:
    """The newest download record of ``object_id`` made for ``source_id``, or None."""
    if object_id is None:
        return None
    try:
        records = store.records(object_id)
    except CasError:
        return None
    downloads = [r for _, r in records if r.type == "download" and r.source_id == source_id]
    return downloads[-1] if downloads else None


def _validators(prev: Any, target: _Target) -> Validators | None:
    if prev is None or prev.url != target.shown:
        return None  # a new URL for this source: its old validators mean nothing here
    return Validators(etag=prev.etag, weak_etag=prev.weak_etag, last_modified=prev.last_modified)


class FetchJob:
    """One fetch's work around its download: the target, the locks, the previous state,
    and what the outcome does to the store. Shared by :func:`fetch` (blocking) and
    :func:`casstore.fetch.many.fetch_many` (asyncio), which differ only in how the body
    is downloaded.
    """

    def __init__(
        self,
        store: Store,
        target: str,
        *,
        source_id: str | None,
        dataset: str | None,
        expected_sha256: str | None,
        opts: HttpOptions,
        env: Mapping[str, str],
    ) -> None:
        self.store = store
        self.t = t = resolve_target(
            store, target, source_id=source_id, dataset=dataset, headers=opts.headers, env=env
        )
        if expected_sha256 is not None:
            expected_sha256 = expected_sha256.lower()
            if not is_object_id(expected_sha256):
                raise UsageError(f"--sha256 wants 64 hex digits, got {expected_sha256!r}")
        self.expected = expected_sha256
        self.ref = f"sources/{t.source_id}"
        flat = t.source_id.replace("/", "%2F")
        if len(flat) > 200:  # too long for a file name: name the lock by a hash of the id
            flat = "h-" + hashlib.sha256(t.source_id.encode()).hexdigest()
        self.lock_path = store.root / "locks" / "fetch" / flat
        self.begun = time.monotonic()
        self.started = utcnow()
        self.prev_oid: str | None = None
        self.prev: Any = None
        self.validators: Validators | None = None
        self.probe = False
        self.abandon = threading.Event()  # set: stop waiting for the locks
        self._held = contextlib.ExitStack()

    def acquire(self) -> None:
        """Take the store lock and the source's fetch lock (waiting for another fetch of
        the same source), then read what the last fetch left."""
        store = self.store
        with contextlib.ExitStack() as stack:
            stack.enter_context(store.lock.hold(abandon=self.abandon))
            lock = _fs.LockFile(self.lock_path, timeout=FETCH_LOCK_TIMEOUT)
            lock.acquire(abandon=self.abandon)
            stack.callback(lock.release)
            stack.enter_context(store.writing())
            self.prev_oid = store.refs.get(self.ref)
            self.prev = previous_download(store, self.prev_oid, self.t.source_id)
            self.validators = _validators(self.prev, self.t)
            # A new URL for this source: a HEAD first. A known one goes straight to the
            # conditional GET, with no round trip wasted.
            self.probe = self.prev is None or self.prev.url != self.t.shown
            self._held = stack.pop_all()

    def download_args(self, max_size: int | None) -> dict[str, Any]:
        """What either download driver is given for this fetch (after :meth:`acquire`)."""
        return {
            "url": self.t.url,
            "objects": self.store.objects,
            "validators": self.validators,
            "expected_sha256": self.expected,
            "max_size": max_size,
            "redact": self.t.redact,
            "headers": self.t.headers,
            "probe": self.probe,
        }

    def release(self) -> None:
        """Let go of the locks :meth:`acquire` took."""
        self._held.close()

    def conclude(self, result: DownloadResult) -> FetchResult:
        """Record the outcome and move the ref (under the locks)."""
        return _conclude(
            self.store,
            self.t,
            self.ref,
            self.prev_oid,
            self.prev,
            result,
            time.monotonic() - self.begun,
            self.expected,
        )

    def emit(self, fetched: FetchResult, result: DownloadResult) -> None:
        """The fetch's metadata records (after the locks are released)."""
        _emit_fetch(
            self.store,
            self.t,
            fetched,
            result,
            self.prev,
            self.started,
            time.monotonic() - self.begun,
        )

    def scrub(self, exc: CasError) -> None:
        """Messages may quote a server's words: make sure no secret of ours rides along."""
        exc.args = (scrub(str(exc), self.t.secrets),)


def fetch(
    store: Store,
    target: str,
    *,
    source_id: str | None = None,
    dataset: str | None = None,
    expected_sha256: str | None = None,
    max_size: int | None = None,
    opts: HttpOptions | None = None,
    env: Mapping[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int | None], None] | None = None,
    client: httpx.Client | None = None,
) -> FetchResult:
    """Fetch one URL or registered source into ``store``; see the module docstring."""
    opts = opts or HttpOptions()
    job = FetchJob(
        store,
        target,
        source_id=source_id,
        dataset=dataset,
        expected_sha256=expected_sha256,
        opts=opts,
        env=env or {},
    )
    own = client is None
    http = make_client(replace(opts, headers={})) if client is None else guard_client(client)
    try:
        job.acquire()
        try:
            result = download(
                http,
                opts=opts,
                progress=progress,
                on_total=on_total,
                **job.download_args(max_size),
            )
            fetched = job.conclude(result)
        finally:
            job.release()
        job.emit(fetched, result)
        return fetched
    except CasError as exc:
        job.scrub(exc)
        raise
    finally:
        if own:
            http.close()


def _emit_fetch(
    store: Store,
    t: _Target,
    fetched: FetchResult,
    got: DownloadResult,
    prev: Any,
    started: datetime,
    seconds: float,
) -> None:
    """Emit the fetch's ``ingestion_volume`` and ``ingestion_runtime`` records.

    A 304 brought no body: its volume is the unchanged object's, from the last download
    record, so every run of a source shows up in a baseline.
    """
    from casstore.meta.emit import emit
    from casstore.meta.kinds import IngestionRuntime, IngestionVolume
    from casstore.meta.models import MetadataTarget

    known: Any = got.content if got.content is not None else prev
    size = prev.size if fetched.not_modified and prev is not None else fetched.size
    finished = utcnow()
    emit(
        store,
        f"fetch of sources/{t.source_id}",
        {
            "ingestion_volume": IngestionVolume(
                bytes=size,
                uncompressed_bytes=getattr(known, "uncompressed_size", None),
                records=getattr(known, "record_count", None),
                lines=getattr(known, "line_count", None),
                url=fetched.url,
                source_id=t.source_id,
                dataset=t.dataset,
                object_id=fetched.object,
                status=fetched.status,
                not_modified=fetched.not_modified,
            ),
            "ingestion_runtime": IngestionRuntime(
                duration_ms=round(seconds * 1000),
                retries=got.retries,
                resumes=got.resumes,
                started=iso_utc(started),
                finished=iso_utc(finished),
                status=fetched.status,
            ),
        },
        producer_id="cas.fetch",
        target=MetadataTarget(source_id=t.source_id),
        produced_at=finished,
    )


def _conclude(
    store: Store,
    t: _Target,
    ref: str,
    prev_oid: str | None,
    prev: Any,
    result: DownloadResult,
    seconds: float,
    expected: str | None = None,
) -> FetchResult:
    details = {"url": t.shown, "http_status": result.info.http_status}
    if result.not_modified:
        assert prev_oid is not None
        if expected is not None and prev_oid != expected:
            raise IntegrityError(
                f"{t.shown}: unchanged on the server, but its bytes ({prev_oid}) are not the"
                f" expected {expected}",
                what="sha256",
                expected=expected,
                actual=prev_oid,
            )
        store.refs.record_event(ref, "fetch-unchanged", message="304 not modified", details=details)
        return FetchResult(
            source_id=t.source_id,
            url=t.shown,
            status="unchanged",
            object=prev_oid,
            previous=prev_oid,
            not_modified=True,
            seconds=seconds,
        )
    stored = result.stored
    assert stored is not None and result.content is not None
    if stored.id == prev_oid and prev is not None and prev.url == t.shown:
        store.refs.record_event(ref, "fetch-unchanged", message="same bytes", details=details)
        return FetchResult(
            source_id=t.source_id,
            url=t.shown,
            status="unchanged",
            object=stored.id,
            previous=prev_oid,
            size=stored.size,
            seconds=seconds,
        )
    info, content = result.info, result.content
    user, host = whoami()
    record = DownloadRecord(
        object=stored.id,
        size=stored.size,
        blake3=stored.blake3,
        user=user,
        host=host,
        source_id=t.source_id,
        dataset=t.dataset,
        created=result.finished,
        url=info.url,
        final_url=info.final_url,
        http_status=info.http_status,
        http_version=info.http_version,
        etag=info.etag,
        weak_etag=info.weak_etag,
        last_modified=info.last_modified,
        content_type=info.content_type,
        content_encoding=info.content_encoding,
        content_length=info.content_length,
        content_md5=info.content_md5,
        content_sha256=content.content_sha256,
        uncompressed_size=content.uncompressed_size,
        format=content.format
        if content.content_format is None
        else f"{content.content_format}+{content.format}",
        line_count=content.line_count,
        record_count=content.record_count,
        integrity=tuple(result.integrity),
        started=result.started,
        finished=result.finished,
        retries=result.retries,
        resumes=result.resumes,
        pipeline=current_link(),
    )
    rid = store.record_object(stored, record)
    if stored.id == prev_oid:
        # The same bytes from a new URL: the record above keeps that URL's validators for
        # the next conditional GET; the ref does not move.
        store.refs.record_event(
            ref,
            "fetch-unchanged",
            message="same bytes, new URL",
            details={**details, "record": rid},
        )
        return FetchResult(
            source_id=t.source_id,
            url=t.shown,
            status="unchanged",
            object=stored.id,
            previous=prev_oid,
            record_id=rid,
            record=record.model_dump(mode="json", exclude_none=True),
            size=stored.size,
            seconds=seconds,
        )
    same_content = (
        prev is not None
        and content.content_sha256 is not None
        and prev.content_sha256 == content.content_sha256
    )
    store.refs.set(
        ref,
        stored.id,
        expected=prev_oid,
        action="fetch",
        message="content unchanged" if same_content else "fetch",
        details={**details, "record": rid},
    )
    store.index.set_ref(ref, stored.id)
    return FetchResult(
        source_id=t.source_id,
        url=t.shown,
        status="content-unchanged" if same_content else "downloaded",
        object=stored.id,
        previous=prev_oid,
        record_id=rid,
        record=record.model_dump(mode="json", exclude_none=True),
        size=stored.size,
        seconds=seconds,
    )


def check(
    store: Store,
    target: str,
    *,
    opts: HttpOptions | None = None,
    env: Mapping[str, str] | None = None,
) -> CheckResult:
    """Ask the server whether a fetch would bring new bytes, without reading any body."""
    opts = opts or HttpOptions()
    t = resolve_target(
        store, target, source_id=None, dataset=None, headers=opts.headers, env=env or {}
    )
    prev_oid = store.refs.get(f"sources/{t.source_id}")
    prev = previous_download(store, prev_oid, t.source_id)
    validators = _validators(prev, t)

    def result(status: Literal["changed", "unchanged", "unknown"], detail: str) -> CheckResult:
        return CheckResult(
            source_id=t.source_id,
            url=t.shown,
            status=status,
            object=prev_oid,
            detail=scrub(detail, t.secrets),
        )

    if prev_oid is None:
        return result("changed", "never fetched")
    if not validators:
        return result("unknown", "the last fetch got no ETag or Last-Modified to compare")
    with make_client(replace(opts, headers={})) as http:  # t.headers has them, guarded
        headers = {**t.headers, **validators.headers()}
        guard = guarded(t.url, t.headers)
        try:
            resp = http.head(t.url, headers=headers, extensions=guard)
            if resp.status_code in (405, 501):
                with http.stream("GET", t.url, headers=headers, extensions=guard) as streamed:
                    resp = streamed  # headers only: the body is never read
        except httpx.HTTPError as exc:
            raise FetchError(f"{t.shown}: {type(exc).__name__}", url=t.shown) from exc
    if resp.status_code == 304:
        return result("unchanged", "304 not modified")
    if resp.status_code >= 400:
        raise FetchError(
            f"{t.shown}: HTTP {resp.status_code}", url=t.shown, status=resp.status_code
        )
    strong, weak = split_etag(resp.headers.get("etag"))
    if validators.etag and strong:
        same = strong == validators.etag
        return result("unchanged" if same else "changed", f"ETag {strong}")
    if validators.weak_etag and weak:
        same = weak == validators.weak_etag
        return result("unchanged" if same else "changed", f"weak ETag {weak}")
    lm = resp.headers.get("last-modified")
    if validators.last_modified and lm:
        same = lm == validators.last_modified
        return result("unchanged" if same else "changed", f"Last-Modified {lm}")
    return result("unknown", "the server sent no validator to compare")
