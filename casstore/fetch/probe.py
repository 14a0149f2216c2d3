"""``cas probe``: what a server says about a URL before anything is downloaded.

A HEAD (falling back to a GET whose body is never read when HEAD is refused), then a
``Range: bytes=0-1023`` GET to sniff the format from the first KiB. A server that ignores
Range answers 200 with the whole body: only the first KiB is read, then the connection is
closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import httpx
from pydantic import BaseModel

from casstore.content import SNIFF_BYTES, CompressedChecker, sniff, sniff_text
from casstore.errors import FetchError, IntegrityError
from casstore.fetch.http import HttpOptions, guarded, make_client, split_etag
from casstore.fetch.redact import redact_url
from casstore.fetch.sources import check_url


class ProbeResult(BaseModel):
    """The server's answer about a URL."""

    url: str
    final_url: str
    http_status: int
    http_version: str
    method: str  # HEAD, or GET when HEAD was refused
    size: int | None
    etag: str | None
    weak_etag: str | None
    last_modified: str | None
    content_type: str | None
    content_encoding: str | None
    accept_ranges: bool | None  # None: the server did not say and the Range probe failed
    format: str | None
    content_format: str | None


def probe(
    url: str, *, opts: HttpOptions | None = None, headers: Mapping[str, str] | None = None
) -> ProbeResult:
    """Probe ``url``; see the module docstring."""
    check_url(url)
    opts = opts or HttpOptions()
    shown = redact_url(url)
    extra = {**opts.headers, **(headers or {})}
    guard = guarded(url, extra)  # the caller's headers never follow a redirect elsewhere
    with make_client(replace(opts, headers={})) as http:
        try:
            method = "HEAD"
            resp = http.head(url, headers=extra, extensions=guard)
            if resp.status_code in (405, 501) or resp.status_code >= 500:
                method = "GET"
                with http.stream("GET", url, headers=extra, extensions=guard) as streamed:
                    resp = streamed  # headers only: the body is never read
            if resp.status_code >= 400:
                raise FetchError(
                    f"{shown}: HTTP {resp.status_code}", url=shown, status=resp.status_code
                )
            head, ranges = _first_kib(http, url, extra, guard)
        except httpx.TooManyRedirects as exc:
            raise FetchError(
                f"{shown}: redirect loop or more than 10 redirects", url=shown
            ) from exc
        except httpx.HTTPError as exc:
            raise FetchError(f"{shown}: {type(exc).__name__}", url=shown) from exc
    h = resp.headers
    strong, weak = split_etag(h.get("etag"))
    length = h.get("content-length")
    advertised = h.get("accept-ranges")
    fmt = sniff(head) if head else None
    return ProbeResult(
        url=shown,
        final_url=redact_url(str(resp.url)),
        http_status=resp.status_code,
        http_version=resp.http_version,
        method=method,
        size=int(length) if length and length.isdigit() else None,
        etag=strong,
        weak_etag=weak,
        last_modified=h.get("last-modified"),
        content_type=h.get("content-type"),
        content_encoding=h.get("content-encoding"),
        accept_ranges=ranges if ranges is not None else (advertised == "bytes" or None),
        format=fmt,
        content_format=_inner_format(fmt, head),
    )


def _first_kib(
    http: httpx.Client, url: str, extra: dict[str, str], guard: dict[str, Any]
) -> tuple[bytes, bool | None]:
    """The first KiB of the body, and whether the server honoured Range."""
    headers = {**extra, "Range": f"bytes=0-{SNIFF_BYTES - 1}"}
    with http.stream("GET", url, headers=headers, extensions=guard) as resp:
        if resp.status_code not in (200, 206):
            return b"", None
        head = b""
        for chunk in resp.iter_raw(SNIFF_BYTES):
            head += chunk
            if len(head) >= SNIFF_BYTES:
                break  # a server that ignored Range: stop here, close the connection
        return head[:SNIFF_BYTES], resp.status_code == 206


def _inner_format(fmt: str | None, head: bytes) -> str | None:
    """For a compressed head, the format of what it decompresses to (best effort)."""
    if fmt not in ("gzip", "bz2", "xz", "zstd"):
        return None
    checker = CompressedChecker(fmt)
    try:
        checker.update(head)
    except IntegrityError:
        return None
    return sniff_text(checker.head) if checker.head else None
