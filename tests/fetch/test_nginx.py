"""``cas fetch`` and ``cas probe`` against a real nginx on 127.0.0.1.

nginx computes its ETag as ``"<mtime hex>-<size hex>"`` and its Last-Modified from the
file's mtime, so every test sets mtimes explicitly (two writes within one second would
otherwise look unchanged to nginx, which is nginx's behaviour, not ours).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
from pathlib import Path

from casstore.fetch import HttpOptions, Source
from casstore.store import Store
from tests.fetch.conftest import Nginx, http_date, object_ids, sha256

T1 = 1_700_000_000
T2 = T1 + 3600


def put(path: Path, data: bytes, mtime: int = T1) -> bytes:
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return data


def nginx_etag(data: bytes, mtime: int) -> str:
    return f'"{mtime:x}-{len(data):x}"'


def jsonl(n: int, tag: str = "") -> bytes:
    return b"".join(
        json.dumps({"id": i, "name": f"system {i}{tag}", "x": i * 0.5}).encode() + b"\n"
        for i in range(n)
    )


def reflog(cas, ref: str) -> list[dict]:
    res = cas("ref", "log", ref, "--json")
    assert res.exit_code == 0, res
    return res.json()


def download_records(cas, oid: str) -> list[dict]:
    res = cas("show", oid, "--json")
    assert res.exit_code == 0, res
    return [r["record"] for r in res.json()["records"] if r["record"]["type"] == "download"]


# ---------------------------------------------------------------------------------------


def test_first_fetch_stores_the_bytes_and_a_download_record(nginx: Nginx, store: Store, cas):
    base, www = nginx.site()
    data = put(www / "systems.jsonl", jsonl(200))
    url = f"{base}/systems.jsonl"

    res = cas("fetch", url, "--json")

    assert res.exit_code == 0, res
    out = res.json()
    oid = sha256(data)
    assert out["status"] == "downloaded"
    assert out["object"] == oid
    assert out["source_id"] == "systems"
    assert object_ids(store.root) == {oid}
    assert cas("cat", oid).stdout_bytes == data
    assert store.refs.get("sources/systems") == oid

    (record,) = download_records(cas, oid)
    assert record["url"] == url
    assert record["final_url"] == url
    assert record["http_status"] == 200
    assert record["http_version"] == "HTTP/1.1"
    assert record["etag"] == nginx_etag(data, T1)
    assert "weak_etag" not in record
    assert record["last_modified"] == http_date(T1)
    assert record["content_length"] == len(data)
    assert record["size"] == len(data)
    assert record["source_id"] == "systems"
    assert record["format"] == "jsonl"
    assert record["line_count"] == 200
    assert record["record_count"] == 200
    tiers = {c["tier"]: c["outcome"] for c in record["integrity"]}
    assert tiers["content-length"] == "passed"
    assert record == out["record"]


def test_second_fetch_is_a_conditional_get_answered_304(nginx: Nginx, store: Store, cas):
    base, www = nginx.site()
    data = put(www / "daily.csv", b"a,b,c\n1,2,3\n4,5,6\n")
    url = f"{base}/daily.csv"
    first = cas("fetch", url)
    assert first.exit_code == 0, first
    oid = sha256(data)
    log_before = reflog(cas, "sources/daily")

    second = cas("fetch", url)

    assert second.exit_code == 0, second
    assert second.lines == [f"unchanged {oid}  sources/daily"]
    # nginx answered the conditional GET with 304, no body
    last = nginx.log_lines()[-1]
    assert f'"GET /{Path(base).name}/daily.csv HTTP/1.1" 304 0 ' in last, last
    log_after = reflog(cas, "sources/daily")
    assert log_after[: len(log_before)] == log_before
    (event,) = log_after[len(log_before) :]
    assert event["action"] == "fetch-unchanged"
    assert event["old"] == event["new"] == oid
    assert len(download_records(cas, oid)) == 1
    assert object_ids(store.root) == {oid}


def test_sha256_is_checked_also_when_the_server_answers_304(nginx: Nginx, store: Store, cas):
    base, www = nginx.site()
    data = put(www / "pinned.csv", b"a,b\n1,2\n")
    url = f"{base}/pinned.csv"
    oid = sha256(data)
    assert cas("fetch", url, "--sha256", oid).exit_code == 0

    same = cas("fetch", url, "--sha256", oid)
    other = cas("fetch", url, "--sha256", "0" * 64)
    malformed = cas("fetch", url, "--sha256", "00")

    assert same.exit_code == 0 and same.lines == [f"unchanged {oid}  sources/pinned"]
    assert other.exit_code == 1, other
    assert other.stderr.startswith("cas: error: ") and "0" * 64 in other.stderr
    assert malformed.exit_code == 2, malformed
    assert "--sha256 wants 64 hex digits" in malformed.stderr
    assert object_ids(store.root) == {oid}


def test_changed_file_stores_a_new_version_and_moves_the_ref(nginx: Nginx, store: Store, cas):
    base, www = nginx.site()
    v1 = put(www / "dump.json", b'{"version": 1, "items": [1, 2, 3]}\n', T1)
    url = f"{base}/dump.json"
    assert cas("fetch", url).exit_code == 0

    v2 = put(www / "dump.json", b'{"version": 2, "items": [1, 2, 3, 4]}\n', T2)
    res = cas("fetch", url)

    assert res.exit_code == 0, res
    assert res.lines[0].startswith(f"downloaded {sha256(v2)}  sources/dump  ("), res
    assert store.refs.get("sources/dump") == sha256(v2)
    assert object_ids(store.root) == {sha256(v1), sha256(v2)}
    assert cas("cat", sha256(v1)).stdout_bytes == v1
    assert cas("cat", sha256(v2)).stdout_bytes == v2
    moves = [(e["old"], e["new"]) for e in reflog(cas, "sources/dump") if e["action"] == "fetch"]
    assert moves == [(None, sha256(v1)), (sha256(v1), sha256(v2))]
    (record,) = download_records(cas, sha256(v2))
    assert record["etag"] == nginx_etag(v2, T2)
    assert record["last_modified"] == http_date(T2)


def _probe_rows(output: str) -> dict[str, str]:
    out = {}
    for line in output.splitlines():
        label, value = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        out[label] = value
    return out


def test_probe_reports_size_validators_range_and_format(nginx: Nginx, cas):
    base, www = nginx.site()
    inner = jsonl(300)
    files = {
        "systems.jsonl.gz": (gzip.compress(inner, mtime=0), "gzip (jsonl inside)"),
        "bodies.json": (b'[{"id": 1, "name": "Sol"}, {"id": 2, "name": "Lave"}]\n', "json"),
        "prices.csv": (b"id,name,price\n1,gold,9.5\n2,silver,4.25\n3,tin,0.5\n", "csv"),
    }
    for name, (data, _) in files.items():
        put(www / name, data)

    for name, (data, fmt) in files.items():
        res = cas("probe", f"{base}/{name}")
        assert res.exit_code == 0, res
        got = _probe_rows(res.stdout)
        assert got["size"].startswith(f"{len(data)} ("), got
        assert got["etag"] == nginx_etag(data, T1), got
        assert got["last-modified"] == http_date(T1)
        assert got["range"] == "yes"
        assert got["format"] == fmt
        assert got["status"] == "200 (HTTP/1.1, HEAD)"

    res = cas("probe", f"{base}/systems.jsonl.gz", "--json")
    assert res.exit_code == 0, res
    probe = res.json()
    assert probe["format"] == "gzip"
    assert probe["content_format"] == "jsonl"
    assert probe["accept_ranges"] is True
    assert probe["etag"] == nginx_etag(files["systems.jsonl.gz"][0], T1)
    assert probe["weak_etag"] is None
    assert probe["content_type"] == "application/gzip"


def test_check_exit_codes_unchanged_then_changed(nginx: Nginx, store: Store, cas):
    base, www = nginx.site()
    put(www / "feed.json", b'{"a": 1}\n', T1)
    url = f"{base}/feed.json"

    never = cas("fetch", "--check", url)
    assert never.exit_code == 3, never
    assert never.stdout.startswith("changed feed "), never
    assert cas("fetch", url).exit_code == 0
    oid = store.refs.get("sources/feed")
    lines_before = len(nginx.log_lines())

    same = cas("fetch", "--check", url)
    assert same.exit_code == 0, same
    assert same.stdout.startswith("unchanged feed "), same
    by_id = cas("fetch", "--check", "feed", "--json")
    assert by_id.exit_code == 0, by_id
    assert by_id.json()["status"] == "unchanged"

    put(www / "feed.json", b'{"a": 2}\n', T2)
    changed = cas("fetch", "--check", url)
    assert changed.exit_code == 3, changed
    assert changed.stdout.startswith("changed feed "), changed
    # --check reads no body and stores nothing
    assert store.refs.get("sources/feed") == oid
    assert object_ids(store.root) == {oid}
    methods = [ln.split('"')[1].split()[0] for ln in nginx.log_lines()[lines_before:]]
    assert "GET" not in methods, methods


def test_regzipped_file_with_same_content_is_content_unchanged(nginx: Nginx, store: Store, cas):
    base, www = nginx.site()
    content = jsonl(500)
    gz1 = put(www / "daily.jsonl.gz", gzip.compress(content, mtime=1_000), T1)
    url = f"{base}/daily.jsonl.gz"
    assert cas("fetch", url).exit_code == 0

    gz2 = put(www / "daily.jsonl.gz", gzip.compress(content, mtime=2_000), T2)
    assert gz1 != gz2 and len(gz1) == len(gz2)
    res = cas("fetch", url)

    assert res.exit_code == 0, res
    assert res.lines == [
        f"content-unchanged {sha256(gz2)}  sources/daily  (bytes changed, content identical)"
    ]
    assert store.refs.get("sources/daily") == sha256(gz2)
    (r1,) = download_records(cas, sha256(gz1))
    (r2,) = download_records(cas, sha256(gz2))
    assert r1["content_sha256"] == r2["content_sha256"] == sha256(content)
    assert r1["uncompressed_size"] == r2["uncompressed_size"] == len(content)
    assert r2["format"] == "jsonl+gzip"
    assert r2["line_count"] == 500
    (move,) = [e for e in reflog(cas, "sources/daily") if e["new"] == sha256(gz2)]
    assert move["message"] == "content unchanged"


def test_same_bytes_from_two_urls_are_stored_once_with_two_records(nginx: Nginx, store: Store, cas):
    base, www = nginx.site()
    data = b"id,value\n1,alpha\n2,beta\n3,gamma\n"
    put(www / "mirror-a.csv", data)
    put(www / "mirror-b.csv", data)

    a = cas("fetch", f"{base}/mirror-a.csv")
    b = cas("fetch", f"{base}/mirror-b.csv")

    assert a.exit_code == 0 and b.exit_code == 0, (a, b)
    oid = sha256(data)
    assert a.lines[0].startswith(f"downloaded {oid}  sources/mirror-a")
    assert b.lines[0].startswith(f"downloaded {oid}  sources/mirror-b")
    assert object_ids(store.root) == {oid}
    records = download_records(cas, oid)
    assert sorted((r["source_id"], r["url"]) for r in records) == [
        ("mirror-a", f"{base}/mirror-a.csv"),
        ("mirror-b", f"{base}/mirror-b.csv"),
    ]
    assert store.refs.get("sources/mirror-a") == store.refs.get("sources/mirror-b") == oid


def test_fetch_all_fetches_every_registered_source(nginx: Nginx, store: Store, cas):
    base, www = nginx.site()
    expected = {}
    for i in range(50):
        data = put(www / f"part{i:02d}.txt", f"part {i}\n".encode() * (i + 1))
        store.sources.add(Source(id=f"p{i:02d}", url=f"{base}/part{i:02d}.txt", dataset="parts"))
        expected[f"p{i:02d}"] = sha256(data)

    res = cas("fetch", "--all", "-j", "8", "--json")

    assert res.exit_code == 0, res
    results = res.json()
    assert sorted((r["source_id"], r["status"], r["object"]) for r in results) == sorted(
        (sid, "downloaded", oid) for sid, oid in expected.items()
    )
    assert {r["record"]["dataset"] for r in results} == {"parts"}
    assert object_ids(store.root) == set(expected.values())
    with Store.open(store.root) as fresh:
        assert {sid: fresh.refs.get(f"sources/{sid}") for sid in expected} == expected

    again = cas("fetch", "--all", "-j", "8")
    assert again.exit_code == 0, again
    assert sorted(again.lines) == sorted(
        f"unchanged {oid}  sources/{sid}" for sid, oid in expected.items()
    )


def test_fetch_urls_from_a_file(nginx: Nginx, store: Store, cas, tmp_path: Path):
    base, www = nginx.site()
    datas = {}
    for name in ("one.json", "two.json", "three.json"):
        datas[name] = put(www / name, json.dumps({"name": name}).encode() + b"\n")
    listing = tmp_path / "urls.txt"
    listing.write_text(
        "# today's files\n"
        + "".join(f"{base}/{name}\n\n" for name in datas)
        + f"   {base}/one.json   \n"  # the same URL twice: the second is unchanged
    )

    res = cas("fetch", "-i", listing, "--json", "-j", "1")

    assert res.exit_code == 0, res
    got = [(r["source_id"], r["status"], r["object"]) for r in res.json()]
    assert got == [
        ("one", "downloaded", sha256(datas["one.json"])),
        ("two", "downloaded", sha256(datas["two.json"])),
        ("three", "downloaded", sha256(datas["three.json"])),
        ("one", "unchanged", sha256(datas["one.json"])),
    ]
    assert object_ids(store.root) == {sha256(d) for d in datas.values()}


def _range_requests(proxy) -> list[tuple[str | None, str | None]]:
    """(Range, If-Range) of each request that went through the proxy."""
    out = []
    for raw in proxy.requests:
        head = raw.decode("latin-1").split("\r\n\r\n", 1)[0].split("\r\n")[1:]
        fields = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in head)}
        out.append((fields.get("range"), fields.get("if-range")))
    return out


def test_resume_against_nginx_after_a_cut(nginx: Nginx, store: Store, cutting_proxy):
    base, www = nginx.site()
    data = put(www / "big.bin", random.Random(11).randbytes(4 << 20))
    proxy = cutting_proxy(cuts=[1 << 20])
    url = f"http://127.0.0.1:{proxy.port}/{Path(base).name}/big.bin"

    result = store.fetch(url, opts=HttpOptions(retries=2, backoff=0.01, timeout=10))

    assert result.status == "downloaded"
    assert result.object == sha256(data)
    assert store.read(result.object) == data
    assert result.record["resumes"] == 1
    first, second = _range_requests(proxy)
    assert first == (None, None)
    assert second[0] is not None and re.fullmatch(r"bytes=\d+-", second[0])
    assert second[1] == nginx_etag(data, T1)
    assert nginx.log_lines()[-1].split('"')[2].split()[0] == "206"


def test_file_changed_during_a_cut_is_fetched_whole_from_nginx(nginx, store, cutting_proxy):
    base, www = nginx.site()
    old = put(www / "moving.bin", random.Random(12).randbytes(3 << 20), T1)
    new = random.Random(13).randbytes(3 << 20)
    proxy = cutting_proxy(cuts=[1 << 20], on_cut=lambda: put(www / "moving.bin", new, T2))
    url = f"http://127.0.0.1:{proxy.port}/{Path(base).name}/moving.bin"

    result = store.fetch(url, opts=HttpOptions(retries=2, backoff=0.01, timeout=10))

    assert result.object == sha256(new)
    assert store.read(result.object) == new
    assert result.record["etag"] == nginx_etag(new, T2)
    assert result.record["resumes"] == 0
    assert _range_requests(proxy)[1][1] == nginx_etag(old, T1)  # If-Range no longer matched
    assert nginx.log_lines()[-1].split('"')[2].split()[0] == "200"
    assert object_ids(store.root) == {sha256(new)}
