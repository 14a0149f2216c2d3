"""Unit tests: format sniffing and stream checks (casstore.content), redaction, sources."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import random
import struct
import time
import tomllib
import tracemalloc
from email.utils import formatdate
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from casstore.content import (
    CompressedChecker,
    PlainChecker,
    checker_for,
    sniff,
    sniff_text,
)
from casstore.errors import IntegrityError, UsageError
from casstore.fetch.http import backoff_delay, retry_after, split_etag
from casstore.fetch.redact import (
    REDACTED,
    has_credentials,
    redact_headers,
    redact_url,
    scrub,
)
from casstore.fetch.sources import Source, SourceRegistry, slug_for
from casstore.refs import check_ref_name

# ---------------------------------------------------------------------------------------
# reference computations, independent of casstore


def line_count(data: bytes) -> int:
    """Lines as ``wc -l`` counts them, plus a last line without a newline."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def record_count(data: bytes) -> int:
    """JSON-lines records: the non-empty lines."""
    return sum(1 for line in data.split(b"\n") if line)


def jsonl(n: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    return b"".join(
        json.dumps({"id": i, "name": f"sys-{rng.randrange(10**6)}", "x": rng.random()}).encode()
        + b"\n"
        for i in range(n)
    )


def zstd_frame(data: bytes, checksum: bool = True) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_checksum=checksum).compress(data)


def skippable(payload: bytes, nibble: int = 0) -> bytes:
    return struct.pack("<II", 0x184D2A50 | nibble, len(payload)) + payload


def feed(checker, data: bytes, size: int):
    for i in range(0, len(data), size):
        checker.update(data[i : i + size])
    return checker.finish()


CHUNKS = [1, 7, 4096, 65537, 1 << 30]

# content -> (format, compressed bytes)
TEXT = jsonl(1500, seed=1)
MORE = jsonl(700, seed=2)
CSV = b"".join(f"{i},name {i},{i * 0.25}\n".encode() for i in range(2000))


def _cases() -> dict[str, tuple[str, bytes, bytes]]:
    return {
        "gzip": ("gzip", gzip.compress(TEXT, mtime=0), TEXT),
        "gzip-multi-member": (
            "gzip",
            gzip.compress(TEXT, mtime=0) + gzip.compress(MORE, mtime=7),
            TEXT + MORE,
        ),
        "bz2": ("bz2", bz2.compress(TEXT), TEXT),
        "bz2-multi-stream": ("bz2", bz2.compress(TEXT) + bz2.compress(MORE), TEXT + MORE),
        "xz": ("xz", lzma.compress(TEXT), TEXT),
        "xz-multi-stream": ("xz", lzma.compress(TEXT) + lzma.compress(MORE), TEXT + MORE),
        "zstd": ("zstd", zstd_frame(TEXT), TEXT),
        "zstd-no-checksum": ("zstd", zstd_frame(TEXT, checksum=False), TEXT),
        "zstd-multi-frame": ("zstd", zstd_frame(TEXT) + zstd_frame(MORE), TEXT + MORE),
        "zstd-skippable-frames": (
            "zstd",
            skippable(b"meta") + zstd_frame(TEXT) + skippable(b"x" * 3000, 5) + zstd_frame(MORE),
            TEXT + MORE,
        ),
        "zstd-empty-skippable-last": ("zstd", zstd_frame(CSV) + skippable(b""), CSV),
        "gzip-csv": ("gzip", gzip.compress(CSV, mtime=0), CSV),
    }


CASES = _cases()


# ---------------------------------------------------------------------------------------
# sniffing


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (gzip.compress(b"x"), "gzip"),
        (bz2.compress(b"x"), "bz2"),
        (lzma.compress(b"x"), "xz"),
        (zstd_frame(b"x"), "zstd"),
        (b"PK\x03\x04rest-of-a-zip", "zip"),
        (b'[{"a": 1}, {"a": 2}]', "json"),
        (b'{"a": 1}\n{"a": 2}\n{"a": 3}\n', "jsonl"),
        (b'{\n  "a": 1,\n  "b": [1, 2]\n}\n', "json"),
        (b'\xef\xbb\xbf{"bom": true}', "json"),
        (b"id,name,price\n1,gold,9.5\n2,tin,0.5\n", "csv"),
        (b"id\tname\n1\tgold\n2\ttin\n", "csv"),
        (b"Hello reader.\nThis is prose and not a table.\n", "text"),
        (b"\x00\x01\x02\x03binary", "binary"),
        (b"", "binary"),
        (b"\xff\xfe\xfd\xfc not utf-8 at all", "binary"),
    ],
)
def test_sniff_names_the_format(head: bytes, fmt: str):
    assert sniff(head) == fmt


def test_sniff_text_ignores_a_character_or_line_cut_at_the_end():
    lines = jsonl(100)
    head = lines[:1024]  # cut mid-line, as a 1 KiB probe cuts it
    assert not head.endswith(b"\n")
    assert sniff_text(head) == "jsonl"
    cut_char = "é".encode() * 600
    assert sniff_text(cut_char[:1023]) == "text"  # the last character is cut in half


def test_checker_for_picks_a_strategy_per_format():
    assert isinstance(checker_for(gzip.compress(b"abc")), CompressedChecker)
    assert checker_for(zstd_frame(b"abc")).format == "zstd"
    plain = checker_for(b"a,b\n1,2\n3,4\n")
    assert isinstance(plain, PlainChecker) and plain.format == "csv"


# ---------------------------------------------------------------------------------------
# compressed streams


@pytest.mark.parametrize("size", CHUNKS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_compressed_checker_measures_the_content(case: str, size: int):
    fmt, packed, content = CASES[case]

    result = feed(CompressedChecker(fmt), packed, size)

    assert result.format == fmt
    assert result.content_sha256 == hashlib.sha256(content).hexdigest()
    assert result.uncompressed_size == len(content)
    assert result.line_count == line_count(content)
    if content.startswith(b"{"):
        assert result.content_format == "jsonl"
        assert result.record_count == record_count(content)
    else:
        assert result.content_format == "csv"
        assert result.record_count is None


@pytest.mark.parametrize("size", [1, 3, 4096, 1 << 30])
def test_blank_lines_are_not_records_whatever_the_chunking(size: int):
    content = b'{"a": 1}\n\n\n{"a": 2}\n\n\n\n{"a": 3}\n{"a": 4}\n'
    assert record_count(content) == 4

    result = feed(CompressedChecker("gzip"), gzip.compress(content, mtime=0), size)
    plain = feed(PlainChecker("jsonl"), content, size)

    assert result.line_count == plain.line_count == line_count(content) == 9
    assert result.record_count == 4
    assert plain.record_count == 4


def test_line_count_without_a_final_newline():
    content = b"a,b\n1,2\n3,4"
    result = feed(CompressedChecker("xz"), lzma.compress(content), 5)
    assert result.line_count == 3
    assert result.content_sha256 == hashlib.sha256(content).hexdigest()


def _cut_points(case: str, packed: bytes) -> list[int]:
    """Cut points inside the stream (never on a member or frame boundary, which is a
    complete stream of fewer members)."""
    n = len(packed)
    points = {1, 2, 5, 11, n // 3, n // 2, n - 9, n - 4, n - 1}
    if "skippable" in case:
        points.discard(len(skippable(b"meta")))
    return sorted(p for p in points if 0 < p < n)


@pytest.mark.parametrize("case", sorted(CASES))
def test_truncated_streams_raise(case: str):
    fmt, packed, _ = CASES[case]
    for cut in _cut_points(case, packed):
        checker = CompressedChecker(fmt)
        with pytest.raises(IntegrityError) as err:
            feed(checker, packed[:cut], 4096)
        assert err.value.what == "stream", (case, cut)


@pytest.mark.parametrize(
    ("fmt", "packed"),
    [
        ("gzip", gzip.compress(TEXT, mtime=0)),
        ("bz2", bz2.compress(TEXT)),
        ("xz", lzma.compress(TEXT)),
        ("zstd", zstd_frame(TEXT)),
    ],
)
@pytest.mark.parametrize("where", [0.25, 0.5, 0.9])
def test_a_corrupted_byte_raises(fmt: str, packed: bytes, where: float):
    i = int(len(packed) * where)
    bad = packed[:i] + bytes([packed[i] ^ 0x55]) + packed[i + 1 :]

    with pytest.raises(IntegrityError):
        feed(CompressedChecker(fmt), bad, 4096)


def test_trailing_garbage_after_a_zstd_frame_raises():
    with pytest.raises(IntegrityError):
        feed(CompressedChecker("zstd"), zstd_frame(TEXT) + b"garbage!", 4096)


def test_a_zstd_bomb_stays_bounded():
    size = 200 << 20
    zeros = bytes(1 << 20)
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=True).compressobj()
    packed = b"".join(compressor.compress(zeros) for _ in range(size >> 20)) + compressor.flush()
    assert len(packed) < 100_000
    want = hashlib.sha256()
    for _ in range(size >> 20):
        want.update(zeros)

    tracemalloc.start()
    try:
        result = feed(CompressedChecker("zstd"), packed, 16 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.uncompressed_size == size
    assert result.content_sha256 == want.hexdigest()
    assert result.content_format == "binary"
    assert peak < 32 << 20, f"peak {peak} bytes while expanding {len(packed)} bytes"


# ---------------------------------------------------------------------------------------
# redaction


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://example.org/a.json", "https://example.org/a.json"),
        ("https://example.org/a.json?day=2024-01-01", "https://example.org/a.json?day=2024-01-01"),
        ("https://user:pw123@example.org/a.json", f"https://{REDACTED}@example.org/a.json"),
        ("https://user@example.org:8443/a", f"https://{REDACTED}@example.org:8443/a"),
        ("http://:pw123@127.0.0.1:81/a", f"http://{REDACTED}@127.0.0.1:81/a"),
        ("http://u:p4ss@[::1]:8080/a", f"http://{REDACTED}@[::1]:8080/a"),
        (
            "https://example.org/a?token=abc123&day=1",
            f"https://example.org/a?token={REDACTED}&day=1",
        ),
        (
            "https://example.org/a?API_KEY=abc123&Sig=zz&X-Amz-Signature=ff",
            f"https://example.org/a?API_KEY={REDACTED}&Sig={REDACTED}&X-Amz-Signature={REDACTED}",
        ),
        ("https://example.org/a?password=&q=x", f"https://example.org/a?password={REDACTED}&q=x"),
    ],
)
def test_redact_url(url: str, shown: str):
    assert redact_url(url) == shown
    for secret in ("pw123", "p4ss", "abc123", "zz&", "=ff"):
        assert secret not in redact_url(url)


def test_redact_url_with_configured_names_and_unparseable_urls():
    assert redact_url("https://h/a?session=s1&token=t", ["session"]) == (
        f"https://h/a?session={REDACTED}&token=t"
    )
    assert redact_url("http://[broken/a?token=x") == "<unparseable URL>"


@pytest.mark.parametrize(
    ("url", "has"),
    [
        ("https://example.org/a.json", False),
        ("https://example.org/a.json?day=1&tokenized=yes", False),
        ("https://u:p@example.org/", True),
        ("https://u@example.org/", True),
        ("https://example.org/?Token=x", True),
        ("https://example.org/?signature=", True),
    ],
)
def test_has_credentials(url: str, has: bool):
    assert has_credentials(url) is has


def test_redact_headers_and_scrub():
    headers = {
        "Authorization": "Bearer s3cr3t",
        "cookie": "a=b",
        "X-Api-Key": "k",
        "Accept": "application/json",
    }
    assert redact_headers(headers) == {
        "Authorization": REDACTED,
        "cookie": REDACTED,
        "X-Api-Key": REDACTED,
        "Accept": "application/json",
    }
    assert headers["Authorization"] == "Bearer s3cr3t"  # a copy, not an edit
    assert scrub("failed: Bearer s3cr3t at s3cr3t", ["s3cr3t", "ab", ""]) == (
        f"failed: Bearer {REDACTED} at {REDACTED}"
    )
    assert scrub("a tab b", ["ab"]) == "a tab b"  # too short to scrub without wrecking text


# ---------------------------------------------------------------------------------------
# sources


@pytest.mark.parametrize(
    ("url", "slug"),
    [
        ("https://example.org/dumps/systems.json.gz", "systems"),
        ("https://example.org/dumps/bodies.jsonl.zst", "bodies"),
        ("https://example.org/prices.csv?day=1", "prices"),
        ("https://example.org/a/b/stations.ndjson.bz2", "stations"),
        ("https://example.org/archive.tar.xz", "archive.tar"),
        ("https://example.org/dir/", "dir"),
        ("https://example.org/Weird Name (1).csv", "Weird-Name-1"),
        ("https://example.org/.hidden.json", "hidden"),
        ("https://example.org/index.lock", "index-lock"),
        ("https://example.org/", "example.org"),
        ("http://127.0.0.1:8080/", "127.0.0.1"),
    ],
)
def test_slug_for(url: str, slug: str):
    assert slug_for(url) == slug
    assert check_ref_name(slug, what="source id") == slug


def test_slug_for_a_long_or_non_ascii_file_name_is_a_valid_source_id():
    long_ascii = "https://example.org/" + "daily_export_" * 20 + ".csv.gz"
    cyrillic = "https://stat.example.org/" + quote("Население_по_регионам_России_2024.csv")
    for url in (long_ascii, cyrillic):
        check_ref_name(slug_for(url), what="source id")


@given(st.text(max_size=16))  # longer names: see the test above
def test_slug_for_is_always_a_valid_source_id(name: str):
    check_ref_name(slug_for("https://example.org/d/" + quote(name, safe="")), what="source id")


ODD = [
    Source(id="a/b.c", url="https://example.org/a.json", dataset='quote " and \\ backslash'),
    Source(id="x-y_z.1", url="https://example.org/q?a=1&b=%22x%22"),
    Source(
        id="deep/er/id",
        url="https://example.org/é/ü.csv",
        dataset="línea\nnueva\ttab",
        headers_env={"Authorization": "MY_TOKEN", "X-Odd Header": "ODD"},
        params_env={"token": "TOKEN_VAR"},
    ),
    Source(id="plain", url="http://127.0.0.1:9/x"),
]


def test_sources_toml_round_trip_with_odd_ids(tmp_path: Path):
    reg = SourceRegistry(tmp_path / "sources.toml")
    for source in ODD:
        reg.add(source)

    loaded = SourceRegistry(tmp_path / "sources.toml").load()

    assert loaded == {s.id: s for s in ODD}
    raw = tomllib.loads((tmp_path / "sources.toml").read_text(encoding="utf-8"))
    assert sorted(raw["sources"]) == sorted(s.id for s in ODD)

    assert reg.remove("a/b.c").id == "a/b.c"
    assert sorted(reg.load()) == ["deep/er/id", "plain", "x-y_z.1"]


@given(st.text(max_size=30))
def test_sources_toml_round_trips_any_dataset_name(tmp_path_factory, dataset: str):
    path = tmp_path_factory.mktemp("reg") / "sources.toml"
    reg = SourceRegistry(path)
    reg.add(Source(id="s", url="https://example.org/s.csv", dataset=dataset))
    assert reg.load()["s"].dataset == dataset


def test_sources_toml_keeps_a_del_character(tmp_path: Path):
    reg = SourceRegistry(tmp_path / "sources.toml")
    reg.add(Source(id="s", url="https://example.org/s.csv", dataset="before\x7fafter"))
    reg.add(Source(id="t", url="https://example.org/t.csv"))
    assert sorted(reg.load()) == ["s", "t"]


@pytest.mark.parametrize(
    "source",
    [
        Source(id="s", url="https://u:p@example.org/a"),
        Source(id="s", url="https://example.org/a?sig=abc"),
        Source(id="../up", url="https://example.org/a"),
        Source(id="s", url="ftp://example.org/a"),
        Source(id="s.lock", url="https://example.org/a"),
    ],
)
def test_source_registry_refuses_bad_sources(tmp_path: Path, source: Source):
    reg = SourceRegistry(tmp_path / "sources.toml")
    with pytest.raises((UsageError, ValueError)):
        reg.add(source)
    assert reg.load() == {}


def test_source_registry_refuses_a_taken_id_unless_replacing(tmp_path: Path):
    reg = SourceRegistry(tmp_path / "sources.toml")
    reg.add(Source(id="s", url="https://example.org/a"))
    with pytest.raises(UsageError):
        reg.add(Source(id="s", url="https://example.org/b"))
    reg.add(Source(id="s", url="https://example.org/b"), replace=True)
    assert reg.get("s").url == "https://example.org/b"


# ---------------------------------------------------------------------------------------
# HTTP helpers


@pytest.mark.parametrize(
    ("header", "want"),
    [
        (None, (None, None)),
        ('"abc"', ('"abc"', None)),
        (' "abc" ', ('"abc"', None)),
        ('W/"abc"', (None, 'W/"abc"')),
        ('w/"abc"', (None, 'w/"abc"')),
    ],
)
def test_split_etag(header, want):
    assert split_etag(header) == want


def test_retry_after_seconds_dates_and_nonsense():
    def resp(value: str | None) -> httpx.Response:
        return httpx.Response(429, headers={} if value is None else {"Retry-After": value})

    assert retry_after(resp(None)) is None
    assert retry_after(resp("1")) == 1.0
    assert retry_after(resp("-5")) == 0.0
    assert retry_after(resp("99999")) == 300.0  # capped
    assert retry_after(resp("soon")) is None
    assert retry_after(resp("Mon, 01 Jan 2001 00:00:00 GMT")) == 0.0  # a date in the past
    future = retry_after(resp(formatdate(time.time() + 120, usegmt=True)))
    assert future is not None and 100 < future <= 120


def test_backoff_grows_with_jitter_and_a_hint_wins():
    for attempt in range(6):
        delay = backoff_delay(attempt, 0.5)
        assert 0.25 * 2**attempt <= delay <= 0.75 * 2**attempt
    assert backoff_delay(30, 0.5) <= 90.0  # capped at 60 s before jitter
    assert backoff_delay(3, 0.5, hint=1.0) == 1.0
