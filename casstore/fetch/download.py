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
import re
import shutil
import socket
import ssl
import time
from collections.abc import Callable
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


class _RetryableStatus(Exception):
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
) -> DownloadResult:
    """Fetch ``url`` into ``objects``; see the module docstring for the rules.

    Raises:
        FetchError: HTTP errors, retries exhausted, size limits, redirect loops.
        IntegrityError: the body failed a tier (content-length, content-md5, stream, sha256).
    """
    started = datetime.now(UTC)
    shown = redact(url)
    body: _Body | None = None
    info: ResponseInfo | None = None
    resume_with: str | None = None  # strong ETag, else Last-Modified
    total: int | None = None
    retries = resumes = 0
    try:
        while True:
            headers: dict[str, str] = {}
            resuming = body is not None and body.received > 0 and resume_with is not None
            if body is None and validators:
                headers.update(validators.headers())
            if resuming:
                assert body is not None and resume_with is not None
                headers["Range"] = f"bytes={body.received}-"
                headers["If-Range"] = resume_with
            try:
                with client.stream("GET", url, headers=headers) as resp:
                    status = resp.status_code
                    if status == 304 and body is None and validators:
                        return DownloadResult(
                            info=ResponseInfo.of(url, resp, redact),
                            not_modified=True,
                            started=started,
                            finished=datetime.now(UTC),
                            retries=retries,
                        )
                    if status in RETRY_STATUS:
                        raise _RetryableStatus(status, retry_after(resp))
                    if resuming and status == 206:
                        assert body is not None
                        _check_range(resp, body.received, shown)
                        resumes += 1
                    elif status == 200:
                        info = ResponseInfo.of(url, resp, redact)
                        total = info.content_length
                        _check_size(info, max_size, objects, shown)
                        if body is not None:
                            # Range ignored, or the resource changed: start over, and let
                            # this response decide (Content-MD5 or not) what to compute.
                            body.writer.abort()
                        body = _Body(objects, bool(info.content_md5), progress, total)
                        resume_with = info.etag or info.last_modified
                        if on_total is not None:
                            on_total(total)
                    elif resuming and status in (412, 416):
                        assert body is not None
                        body.restart()  # cannot continue: start over on the next round
                        raise _RetryableStatus(status, 0.0)
                    else:
                        raise FetchError(
                            f"{shown}: HTTP {status} {resp.reason_phrase}".rstrip(),
                            url=shown,
                            status=status,
                        )
                    assert body is not None
                    try:
                        _receive(resp, body, opts, max_size, shown)
                    except IntegrityError as exc:  # the format checker, while streaming
                        raise IntegrityError(
                            f"{shown}: stream check failed: {exc}; nothing stored",
                            what="stream",
                        ) from exc
                break
            except httpx.TooManyRedirects as exc:
                raise FetchError(
                    f"{shown}: redirect loop or more than 10 redirects", url=shown
                ) from exc
            except _RetryableStatus as exc:
                if retries >= opts.retries:
                    raise FetchError(
                        f"{shown}: HTTP {exc.status} after {retries} retries",
                        url=shown,
                        status=exc.status,
                    ) from None
                sleep(backoff_delay(retries, opts.backoff, exc.hint))
                retries += 1
            except httpx.HTTPError as exc:
                if not is_retryable_error(exc) or retries >= opts.retries:
                    raise FetchError(
                        f"{shown}: {_describe(exc)} (after {retries} retries)", url=shown
                    ) from exc
                if body is not None and body.received and resume_with is None:
                    body.restart()  # no strong validator: resuming could splice two versions
                sleep(backoff_delay(retries, opts.backoff))
                retries += 1
        assert body is not None and info is not None
        return _finish(body, info, total, expected_sha256, shown, started, retries, resumes)
    except BaseException:
        if body is not None:
            body.writer.abort()
        raise


def _receive(
    resp: httpx.Response, body: _Body, opts: HttpOptions, max_size: int | None, shown: str
) -> None:
    """Read the response's body into ``body``.

    The pieces httpx yields cost Python work each (about 1 s of CPU per GiB here, as much
    as SHA-256). So for an HTTP/1.1 body of known length, after the first piece (which
    takes whatever the parser holds past the headers), the rest is read from the socket
    straight into the object writer's buffers. With ``opts.chunk_size`` set, httpx holds
    bytes back to re-chunk them, so that path is not taken.
    """
    sock = _plain_socket(resp) if opts.chunk_size is None else None
    length = int(resp.headers["content-length"]) if sock is not None else 0
    got = 0
    # Held in a name: when the iterator is dropped, httpx closes the response and socket.
    pieces = resp.iter_raw(opts.chunk_size)
    for chunk in pieces:
        body.feed(chunk)
        got += len(chunk)
        if max_size is not None and body.received > max_size:
            raise FetchError(f"{shown}: body exceeds --max-size ({max_size} bytes)", url=shown)
        if sock is not None and got < length:
            break  # the rest from the socket (a body already whole ends normally, reusable)
    if sock is None or got >= length:
        return
    if max_size is not None and body.received + (length - got) > max_size:
        raise FetchError(f"{shown}: body exceeds --max-size ({max_size} bytes)", url=shown)
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
