"""One download: a streaming GET, resumed and retried, checked tier by tier, then placed.

The body is read raw (exactly as served), pushed through an :class:`ObjectWriter` (SHA-256,
BLAKE3 and, when the server sent Content-MD5, MD5 in the same pass, written to ``tmp/``) and
through the format's checker (see :mod:`casstore.content`). A dropped connection continues
with ``Range`` and ``If-Range`` from the bytes already received, so nothing is hashed twice;
a server that answers the resume with the whole body (or says the resource changed) makes
the download start over. Only when every integrity tier passes is the object placed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import shutil
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from casstore.content import SNIFF_BYTES, ContentResult, checker_for
from casstore.errors import FetchError, IntegrityError
from casstore.fetch.http import (
    RETRY_STATUS,
    HttpOptions,
    backoff_delay,
    guarded,
    is_retryable_error,
    retry_after,
    split_etag,
)
from casstore.fetch.redact import redact_url
from casstore.objects import ObjectStore, StoredObject
from casstore.records import IntegrityCheck

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


@dataclass
class Validators:
    """What the last fetch of a source learned, for a conditional GET."""

    etag: str | None = None
    weak_etag: str | None = None
    last_modified: str | None = None

    def headers(self) -> dict[str, str]:
        """``If-None-Match`` / ``If-Modified-Since`` for these validators."""
        out = {}
        tag = self.etag or self.weak_etag  # If-None-Match uses weak comparison (RFC 9110)
        if tag:
            out["If-None-Match"] = tag
        if self.last_modified:
            out["If-Modified-Since"] = self.last_modified
        return out

    def __bool__(self) -> bool:
        return bool(self.etag or self.weak_etag or self.last_modified)


@dataclass
class ResponseInfo:
    """What the server said about the body (from the response that started it)."""

    url: str
    final_url: str
    http_status: int
    http_version: str
    etag: str | None = None
    weak_etag: str | None = None
    last_modified: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    content_length: int | None = None
    content_md5: str | None = None

    @classmethod
    def of(
        cls, url: str, response: httpx.Response, redact: Callable[[str], str] = redact_url
    ) -> ResponseInfo:
        h = response.headers
        strong, weak = split_etag(h.get("etag"))
        length = h.get("content-length")
        return cls(
            url=redact(url),
            final_url=redact(str(response.url)),
            http_status=response.status_code,
            http_version=response.http_version,
            etag=strong,
            weak_etag=weak,
            last_modified=h.get("last-modified"),
            content_type=h.get("content-type"),
            content_encoding=h.get("content-encoding"),
            content_length=int(length) if length and length.isdigit() else None,
            content_md5=h.get("content-md5"),
        )


@dataclass
class DownloadResult:
    """A finished download: either "not modified" (no body) or a placed object."""

    info: ResponseInfo
    not_modified: bool = False
    stored: StoredObject | None = None
    content: ContentResult | None = None
    integrity: list[IntegrityCheck] = field(default_factory=list)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished: datetime = field(default_factory=lambda: datetime.now(UTC))
    retries: int = 0
    resumes: int = 0


class RetryableStatus(Exception):
    def __init__(self, status: int, hint: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.hint = hint


class _Content:
    """The format checker, fed whole buffers in the writer's observer thread."""

    def __init__(self) -> None:
        self.checker: Any = None

    def __call__(self, chunk: memoryview) -> None:
        if self.checker is None:
            self.checker = checker_for(bytes(chunk[:SNIFF_BYTES]))
        self.checker.update(chunk)

    def result(self) -> ContentResult:
        if self.checker is None:  # an empty body
            self.checker = checker_for(b"")
        return self.checker.finish()


class _Body:
    """The state of a body being received, across resumes."""

    def __init__(
        self,
        objects: ObjectStore,
        md5: bool,
        progress: Callable[[int], None] | None,
        size_hint: int | None = None,
    ):
        self.content = _Content()
        self.writer = objects.writer(
            md5=md5, progress=progress, observer=self._observe, size_hint=size_hint
        )
        self.received = 0

    def _observe(self, chunk: memoryview) -> None:
        self.content(chunk)

    def feed(self, chunk: bytes) -> None:
        self.writer.write(chunk)
        self.received += len(chunk)

    def read_from(self, reader: _SocketReader, n: int) -> int:
        """Up to ``n`` bytes straight from ``reader``; counted even when it then fails."""
        before = reader.total
        try:
            return self.writer.read_from(reader, n)
        finally:
            self.received += reader.total - before

    def restart(self) -> None:
        self.writer.restart()
        self.content = _Content()
        self.received = 0


class DownloadState:
    """One download's protocol state across its requests: what to ask next, what each
    answer means, when to retry. It does no I/O of its own, so the blocking
    (:func:`download`) and the asyncio (:func:`casstore.fetch.many.download_async`) drivers
    share every rule.
    """

    def __init__(
        self,
        url: str,
        objects: ObjectStore,
        *,
        opts: HttpOptions,
        validators: Validators | None,
        expected_sha256: str | None,
        max_size: int | None,
        progress: Callable[[int], None] | None,
        on_total: Callable[[int | None], None] | None,
        redact: Callable[[str], str],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.objects = objects
        self.opts = opts
        self.validators = validators
        self.expected_sha256 = expected_sha256
        self.max_size = max_size
        self.progress = progress
        self.on_total = on_total
        self.redact = redact
        self.extra = dict(headers or {})
        self.guard = guarded(url, self.extra)  # the extra headers never leave the origin
        self.started = datetime.now(UTC)
        self.shown = redact(url)
        self.body: _Body | None = None
        self.info: ResponseInfo | None = None
        self.resume_with: str | None = None  # strong ETag, else Last-Modified
        self.total: int | None = None
        self.retries = self.resumes = 0
        self.resuming = False
        self.ranges = True  # False once the server said "Accept-Ranges: none"

    def headers(self) -> dict[str, str]:
        """The headers of the next request: conditional at first, a resume after a cut."""
        headers = dict(self.extra)
        body = self.body
        self.resuming = (
            body is not None and body.received > 0 and self.resume_with is not None and self.ranges
        )
        if body is None and self.validators:
            headers.update(self.validators.headers())
        if self.resuming:
            assert body is not None and self.resume_with is not None
            headers["Range"] = f"bytes={body.received}-"
            headers["If-Range"] = self.resume_with
        return headers

    def probed(self, resp: httpx.Response) -> None:
        """Learn from a HEAD before the first GET of a new URL.

        An announced size is held to ``--max-size`` and the free disk before any body
        flows; ``Accept-Ranges: none`` makes a cut start over instead of asking for a
        range. A HEAD that fails decides nothing: some servers refuse HEAD (signed URLs
        often do), and the GET that follows has the last word.
        """
        if resp.status_code >= 300:
            return
        _check_size(
            ResponseInfo.of(self.url, resp, self.redact), self.max_size, self.objects, self.shown
        )
        if resp.headers.get("accept-ranges", "").strip().lower() == "none":
            self.ranges = False

    def start(self, resp: httpx.Response) -> DownloadResult | None:
        """Judge a response's status line and headers.

        Returns the result when there is no body to read (304); None when the body is to
        be received into :attr:`body`. Raises for a status to retry or to fail on.
        """
        status = resp.status_code
        if status == 304 and self.body is None and self.validators:
            return DownloadResult(
                info=ResponseInfo.of(self.url, resp, self.redact),
                not_modified=True,
                started=self.started,
                finished=datetime.now(UTC),
                retries=self.retries,
            )
        if status in RETRY_STATUS:
            raise RetryableStatus(status, retry_after(resp))
        if self.resuming and status == 206:
            assert self.body is not None
            _check_range(resp, self.body.received, self.shown)
            self.resumes += 1
        elif status == 200:
            self.info = info = ResponseInfo.of(self.url, resp, self.redact)
            self.total = info.content_length
            _check_size(info, self.max_size, self.objects, self.shown)
            if self.body is not None:
                # Range ignored, or the resource changed: start over, and let this
                # response decide (Content-MD5 or not) what to compute.
                self.body.writer.abort()
            self.body = _Body(self.objects, bool(info.content_md5), self.progress, self.total)
            self.resume_with = info.etag or info.last_modified
            if self.on_total is not None:
                self.on_total(self.total)
        elif self.resuming and status in (412, 416):
            assert self.body is not None
            self.body.restart()  # cannot continue: start over on the next round
            raise RetryableStatus(status, 0.0)
        else:
            raise FetchError(
                f"{self.shown}: HTTP {status} {resp.reason_phrase}".rstrip(),
                url=self.shown,
                status=status,
            )
        return None

    def stream_failed(self, exc: IntegrityError) -> IntegrityError:
        """The error for a body the format checker found corrupt while it streamed."""
        return IntegrityError(
            f"{self.shown}: stream check failed: {exc}; nothing stored", what="stream"
        )

    def check_received(self, coming: int = 0) -> None:
        """``--max-size`` against the bytes received so far, plus ``coming`` announced."""
        assert self.body is not None
        if self.max_size is not None and self.body.received + coming > self.max_size:
            raise FetchError(
                f"{self.shown}: body exceeds --max-size ({self.max_size} bytes)", url=self.shown
            )

    def delay(self, exc: Exception) -> float:
        """After a failed request: the seconds to wait before the next one, or the error
        to give up with (retries exhausted, or a failure no retry can mend)."""
        shown = self.shown
        if isinstance(exc, httpx.TooManyRedirects):
            raise FetchError(
                f"{shown}: redirect loop or more than 10 redirects", url=shown
            ) from exc
        if isinstance(exc, RetryableStatus):
            if self.retries >= self.opts.retries:
                raise FetchError(
                    f"{shown}: HTTP {exc.status} after {self.retries} retries",
                    url=shown,
                    status=exc.status,
                ) from None
            wait = backoff_delay(self.retries, self.opts.backoff, exc.hint)
        else:
            assert isinstance(exc, httpx.HTTPError)
            if not is_retryable_error(exc) or self.retries >= self.opts.retries:
                raise FetchError(
                    f"{shown}: {_describe(exc)} (after {self.retries} retries)", url=shown
                ) from exc
            body = self.body
            if body is not None and body.received and not (self.resume_with and self.ranges):
                # no strong validator (resuming could splice two versions), or no Range
                body.restart()
            wait = backoff_delay(self.retries, self.opts.backoff)
        self.retries += 1
        return wait

    def finish(self) -> DownloadResult:
        """Every integrity tier, then the object is placed (durably)."""
        assert self.body is not None and self.info is not None
        return _finish(
            self.body,
            self.info,
            self.total,
            self.expected_sha256,
            self.shown,
            self.started,
            self.retries,
            self.resumes,
        )

    def abort(self) -> None:
        """Leave nothing behind."""
        if self.body is not None:
            self.body.writer.abort()


def download(
    client: httpx.Client,
    url: str,
    objects: ObjectStore,
    *,
    opts: HttpOptions,
    validators: Validators | None = None,
    expected_sha256: str | None = None,
    max_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int | None], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    redact: Callable[[str], str] = redact_url,
    headers: Mapping[str, str] | None = None,
    probe: bool = False,
) -> DownloadResult:
    """Fetch ``url`` into ``objects``; see the module docstring for the rules.

    ``headers`` are added to every request (a source's credentials), so one client can
    serve many sources. ``probe``: send a HEAD first (a new URL), see :meth:`DownloadState.probed`.

    Raises:
        FetchError: HTTP errors, retries exhausted, size limits, redirect loops.
        IntegrityError: the body failed a tier (content-length, content-md5, stream, sha256).
    """
    d = DownloadState(
        url,
        objects,
        opts=opts,
        validators=validators,
        expected_sha256=expected_sha256,
        max_size=max_size,
        progress=progress,
        on_total=on_total,
        redact=redact,
        headers=headers,
    )
    if probe:
        with contextlib.suppress(httpx.HTTPError):
            d.probed(client.head(url, headers=d.extra, extensions=d.guard))
    try:
        while True:
            try:
                with client.stream("GET", url, headers=d.headers(), extensions=d.guard) as resp:
                    done = d.start(resp)
                    if done is not None:
                        return done
                    try:
                        _receive(resp, d, opts)
                    except IntegrityError as exc:
                        raise d.stream_failed(exc) from exc
                break
            except (RetryableStatus, httpx.HTTPError) as exc:
                sleep(d.delay(exc))
        return d.finish()
    except BaseException:
        d.abort()
        raise


def _receive(resp: httpx.Response, d: DownloadState, opts: HttpOptions) -> None:
    """Read the response's body into ``d.body``.

    The pieces httpx yields cost Python work each (about 1 s of CPU per GiB here, as much
    as SHA-256). So for an HTTP/1.1 body of known length, after the first piece (which
    takes whatever the parser holds past the headers), the rest is read from the socket
    straight into the object writer's buffers. With ``opts.chunk_size`` set, httpx holds
    bytes back to re-chunk them, so that path is not taken.
    """
    body = d.body
    assert body is not None
    sock = _plain_socket(resp) if opts.chunk_size is None else None
    length = int(resp.headers["content-length"]) if sock is not None else 0
    got = 0
    # Held in a name: when the iterator is dropped, httpx closes the response and socket.
    pieces = resp.iter_raw(opts.chunk_size)
    for chunk in pieces:
        body.feed(chunk)
        got += len(chunk)
        d.check_received()
        if sock is not None and got < length:
            break  # the rest from the socket (a body already whole ends normally, reusable)
    if sock is None or got >= length:
        return
    d.check_received(coming=length - got)
    n = body.read_from(_SocketReader(sock, opts.timeout, resp.request), length - got)
    if got + n < length:
        raise httpx.RemoteProtocolError(
            f"peer closed connection without sending complete message body"
            f" (received {got + n} bytes, expected {length})",
            request=resp.request,
        )


class _SocketReader:
    """``recv_into`` with the socket's failures as httpx's network errors (retried), and a
    count of the bytes it delivered (bytes read before an error count too).

    Only the socket's own errors are mapped: a failing write or hash in the object writer
    must not pass for a network error and be resumed.
    """

    def __init__(self, sock: socket.socket, timeout: float, request: httpx.Request) -> None:
        self.sock = sock
        self.request = request
        self.total = 0
        sock.settimeout(timeout)

    def __call__(self, view: memoryview) -> int:
        try:
            k = self.sock.recv_into(view)
            self.total += k
            return k
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"read timed out: {exc}", request=self.request) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=self.request) from exc


def _plain_socket(resp: httpx.Response) -> socket.socket | None:
    """The connection's socket when the rest of the body can be read from it as is.

    That is: HTTP/1.1, a Content-Length and no Transfer-Encoding (so the bytes on the wire
    after the headers are exactly the body), and a socket that yields plain bytes: a TCP
    socket, or one that decrypts TLS itself. (Tunnelled TLS would hand back ciphertext; it
    only arises with an HTTPS proxy, which the client never uses.) Reading past the parser
    leaves the connection unusable for another request, so httpx closes it afterwards.
    """
    h = resp.headers
    if resp.http_version != "HTTP/1.1" or "transfer-encoding" in h:
        return None
    if not h.get("content-length", "").isdigit():
        return None
    stream = resp.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if not isinstance(sock, socket.socket):
        return None
    if resp.url.scheme == "https" and not isinstance(sock, ssl.SSLSocket):
        return None
    return sock


def _check_range(resp: httpx.Response, start: int, shown: str) -> None:
    match = _CONTENT_RANGE.match(resp.headers.get("content-range", ""))
    if not match or int(match.group(1)) != start:
        raise FetchError(
            f"{shown}: resume asked for byte {start}, server sent"
            f" {resp.headers.get('content-range')!r}",
            url=shown,
        )


def _check_size(info: ResponseInfo, max_size: int | None, objects: ObjectStore, shown: str) -> None:
    length = info.content_length
    if length is None:
        return
    if max_size is not None and length > max_size:
        raise FetchError(
            f"{shown}: Content-Length {length} exceeds --max-size ({max_size} bytes)", url=shown
        )
    free = shutil.disk_usage(objects.tmp).free
    if length > free:
        raise FetchError(
            f"{shown}: {length} bytes announced, only {free} free on the store's disk", url=shown
        )


def _finish(
    body: _Body,
    info: ResponseInfo,
    total: int | None,
    expected_sha256: str | None,
    shown: str,
    started: datetime,
    retries: int,
    resumes: int,
) -> DownloadResult:
    try:
        digests = body.writer.finish()
    except IntegrityError as exc:  # the checker found the stream corrupt while it streamed
        raise IntegrityError(
            f"{shown}: stream check failed: {exc}; nothing stored", what="stream"
        ) from exc
    checks: list[IntegrityCheck] = []

    def fail(tier: str, message: str, expected: str = "", actual: str = "") -> None:
        raise IntegrityError(
            f"{shown}: {tier} check failed: {message}; nothing stored",
            what=tier,
            expected=expected,
            actual=actual,
        )

    if total is not None:
        if digests.size != total:
            fail(
                "content-length",
                f"expected {total} bytes, received {digests.size}",
                str(total),
                str(digests.size),
            )
        checks.append(
            IntegrityCheck(tier="content-length", outcome="passed", detail=f"{total} bytes")
        )
    else:
        checks.append(
            IntegrityCheck(tier="content-length", outcome="skipped", detail="no Content-Length")
        )
    if info.content_md5:
        try:
            want = base64.b64decode(info.content_md5, validate=True).hex()
        except (binascii.Error, ValueError):
            want = info.content_md5.lower()
        if digests.md5 != want:
            fail(
                "content-md5",
                f"server said {want}, received bytes hash to {digests.md5}",
                want,
                digests.md5 or "",
            )
        checks.append(IntegrityCheck(tier="content-md5", outcome="passed"))
    else:
        checks.append(
            IntegrityCheck(tier="content-md5", outcome="skipped", detail="no Content-MD5")
        )
    try:
        content = body.content.result()
    except IntegrityError as exc:
        fail("stream", str(exc))
        raise  # unreachable: fail() raised
    if content.content_sha256 is not None:
        checks.append(
            IntegrityCheck(
                tier="stream", outcome="passed", detail=f"{content.format} end marker and checksum"
            )
        )
    else:
        checks.append(
            IntegrityCheck(
                tier="stream", outcome="skipped", detail=f"{content.format}: no stream checksum"
            )
        )
    if expected_sha256 is not None:
        if digests.sha256 != expected_sha256:
            fail(
                "sha256",
                f"expected {expected_sha256}, received {digests.sha256}",
                expected_sha256,
                digests.sha256,
            )
        checks.append(IntegrityCheck(tier="sha256", outcome="passed"))
    else:
        checks.append(IntegrityCheck(tier="sha256", outcome="skipped", detail="no --sha256 given"))
    stored = body.writer.place(durable=True)
    return DownloadResult(
        info=info,
        stored=stored,
        content=content,
        integrity=checks,
        started=started,
        finished=datetime.now(UTC),
        retries=retries,
        resumes=resumes,
    )


def _describe(exc: httpx.HTTPError) -> str:
    """A network error in words; httpx's messages name no URL, so nothing secret leaks."""
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the server broke off the response: {exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
