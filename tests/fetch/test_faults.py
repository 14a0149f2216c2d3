"""``cas fetch`` against a server that misbehaves on purpose, one fault per test.

Each fault ends one of two ways, and the test asserts which: the object is stored and its
bytes hash to exactly what was served, or the fetch is refused with a one-line reason and
no trace in the store (no object file, no record, nothing left in ``tmp/``, no source ref).
Retries use a 10 ms backoff so the suite stays fast; no test sleeps to order events.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import random
import re
from pathlib import Path

import pytest

from casstore.errors import FetchError, IntegrityError, SourceNotFound
from casstore.fetch import FetchResult, HttpOptions, fetch_many
from casstore.store import Store
from tests.fetch.conftest import (
    FaultServer,
    Request,
    Resource,
    assert_no_trace,
    http_date,
    object_ids,
    sha256,
    source_refs,
)

LM1 = http_date(1_700_000_000)


def fast(retries: int = 2, timeout: float = 5.0, **kw) -> HttpOptions:
    """Client options for tests: tiny backoff, a few retries."""
    return HttpOptions(retries=retries, backoff=0.01, timeout=timeout, **kw)


def noise(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def jsonl(n: int, tag: str = "") -> bytes:
    return b"".join(json.dumps({"id": i, "tag": tag}).encode() + b"\n" for i in range(n))


def stored_bytes(store: Store, oid: str) -> bytes:
    data = store.read(oid)
    assert sha256(data) == oid
    return data


def one_error_line(res) -> str:
    """A refused fetch: non-zero exit, exactly one ``cas: error:`` line, nothing on stdout."""
    assert res.exit_code != 0, res
    assert res.stdout == "", res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cas: error: "), res
    return lines[0]


def big_jsonl_pieces(total_blocks: int) -> tuple[bytes, int]:
    """A 64 KiB block of whole JSON lines, and the size of ``total_blocks`` of them."""
    block = b""
    i = 0
    while True:
        line = json.dumps({"id": i, "name": f"system {i}"}).encode() + b"\n"
        if len(block) + len(line) > 64 * 1024:
            break
        block += line
        i += 1
    return block, len(block) * total_blocks


# ---------------------------------------------------------------------------------------
# resume and retry


def test_dropped_connection_resumes_with_range_and_if_range(faults: FaultServer, store: Store):
    body = noise(3 << 20)
    res = Resource(body, etag='"big-1"', last_modified=LM1, drops={1: 1_000_000})
    url = faults.route("/big.bin", res)

    result = store.fetch(url, opts=fast())

    assert result.status == "downloaded"
    assert result.object == sha256(body)
    assert stored_bytes(store, result.object) == body
    assert result.record["resumes"] >= 1
    assert result.record["size"] == result.record["content_length"] == len(body)
    first, second = faults.seen("/big.bin", "GET")[:2]
    assert first.header("range") is None
    match = re.fullmatch(r"bytes=(\d+)-", second.header("range") or "")
    assert match and 0 < int(match.group(1)) <= 1_000_000, second.headers
    assert second.header("if-range") == '"big-1"'
    assert object_ids(store.root) == {sha256(body)}
    assert list(store.tmp.iterdir()) == []


def test_resume_uses_last_modified_when_there_is_no_strong_etag(faults: FaultServer, store):
    body = noise(2 << 20, seed=1)
    url = faults.route("/lm.bin", Resource(body, last_modified=LM1, drops={1: 600_000}))

    result = store.fetch(url, opts=fast())

    assert result.object == sha256(body)
    assert result.record["resumes"] == 1
    second = faults.seen("/lm.bin", "GET")[1]
    assert second.header("if-range") == LM1
    assert (second.header("range") or "").startswith("bytes=")


def test_weak_etag_is_never_used_for_if_range(faults: FaultServer, store: Store):
    body = noise(1 << 20, seed=2)
    url = faults.route("/weak.bin", Resource(body, etag='W/"w"', drops={1: 300_000}))

    result = store.fetch(url, opts=fast())

    assert result.object == sha256(body)
    assert result.record["resumes"] == 0  # started over: a weak tag cannot guard a splice
    second = faults.seen("/weak.bin", "GET")[1]
    assert second.header("range") is None and second.header("if-range") is None


def test_wrong_content_length_is_refused(faults: FaultServer, store: Store):
    body = b"0123456789" * 1000

    def short(req: Request) -> None:
        req.reply(200, body, {"Content-Type": "text/plain"}, length=len(body) + 500)

    url = faults.route("/short.txt", short)

    with pytest.raises(FetchError) as err:
        store.fetch(url, opts=fast(retries=1))

    assert url in str(err.value)
    assert "after 1 retries" in str(err.value)
    assert len(faults.seen("/short.txt", "GET")) == 2  # retried once, then gave up
    assert_no_trace(store.root)


def test_wrong_content_md5_is_refused_naming_the_tier(faults: FaultServer, store: Store, cas):
    body = b"payload that the server describes wrongly\n" * 100
    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    url = faults.route("/md5.txt", Resource(body, headers={"Content-MD5": wrong}))

    res = cas("fetch", url)

    line = one_error_line(res)
    assert "content-md5 check failed" in line, line
    assert "nothing stored" in line
    assert_no_trace(store.root)
    with pytest.raises(IntegrityError) as err:
        store.fetch(url, opts=fast())
    assert err.value.what == "content-md5"
    assert err.value.expected == hashlib.md5(b"something else").hexdigest()
    assert err.value.actual == hashlib.md5(body).hexdigest()
    assert_no_trace(store.root)


def test_right_content_md5_passes_its_tier(faults: FaultServer, store: Store):
    body = b"payload described correctly\n" * 100
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    url = faults.route("/md5ok.txt", Resource(body, headers={"Content-MD5": md5}))

    result = store.fetch(url, opts=fast())

    assert result.object == sha256(body)
    tiers = {c["tier"]: c["outcome"] for c in result.record["integrity"]}
    assert tiers["content-md5"] == "passed"
    assert result.record["content_md5"] == md5


def test_truncated_gzip_without_content_length_is_refused(faults: FaultServer, store, cas):
    gz = gzip.compress(jsonl(5000), mtime=0)

    def truncated(req: Request) -> None:  # close-delimited: only the gzip trailer can tell
        req.reply(200, gz[: len(gz) * 2 // 3], {"Content-Type": "application/gzip"}, length=False)

    url = faults.route("/cut.jsonl.gz", truncated)

    res = cas("fetch", url)

    line = one_error_line(res)
    assert "truncated" in line, line
    assert "stream check failed" in line, line
    assert_no_trace(store.root)


def test_whole_gzip_without_content_length_is_stored(faults: FaultServer, store: Store):
    content = jsonl(5000)
    gz = gzip.compress(content, mtime=0)
    url = faults.route("/whole.jsonl.gz", lambda req: req.reply(200, gz, length=False))

    result = store.fetch(url, opts=fast())

    assert result.object == sha256(gz)
    assert result.record["content_sha256"] == sha256(content)
    assert result.record["record_count"] == 5000
    tiers = {c["tier"]: c["outcome"] for c in result.record["integrity"]}
    assert tiers == {
        "content-length": "skipped",
        "content-md5": "skipped",
        "stream": "passed",
        "sha256": "skipped",
    }


def test_500_then_200_is_retried_and_stored(faults: FaultServer, store: Store):
    body = b"after a hiccup\n" * 50

    def flaky(req: Request) -> None:
        if req.n == 1:
            req.reply(500, b"internal error\n")
        else:
            req.reply(200, body)

    url = faults.route("/flaky.txt", flaky)

    result = store.fetch(url, opts=fast(retries=3))

    assert result.object == sha256(body)
    assert result.record["retries"] == 1
    assert result.record["http_status"] == 200
    assert len(faults.seen("/flaky.txt", "GET")) == 2


def test_503_until_retries_run_out_is_refused(faults: FaultServer, store: Store):
    url = faults.route("/down.txt", lambda req: req.reply(503, b"busy\n"))

    with pytest.raises(FetchError) as err:
        store.fetch(url, opts=fast(retries=2))

    assert err.value.status == 503
    assert "HTTP 503 after 2 retries" in str(err.value)
    assert len(faults.seen("/down.txt", "GET")) == 3
    assert_no_trace(store.root)


def test_429_with_retry_after_then_200_is_stored(faults: FaultServer, store: Store):
    body = b"patience pays\n" * 20

    def limited(req: Request) -> None:
        if req.n == 1:
            req.reply(429, b"slow down\n", {"Retry-After": "1"})
        else:
            req.reply(200, body)

    url = faults.route("/limited.txt", limited)

    result = store.fetch(url, opts=fast(retries=2))

    assert result.object == sha256(body)
    assert result.record["retries"] == 1
    assert len(faults.seen("/limited.txt", "GET")) == 2


@pytest.mark.parametrize("status", [404, 403, 410])
def test_other_4xx_fail_at_once(faults: FaultServer, store: Store, cas, status: int):
    url = faults.route("/nope.txt", lambda req: req.reply(status, b"no\n"))

    with pytest.raises(FetchError) as err:
        store.fetch(url, opts=fast(retries=5))

    assert err.value.status == status
    assert f"HTTP {status}" in str(err.value)
    assert len(faults.seen("/nope.txt", "GET")) == 1
    assert_no_trace(store.root)
    line = one_error_line(cas("fetch", url, "--retries", "5"))
    assert f"HTTP {status}" in line and url in line
    assert len(faults.seen("/nope.txt", "GET")) == 2


# ---------------------------------------------------------------------------------------
# the HEAD before a new URL's first GET


def test_a_new_url_is_probed_with_head_and_a_known_source_is_not(faults: FaultServer, store):
    body = b'{"probed": true}\n' * 10
    url = faults.route("/p.json", Resource(body, etag='"p1"'))

    first = store.fetch(url, opts=fast())
    again = store.fetch(url, opts=fast())
    store.fetch(url + "?day=2", source_id="p", opts=fast())  # a new URL for the source

    assert (first.status, again.status) == ("downloaded", "unchanged")
    methods = [(r.method, r.header("if-none-match")) for r in faults.seen("/p.json")]
    assert methods == [
        ("HEAD", None),
        ("GET", None),
        ("GET", '"p1"'),  # known: straight to the conditional GET
        ("HEAD", None),  # a new URL: its old validators mean nothing, so probe again
        ("GET", None),
    ]


def test_max_size_is_refused_on_the_heads_answer_before_any_get(faults: FaultServer, store):
    url = faults.route("/huge.bin", Resource(noise(300_000, seed=7), etag='"h"'))

    with pytest.raises(FetchError, match="exceeds --max-size"):
        store.fetch(url, opts=fast(), max_size=100_000)

    assert [r.method for r in faults.seen("/huge.bin")] == ["HEAD"]
    assert_no_trace(store.root)


@pytest.mark.parametrize("head_status", [403, 405, 500])
def test_a_refused_or_failing_head_leaves_the_decision_to_the_get(faults, store, head_status):
    body = b"signed URLs often refuse HEAD\n"
    url = faults.route("/signed.txt", Resource(body, etag='"s"', head_status=head_status))

    result = store.fetch(url, opts=fast())

    assert result.object == sha256(body)
    assert [r.method for r in faults.seen("/signed.txt")] == ["HEAD", "GET"]
    assert result.record["retries"] == 0  # the HEAD's failure is no retry of the GET


def test_accept_ranges_none_makes_a_cut_start_over_without_range(faults: FaultServer, store):
    body = noise(1 << 20, seed=8)
    res = Resource(
        body, etag='"n"', ranges=False, headers={"Accept-Ranges": "none"}, drops={1: 300_000}
    )
    url = faults.route("/norange.bin", res)

    result = store.fetch(url, opts=fast())

    assert result.object == sha256(body)
    assert result.record["resumes"] == 0
    gets = faults.seen("/norange.bin", "GET")
    assert len(gets) == 2
    assert gets[1].header("range") is None and gets[1].header("if-range") is None


# ---------------------------------------------------------------------------------------
# redirects


def _redirect(to: str, status: int = 302):
    return lambda req: req.reply(status, b"", {"Location": to})


def test_redirect_chain_records_the_final_url(faults: FaultServer, store: Store):
    body = b'{"final": true}\n'
    faults.route("/hop2", _redirect("/hop3", 301))
    faults.route("/hop3", _redirect(faults.url("/files/final.json"), 307))
    final = faults.route("/files/final.json", Resource(body, etag='"f"'))
    url = faults.route("/hop1", _redirect("/hop2", 302))

    result = store.fetch(url, opts=fast())

    assert result.object == sha256(body)
    assert result.record["url"] == url
    assert result.record["final_url"] == final
    assert result.record["http_status"] == 200
    assert store.refs.get("sources/hop1") == sha256(body)


def test_redirect_loop_is_refused_with_a_clear_error(faults: FaultServer, store: Store, cas):
    faults.route("/loop-b", _redirect("/loop-a"))
    url = faults.route("/loop-a", _redirect("/loop-b"))

    line = one_error_line(cas("fetch", url))

    assert "redirect loop" in line, line
    assert url in line
    assert_no_trace(store.root)
    assert len(faults.seen("/loop-a", "GET")) <= 11  # bounded: at most 10 redirects followed


# ---------------------------------------------------------------------------------------
# probe


def test_probe_falls_back_to_get_when_head_is_refused(faults: FaultServer, cas):
    body = b"a,b\n1,2\n3,4\n5,6\n"
    url = faults.route("/nohead.csv", Resource(body, etag='"c1"', head_status=405))

    res = cas("probe", url, "--json")

    assert res.exit_code == 0, res
    probe = res.json()
    assert probe["method"] == "GET"
    assert probe["http_status"] == 200
    assert probe["size"] == len(body)
    assert probe["etag"] == '"c1"'
    assert probe["format"] == "csv"
    assert probe["accept_ranges"] is True
    methods = [r.method for r in faults.seen("/nohead.csv")]
    assert methods[0] == "HEAD" and "GET" in methods


def test_probe_with_range_ignored_does_not_read_the_whole_body(faults: FaultServer, cas):
    block, total = big_jsonl_pieces(1024)  # about 64 MiB, more than socket buffers hold
    sent: list[int] = []

    def no_ranges(req: Request) -> None:
        req.start(200, {"Content-Length": str(total), "ETag": '"huge"'})
        if req.method == "GET":
            req.stream(block for _ in range(1024))
            sent.append(req.sent)

    url = faults.route("/huge.jsonl", no_ranges)

    res = cas("probe", url, "--json")

    assert res.exit_code == 0, res
    probe = res.json()
    assert probe["accept_ranges"] is False
    assert probe["size"] == total
    assert probe["format"] == "jsonl"
    faults.wait_idle()
    gets = faults.seen("/huge.jsonl", "GET")
    assert any(g.header("range") == "bytes=0-1023" for g in gets)
    assert sent and all(n < total for n in sent), (sent, total)


def test_resume_against_a_server_ignoring_range_restarts_from_zero(faults: FaultServer, store):
    body = noise(2 << 20, seed=3)
    res = Resource(body, etag='"r"', ranges=False, drops={1: 700_000})
    url = faults.route("/norange.bin", res)

    result = store.fetch(url, opts=fast())

    assert result.object == sha256(body)
    assert stored_bytes(store, result.object) == body
    assert result.record["resumes"] == 0
    assert result.record["retries"] == 1
    second = faults.seen("/norange.bin", "GET")[1]
    assert second.header("range") is not None  # asked to resume, got the whole body
    assert object_ids(store.root) == {sha256(body)}
    assert list(store.tmp.iterdir()) == []


# ---------------------------------------------------------------------------------------
# timeouts and a changing resource


def test_slow_trickle_beyond_the_timeout_fails_after_retries(faults: FaultServer, store, cas):
    def trickle(req: Request) -> None:
        req.start(200, {"Content-Length": "100"})
        req.write(b"x")
        for _ in range(99):
            if faults.pause(1.0):
                return
            req.write(b"x")

    url = faults.route("/slow.txt", trickle)

    line = one_error_line(cas("fetch", url, "--timeout", "0.5", "--retries", "1"))

    assert "timed out (ReadTimeout) (after 1 retries)" in line, line
    assert len(faults.seen("/slow.txt", "GET")) == 2
    assert_no_trace(store.root)


def test_resource_changing_between_requests_stores_exactly_the_new_body(faults, store):
    old, new = noise(2 << 20, seed=4), noise(2 << 20, seed=5)

    def change(r: Resource) -> None:
        r.body, r.etag = new, '"v2"'

    res = Resource(old, etag='"v1"', drops={1: 800_000}, on_drop=change)
    url = faults.route("/moving.bin", res)

    result = store.fetch(url, opts=fast())

    assert result.object == sha256(new)
    assert stored_bytes(store, result.object) == new
    assert result.record["etag"] == '"v2"'
    assert result.record["resumes"] == 0
    second = faults.seen("/moving.bin", "GET")[1]
    assert second.header("if-range") == '"v1"'
    assert object_ids(store.root) == {sha256(new)}
    assert list(store.tmp.iterdir()) == []


def test_changed_resource_that_now_sends_content_md5_is_stored(faults: FaultServer, store):
    """The restart after a change must judge the new response's Content-MD5 afresh."""
    old, new = noise(1 << 20, seed=6), noise(1 << 20, seed=7)
    new_md5 = base64.b64encode(hashlib.md5(new).digest()).decode()

    def change(r: Resource) -> None:
        r.body, r.etag = new, '"v2"'
        r.headers["Content-MD5"] = new_md5

    res = Resource(old, etag='"v1"', drops={1: 400_000}, on_drop=change)
    url = faults.route("/moving-md5.bin", res)

    result = store.fetch(url, opts=fast())

    assert result.object == sha256(new)
    tiers = {c["tier"]: c["outcome"] for c in result.record["integrity"]}
    assert tiers["content-md5"] == "passed"


# ---------------------------------------------------------------------------------------
# encodings and validators


def test_json_gz_with_content_encoding_gzip_is_stored_as_served(faults: FaultServer, store):
    content = json.dumps({"systems": [{"id": i} for i in range(500)]}).encode()
    gz = gzip.compress(content, mtime=0)
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    url = faults.route("/systems.json.gz", Resource(gz, etag='"gz"', headers=headers))

    result = store.fetch(url, opts=fast())

    assert result.object == sha256(gz)
    assert stored_bytes(store, result.object) == gz
    assert result.record["content_encoding"] == "gzip"
    assert result.record["content_sha256"] == sha256(content)
    assert result.record["uncompressed_size"] == len(content)
    assert result.record["format"] == "json+gzip"
    assert faults.seen("/systems.json.gz")[0].header("accept-encoding") == "identity"


def test_weak_etag_only_is_recorded_and_used_for_if_none_match(faults: FaultServer, store, cas):
    body = b'{"weak": "validator"}\n'
    url = faults.route("/weak.json", Resource(body, etag='W/"abc"'))
    first = cas("fetch", url, "--json")
    assert first.exit_code == 0, first
    record = first.json()["record"]
    assert record["weak_etag"] == 'W/"abc"'
    assert "etag" not in record

    second = cas("fetch", url)

    assert second.exit_code == 0, second
    assert second.lines == [f"unchanged {sha256(body)}  sources/weak"]
    conditional = faults.seen("/weak.json")[-1]
    assert conditional.header("if-none-match") == 'W/"abc"'
    log = cas("ref", "log", "sources/weak", "--json").json()
    assert [e["action"] for e in log] == ["fetch", "fetch-unchanged"]
    assert len(store.records(sha256(body))) == 1


def test_no_validators_downloads_again_and_reports_unchanged(faults: FaultServer, store, cas):
    body = b"no etag, no last-modified\n" * 10
    url = faults.route("/bare.txt", lambda req: req.reply(200, body))
    assert cas("fetch", url).exit_code == 0

    again = cas("fetch", url)

    assert again.exit_code == 0, again
    assert again.lines == [f"unchanged {sha256(body)}  sources/bare"]
    gets = faults.seen("/bare.txt", "GET")
    assert len(gets) == 2
    assert gets[1].header("if-none-match") is None
    assert gets[1].header("if-modified-since") is None
    assert object_ids(store.root) == {sha256(body)}
    assert len(store.records(sha256(body))) == 1
    log = cas("ref", "log", "sources/bare", "--json").json()
    assert [e["action"] for e in log] == ["fetch", "fetch-unchanged"]
    check = cas("fetch", "--check", "bare")
    assert check.exit_code == 4, check
    assert check.stdout.startswith("unknown bare ")


def test_two_fetches_of_one_source_at_once_download_once(faults: FaultServer, store: Store):
    body = noise(1 << 20, seed=8)
    url = faults.route("/shared.bin", Resource(body, etag='"s"'))

    results = fetch_many(store.root, [url, url], jobs=2, opts=fast())

    assert sorted(r.status for r in results) == ["downloaded", "unchanged"]
    assert {r.object for r in results} == {sha256(body)}
    gets = faults.seen("/shared.bin", "GET")
    assert len(gets) == 2
    assert sum(1 for g in gets if g.header("if-none-match") == '"s"') == 1
    assert len(store.records(sha256(body))) == 1


# ---------------------------------------------------------------------------------------
# secrets


SECRETS = (b"secret", b"s3cr3t")


def _needs_auth(body: bytes):
    def handler(req: Request) -> None:
        if not req.header("authorization"):
            req.reply(401, b"who are you?\n", {"WWW-Authenticate": 'Basic realm="x"'})
        else:
            req.reply(200, body, {"ETag": '"p"'})

    return handler


def _assert_no_secret_in(root: Path, *texts: str) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            for secret in SECRETS:
                assert secret not in data, f"{secret!r} written to {path}"
    for text in texts:
        for secret in SECRETS:
            assert secret.decode() not in text, text


def test_credentials_in_url_and_headers_never_reach_the_store(faults: FaultServer, store, cas):
    one, two = b'{"private": 1}\n', b'{"private": 2}\n'
    faults.route("/private/one.json", _needs_auth(one))
    faults.route("/private/two.json", _needs_auth(two))
    faults.route("/private/gone.json", lambda req: req.reply(404, b"gone\n"))
    port = faults.base_url.rsplit(":", 1)[1]
    with_user = f"http://user:secret@127.0.0.1:{port}/private/one.json?token=s3cr3t&day=1"
    with_header = f"http://127.0.0.1:{port}/private/two.json?token=s3cr3t"
    failing = f"http://user:secret@127.0.0.1:{port}/private/gone.json?token=s3cr3t"

    a = cas("fetch", with_user, "--json")
    b = cas("fetch", with_header, "--header", "Authorization: Bearer s3cr3t")
    c = cas("fetch", failing, "--header", "Cookie: session=s3cr3t")
    again = cas("fetch", with_user)
    check = cas("fetch", "--check", with_header, "--header", "Authorization: Bearer s3cr3t")

    assert a.exit_code == 0 and b.exit_code == 0 and again.exit_code == 0, (a, b, again)
    assert check.exit_code == 0, check
    assert c.exit_code == 1, c
    assert again.lines == [f"unchanged {sha256(one)}  sources/one"]
    seen_one = faults.seen("/private/one.json")[0]
    assert seen_one.header("authorization") == "Basic " + base64.b64encode(b"user:secret").decode()
    assert "token=s3cr3t" in seen_one.path
    assert faults.seen("/private/two.json")[0].header("authorization") == "Bearer s3cr3t"
    assert object_ids(store.root) == {sha256(one), sha256(two)}
    record = a.json()["record"]
    assert record["url"] == (
        f"http://REDACTED@127.0.0.1:{port}/private/one.json?token=REDACTED&day=1"
    )
    _assert_no_secret_in(
        store.root,
        *(r.stdout + r.stderr for r in (a, b, c, again, check)),
    )


def test_a_callers_own_client_gets_the_redirect_guard_too(faults: FaultServer, store):
    import httpx

    port = faults.base_url.rsplit(":", 1)[1]
    faults.route("/there.json", Resource(b"[3]\n", etag='"t3"'))
    faults.route("/away2.json", _redirect(f"http://localhost:{port}/there.json"))

    with httpx.Client(follow_redirects=True) as client:
        store.fetch(
            faults.url("/away2.json"), client=client, opts=fast(headers={"X-Api-Key": "k3y"})
        )

    assert all(r.header("x-api-key") == "k3y" for r in faults.seen("/away2.json"))
    assert [r.header("x-api-key") for r in faults.seen("/there.json")] == [None, None]


def test_secret_headers_never_follow_a_redirect_to_another_host(faults, store, cas):
    # 127.0.0.1 and localhost are two origins served by the same fault server: the first
    # redirects to the second. The caller's headers reach the first only; a redirect
    # within one origin keeps them.
    body = b'{"moved": true}\n'
    port = faults.base_url.rsplit(":", 1)[1]
    elsewhere = f"http://localhost:{port}/there.json"
    faults.route("/there.json", Resource(body, etag='"t"'))
    faults.route("/away.json", _redirect(elsewhere))
    faults.route("/near.json", _redirect("/there.json"))
    key = ("--header", "X-Api-Key: s3cr3t")

    fetched = cas("fetch", faults.url("/away.json"), *key)
    checked = cas("fetch", "--check", "away", *key)
    probed = cas("probe", faults.url("/away.json"), *key)
    many = fetch_many(
        store.root,
        [faults.url("/away.json"), faults.url("/near.json")],
        opts=fast(headers={"X-Api-Key": "s3cr3t"}),
    )

    assert fetched.exit_code == 0 and checked.exit_code == 0 and probed.exit_code == 0
    assert all(isinstance(r, FetchResult) for r in many), many
    away = faults.seen("/away.json")
    assert len(away) >= 5 and all(r.header("x-api-key") == "s3cr3t" for r in away)
    there = faults.seen("/there.json")
    far = [r for r in there if r.header("host").startswith("localhost")]
    near = [r for r in there if r.header("host").startswith("127.0.0.1")]
    assert len(far) >= 5 and all(r.header("x-api-key") is None for r in far)
    assert near and all(r.header("x-api-key") == "s3cr3t" for r in near)


@pytest.mark.parametrize(
    "url",
    [
        "http://user:secret@127.0.0.1:9/data.json",
        "http://127.0.0.1:9/data.json?token=s3cr3t",
        "http://127.0.0.1:9/data.json?API_KEY=s3cr3t",
    ],
)
def test_source_add_refuses_credentials_in_the_url(store: Store, cas, url: str):
    res = cas("source", "add", "data", url)

    line = one_error_line(res)
    assert res.exit_code == 2
    assert "credentials" in line and "--header" in line, line
    _assert_no_secret_in(store.root, line)
    assert store.sources.load() == {}


def test_refetch_by_id_of_a_url_with_secrets_needs_the_url_again(faults, store, cas):
    faults.route("/private/three.json", _needs_auth(b"3\n"))
    port = faults.base_url.rsplit(":", 1)[1]
    assert cas("fetch", f"http://u:secret@127.0.0.1:{port}/private/three.json").exit_code == 0

    with pytest.raises(SourceNotFound):
        store.fetch("three", opts=fast())


# ---------------------------------------------------------------------------------------
# user limits


def test_sha256_mismatch_is_refused_with_nothing_stored(faults: FaultServer, store, cas):
    body = b"the bytes the server has\n" * 40
    url = faults.route("/pinned.txt", Resource(body, etag='"p"'))
    wrong = sha256(b"the bytes the user expected")

    line = one_error_line(cas("fetch", url, "--sha256", wrong))

    assert "sha256 check failed" in line, line
    assert wrong in line
    assert_no_trace(store.root)

    right = cas("fetch", url, "--sha256", sha256(body).upper(), "--json")
    assert right.exit_code == 0, right
    tiers = {c["tier"]: c["outcome"] for c in right.json()["record"]["integrity"]}
    assert tiers["sha256"] == "passed"


def test_max_size_below_content_length_is_refused_before_the_download(faults, store, cas):
    block, total = big_jsonl_pieces(1024)
    sent: list[int] = []

    def big(req: Request) -> None:
        req.start(200, {"Content-Length": str(total)})
        req.stream(block for _ in range(1024))
        sent.append(req.sent)

    url = faults.route("/toobig.jsonl", big)

    line = one_error_line(cas("fetch", url, "--max-size", "1M"))

    assert f"Content-Length {total} exceeds --max-size ({1 << 20} bytes)" in line, line
    faults.wait_idle()
    assert sent and sent[0] < total
    assert_no_trace(store.root)


def test_max_size_without_content_length_stops_the_body(faults: FaultServer, store, cas):
    block, _ = big_jsonl_pieces(1024)

    def big(req: Request) -> None:
        req.start(200, {})  # close-delimited: the size is only known by counting
        req.stream(block for _ in range(1024))

    url = faults.route("/unsized.jsonl", big)

    line = one_error_line(cas("fetch", url, "--max-size", "1M"))

    assert "body exceeds --max-size" in line, line
    assert_no_trace(store.root)


def test_content_length_beyond_free_disk_is_refused(faults: FaultServer, store, cas):
    def enormous(req: Request) -> None:
        req.start(200, {"Content-Length": str(10**18)})
        req.write(b"x" * 1024)

    url = faults.route("/enormous.bin", enormous)

    line = one_error_line(cas("fetch", url))

    assert "bytes announced, only" in line and "free" in line, line
    assert_no_trace(store.root)
    assert source_refs(store.root) == []


@pytest.mark.parametrize("size", ["small", "large"])
def test_corrupt_gzip_is_refused_with_the_same_message_whatever_its_size(
    faults: FaultServer, store: Store, cas, size: str
):
    """Corruption found while streaming (a large body) or at the end (a small one) is
    reported the same way: the URL, the tier, nothing stored."""
    scale = 1 if size == "small" else 6
    body = (
        gzip.compress(noise(scale << 20, seed=9), mtime=0)
        + b"this is not a gzip member" * 40
        + noise(scale << 20, seed=10)
    )
    url = faults.route(f"/corrupt-{size}.gz", Resource(body, etag='"c"'))

    line = one_error_line(cas("fetch", url))

    assert url in line, line
    assert "stream check failed" in line, line
    assert_no_trace(store.root)


def test_check_falls_back_to_get_when_head_is_refused(faults: FaultServer, store: Store, cas):
    body = b'{"head": "refused"}\n'
    res = Resource(body, etag='"h1"', head_status=405)
    url = faults.route("/nohead.json", res)
    assert cas("fetch", url).exit_code == 0

    same = cas("fetch", "--check", "nohead")
    res.body, res.etag = b'{"head": "still refused"}\n', '"h2"'
    changed = cas("fetch", "--check", "nohead")

    assert same.exit_code == 0, same
    assert changed.exit_code == 3, changed
    checks = faults.seen("/nohead.json")[2:]  # after the first fetch's HEAD and GET
    assert [r.method for r in checks] == ["HEAD", "GET", "HEAD", "GET"]
    assert all(r.header("if-none-match") == '"h1"' for r in checks)
    assert object_ids(store.root) == {sha256(body)}


def test_registered_source_takes_secrets_from_the_environment(faults: FaultServer, store, cas):
    body = b'{"from": "env"}\n'
    seen_auth: list[str | None] = []

    def guarded(req: Request) -> None:
        if req.method == "GET":
            seen_auth.append(req.header("authorization"))
        if req.header("authorization") != "Bearer s3cr3t" or "key=s3cr3t" not in req.path:
            req.reply(401, b"no\n")
        else:
            req.reply(200, body, {"ETag": '"e"'})

    url = faults.route("/env/data.json", guarded)
    added = cas(
        "source",
        "add",
        "envsrc",
        url,
        "--header-env",
        "Authorization=CAS_TEST_AUTH",
        "--param-env",
        "key=CAS_TEST_KEY",
    )
    assert added.exit_code == 0, added

    missing = cas("fetch", "envsrc", env={"CAS_TEST_KEY": "s3cr3t"})
    ok = cas("fetch", "envsrc", env={"CAS_TEST_AUTH": "Bearer s3cr3t", "CAS_TEST_KEY": "s3cr3t"})

    line = one_error_line(missing)
    assert "CAS_TEST_AUTH" in line, line
    assert ok.exit_code == 0, ok
    assert ok.lines[0].startswith(f"downloaded {sha256(body)}  sources/envsrc")
    assert seen_auth == ["Bearer s3cr3t"]  # the refused fetch never reached the server
    _assert_no_secret_in(store.root, ok.stdout, ok.stderr, missing.stderr)


# ---- the body read straight from the socket ------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 4096, 65536])
def test_a_body_is_stored_whole_whatever_the_read_size(faults: FaultServer, store, chunk_size):
    # None takes the socket path after the first piece; a chunk size keeps httpx's own
    # re-chunking (which holds bytes back), so both must give the same object
    body = noise(300_000, seed=5)
    url = faults.route("/whole.bin", Resource(body, etag='"w-1"'))
    result = store.fetch(url, opts=fast(chunk_size=chunk_size))
    assert result.object == sha256(body)
    assert result.record["resumes"] == 0 and result.record["retries"] == 0
    assert stored_bytes(store, result.object) == body


def test_a_failing_disk_write_is_not_taken_for_a_network_error(
    faults: FaultServer, store, monkeypatch
):
    import errno

    from casstore.objects import ObjectWriter

    def full(self, chunk):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ObjectWriter, "_io", full)
    body = noise(4 << 20, seed=6)
    url = faults.route("/full.bin", Resource(body, etag='"f-1"'))
    with pytest.raises(OSError, match="No space left"):
        store.fetch(url, opts=fast(retries=3))
    assert len(faults.seen("/full.bin", "GET")) == 1  # not retried, not resumed
    assert_no_trace(store.root)


def test_a_resume_read_from_the_socket_is_held_to_max_size(faults: FaultServer, store):
    # The first answer is chunked, so it has no Content-Length for the up-front check, and
    # is cut; the resume announces a body far beyond --max-size: refused before it is read.
    big = noise(3 << 20, seed=7)
    limit = 1 << 20

    def handler(req):
        rng = req.header("range")
        if rng is None:
            req.start(200, {"ETag": '"m-1"', "Transfer-Encoding": "chunked"})
            req.write(b"%x\r\n" % 100_000 + big[:100_000] + b"\r\n")
            req.drop()
            return
        start = int(rng.removeprefix("bytes=").rstrip("-"))
        req.reply(
            206,
            big[start:],
            {"ETag": '"m-1"', "Content-Range": f"bytes {start}-{len(big) - 1}/{len(big)}"},
        )

    url = faults.route("/capped.bin", handler)
    with pytest.raises(FetchError, match="max-size"):
        store.fetch(url, opts=fast(), max_size=limit)
    assert len(faults.seen("/capped.bin", "GET")) == 2  # the resume was asked for
    assert_no_trace(store.root)
