"""The HTTP side of fetching: the client, what is retried, and how long to wait.

HTTP/1.1 by default: measured here, httpx over HTTP/2 moves a 1 GiB body about 2.8× slower
than over HTTP/1.1 on loopback; ``http2=True`` opts in (many small files on one host).
Bytes are always asked for and kept exactly as served: ``Accept-Encoding: identity`` and the
raw stream, never a transfer-decoded body.
"""

from __future__ import annotations

import email.utils
import functools
import netrc
import random
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from casstore._version import __version__
from casstore.errors import UsageError

USER_AGENT = f"casstore/{__version__}"
MAX_REDIRECTS = 10
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
MAX_RETRY_AFTER = 300.0


@dataclass
class HttpOptions:
    """How to talk to servers."""

    timeout: float = 30.0  # seconds without a byte (connect, read) before giving up
    retries: int = 5
    backoff: float = 0.5  # first retry delay; doubles, with jitter
    http2: bool = False
    netrc: str | None = None  # path of a netrc file for credentials
    headers: dict[str, str] = field(default_factory=dict)  # extra request headers
    # None: pieces as the socket delivers them (up to 64 KiB), with no re-chunking copy;
    # the object writer gathers them into 1 MiB buffers anyway.
    chunk_size: int | None = None


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context per process: building one costs ~20 ms (it loads the CA bundle)."""
    return ssl.create_default_context()


_GUARD = "casstore.secret_headers"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def guarded(url: str, headers: Mapping[str, str]) -> dict[str, Any]:
    """Request extensions that keep ``headers`` (a source's secrets) to ``url``'s origin.

    httpx drops only ``Authorization`` when a redirect leads to another host; an
    ``X-Api-Key`` would follow it there. Every client here strips the headers named this
    way from any request of the redirect chain that leaves the origin (an upgrade from
    http to https on the same host excepted, as httpx does for ``Authorization``).
    """
    return {_GUARD: (_origin(httpx.URL(url)), tuple(headers))}


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


def _strip_foreign(request: httpx.Request) -> None:
    guard = request.extensions.get(_GUARD)
    if guard is None:
        return
    (scheme, host, port), names = guard
    here = _origin(request.url)
    upgrade = (scheme, port, here) == ("http", 80, ("https", host, 443))
    if here != (scheme, host, port) and not upgrade:
        for name in names:
            request.headers.pop(name, None)


async def _strip_foreign_async(request: httpx.Request) -> None:
    _strip_foreign(request)


def _client_settings(opts: HttpOptions) -> dict[str, Any]:
    """What every client is built with, blocking or asyncio."""
    auth = None
    if opts.netrc and Path(opts.netrc).is_file():
        try:
            auth = httpx.NetRCAuth(opts.netrc)
        except (netrc.NetrcParseError, OSError) as exc:
            raise UsageError(f"cannot read netrc file {opts.netrc}: {exc}") from exc
    return {
        "http1": True,
        "http2": opts.http2,
        "follow_redirects": True,
        "max_redirects": MAX_REDIRECTS,
        "timeout": httpx.Timeout(opts.timeout, connect=min(opts.timeout, 30.0)),
        "headers": {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **opts.headers},
        "auth": auth,
        "verify": _tls(),
        "trust_env": False,  # the library reads no environment; the CLI passes what it needs
    }


def make_client(opts: HttpOptions) -> httpx.Client:
    """A client that follows up to 10 redirects and never decodes bodies."""
    hooks = {"request": [_strip_foreign]}
    return httpx.Client(**_client_settings(opts), event_hooks=hooks)


def guard_client(client: httpx.Client) -> httpx.Client:
    """Give a caller's own client the hook that keeps extra headers to their origin."""
    hooks = client.event_hooks["request"]
    if _strip_foreign not in hooks:
        hooks.append(_strip_foreign)
    return client


def make_async_pool(opts: HttpOptions) -> httpx.AsyncHTTPTransport:
    """The connection pool that the clients of one ``cas fetch --all`` share."""
    return httpx.AsyncHTTPTransport(verify=_tls(), http1=True, http2=opts.http2)


class _Borrowed(httpx.AsyncBaseTransport):
    """A shared pool lent to one client: closing the client leaves the pool open."""

    def __init__(self, pool: httpx.AsyncHTTPTransport) -> None:
        self._pool = pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._pool.handle_async_request(request)

    async def aclose(self) -> None:
        pass  # the pool's owner closes it


def make_async_client(opts: HttpOptions, pool: httpx.AsyncHTTPTransport) -> httpx.AsyncClient:
    """:func:`make_client` for asyncio, for one fetch of ``cas fetch --all``.

    Each fetch has a client of its own over the shared ``pool``: the connections are
    shared, but not the cookies. A cookie one source's server sets (a session opened with
    that source's token) stays with that source's redirects and retries, and never goes
    with another source's requests to the same host.
    """
    hooks = {"request": [_strip_foreign_async]}
    return httpx.AsyncClient(**_client_settings(opts), transport=_Borrowed(pool), event_hooks=hooks)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds a server asked us to wait (Retry-After as seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(when.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER)


def backoff_delay(attempt: int, base: float, hint: float | None = None) -> float:
    """Exponential backoff with full jitter; a server's Retry-After wins when given."""
    if hint is not None:
        return hint
    return random.uniform(0.5, 1.5) * min(base * (2**attempt), 60.0)


def is_retryable_error(exc: BaseException) -> bool:
    """Timeouts and connection failures are retried; protocol misuse is not."""
    return isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError))


def split_etag(value: str | None) -> tuple[str | None, str | None]:
    """An ETag header as ``(strong, weak)``: exactly one is set when the header is."""
    if not value:
        return None, None
    value = value.strip()
    if value.startswith(("W/", "w/")):
        return None, value
    return value, None
