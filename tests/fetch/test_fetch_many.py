"""``cas fetch --all`` / ``fetch_many``: many sources at once over one asyncio httpx client.

The asyncio driver shares every protocol rule with the blocking one, but not its code path
for reading a body, so the faults that matter most are run through it here: a cut
mid-body, a 5xx, a corrupt stream, a size limit. Credentials must stay with their own
source although every source shares one client.
"""

from __future__ import annotations

import gzip
import random
import re
import threading

import pytest

from casstore.fetch import FetchFailure, FetchResult, HttpOptions, fetch_many
from casstore.fetch.sources import Source
from casstore.meta.context import linked
from casstore.records import PipelineLink
from casstore.store import Store
from tests.fetch.conftest import FaultServer, Request, Resource, assert_no_trace, object_ids, sha256


def fast(retries: int = 2, **kw) -> HttpOptions:
    return HttpOptions(retries=retries, backoff=0.01, timeout=5.0, **kw)


def noise(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def ok(result: FetchResult | FetchFailure) -> FetchResult:
    assert isinstance(result, FetchResult), result
    return result


def test_fetches_overlap_up_to_the_job_limit(faults: FaultServer, store: Store):
    # Every handler waits until four requests are in flight at once: with fewer at once
    # the barrier breaks (after 5 s) and the handlers answer 503.
    barrier = threading.Barrier(4, timeout=5)
    bodies = {f"/p{i}.json": f'{{"part": {i}}}\n'.encode() for i in range(8)}

    def together(req: Request) -> None:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            req.reply(503, b"alone\n")
            return
        req.reply(200, bodies[req.path])

    urls = [faults.route(path, together) for path in bodies]

    results = fetch_many(store.root, urls, jobs=4, opts=fast(retries=0))

    assert [ok(r).object for r in results] == [sha256(b) for b in bodies.values()]
    assert object_ids(store.root) == {sha256(b) for b in bodies.values()}
    assert [store.refs.get(f"sources/{ok(r).source_id}") for r in results] == [
        sha256(b) for b in bodies.values()
    ]


def test_results_keep_the_order_of_the_targets_and_a_failure_stops_nothing(
    faults: FaultServer, store: Store
):
    slow_body, fast_body = b"slow\n" * 100, b"fast\n" * 100

    def slow(req: Request) -> None:
        faults.pause(0.3)
        req.reply(200, slow_body)

    urls = [
        faults.route("/slow.txt", slow),
        faults.route("/gone.txt", lambda req: req.reply(404, b"gone\n")),
        faults.route("/fast.txt", lambda req: req.reply(200, fast_body)),
    ]

    results = fetch_many(store.root, urls, jobs=3, opts=fast())

    assert ok(results[0]).object == sha256(slow_body)
    assert isinstance(results[1], FetchFailure)
    assert "HTTP 404" in results[1].error
    assert ok(results[2]).object == sha256(fast_body)
    assert object_ids(store.root) == {sha256(slow_body), sha256(fast_body)}


def test_on_done_sees_each_result_once_as_it_finishes(faults: FaultServer, store: Store):
    # what the terminal's count bar advances on
    urls = [
        faults.route(f"/d{i}.txt", lambda req: req.reply(200, req.path.encode())) for i in range(4)
    ]
    urls.append(faults.route("/missing.txt", lambda req: req.reply(404, b"no\n")))
    seen: list[FetchResult | FetchFailure] = []

    results = fetch_many(store.root, urls, jobs=2, opts=fast(), on_done=seen.append)

    assert len(seen) == 5
    assert sorted(map(id, seen)) == sorted(map(id, results))


def test_a_cut_mid_body_resumes_with_range(faults: FaultServer, store: Store):
    body = noise(3 << 20)
    url = faults.route("/big.bin", Resource(body, etag='"b1"', drops={1: 1_000_000}))

    (result,) = fetch_many(store.root, [url], opts=fast())

    assert ok(result).object == sha256(body)
    assert result.record["resumes"] == 1
    second = faults.seen("/big.bin", "GET")[1]
    match = re.fullmatch(r"bytes=(\d+)-", second.header("range") or "")
    assert match and 0 < int(match.group(1)) <= 1_000_000
    assert second.header("if-range") == '"b1"'
    assert store.read(result.object) == body
    assert list(store.tmp.iterdir()) == []


def test_500_then_200_is_retried(faults: FaultServer, store: Store):
    body = b"after a hiccup\n" * 50

    def flaky(req: Request) -> None:
        if req.n == 1:
            req.reply(500, b"internal error\n")
        else:
            req.reply(200, body)

    (result,) = fetch_many(store.root, [faults.route("/flaky.txt", flaky)], opts=fast())

    assert ok(result).record["retries"] == 1
    assert result.object == sha256(body)


def test_a_corrupt_stream_is_refused_with_no_trace(faults: FaultServer, store: Store):
    gz = gzip.compress(b'{"a": 1}\n' * 5000, mtime=0)

    def truncated(req: Request) -> None:
        req.reply(200, gz[: len(gz) * 2 // 3], length=False)

    (result,) = fetch_many(store.root, [faults.route("/cut.json.gz", truncated)], opts=fast())

    assert isinstance(result, FetchFailure)
    assert "stream check failed" in result.error
    assert_no_trace(store.root)


def test_max_size_stops_a_body_without_content_length(faults: FaultServer, store: Store):
    body = noise(200_000, seed=3)
    url = faults.route("/big.bin", lambda req: req.reply(200, body, length=False))

    (result,) = fetch_many(store.root, [url], opts=fast(), max_size=100_000)

    assert isinstance(result, FetchFailure)
    assert "--max-size" in result.error
    assert_no_trace(store.root)


def test_each_source_sends_only_its_own_credentials(faults: FaultServer, store: Store):
    # One client serves every source: a header of one must never ride along with another.
    seen: dict[str, str | None] = {}

    def record(req: Request) -> None:
        seen[req.path] = req.header("authorization")
        req.reply(200, req.path.encode())

    for name, var in (("a", "AUTH_A"), ("b", "AUTH_B"), ("c", None)):
        url = faults.route(f"/{name}.txt", record)
        headers = {"Authorization": var} if var else {}
        store.sources.add(Source(id=name, url=url, headers_env=headers))
    env = {"AUTH_A": "Bearer alpha", "AUTH_B": "Bearer beta"}

    results = fetch_many(store.root, ["a", "b", "c"], jobs=3, opts=fast(), env=env)

    assert all(isinstance(r, FetchResult) for r in results), results
    assert seen == {"/a.txt": "Bearer alpha", "/b.txt": "Bearer beta", "/c.txt": None}


def test_a_cookie_one_source_gets_never_goes_to_another(faults: FaultServer, store: Store):
    # The sources share connections, not cookies: a session one source's server sets
    # must not go with another source's requests to the same host.
    cookies: dict[str, str | None] = {}

    def login(req: Request) -> None:
        cookies[req.path] = req.header("cookie")
        req.reply(200, b"a\n", {"Set-Cookie": "session=alpha-secret; Path=/"})

    def plain(req: Request) -> None:
        cookies[req.path] = req.header("cookie")
        req.reply(200, b"b\n")

    urls = [faults.route("/a.txt", login), faults.route("/b.txt", plain)]

    results = fetch_many(store.root, urls, jobs=1, opts=fast())

    assert [ok(r).status for r in results] == ["downloaded", "downloaded"]
    assert cookies["/a.txt"] == "session=alpha-secret"  # its own, from its HEAD
    assert cookies["/b.txt"] is None


def test_a_cookie_set_on_a_redirect_goes_with_that_sources_next_hop(faults, store: Store):
    # Each fetch keeps its own cookies: a portal that sets a session on its redirect
    # still works in a batch.
    body = b"behind the portal\n"

    def portal(req: Request) -> None:
        req.reply(302, b"", {"Location": "/file.bin", "Set-Cookie": "s=1; Path=/"})

    def guarded_file(req: Request) -> None:
        if req.header("cookie") == "s=1":
            req.reply(200, body)
        else:
            req.reply(403, b"no session\n")

    faults.route("/file.bin", guarded_file)
    (result,) = fetch_many(store.root, [faults.route("/portal", portal)], opts=fast())

    assert ok(result).object == sha256(body)


def test_a_second_round_is_one_conditional_get_each(faults: FaultServer, store: Store):
    resources = {f"/s{i}.json": Resource(f"[{i}]\n".encode(), etag=f'"e{i}"') for i in range(5)}
    urls = [faults.route(path, res) for path, res in resources.items()]

    first = fetch_many(store.root, urls, jobs=5, opts=fast())
    again = fetch_many(store.root, urls, jobs=5, opts=fast())

    assert [ok(r).status for r in first] == ["downloaded"] * 5
    assert [(ok(r).status, r.not_modified) for r in again] == [("unchanged", True)] * 5
    for i, path in enumerate(resources):
        # a new URL is probed with HEAD first; a known one goes straight to the GET
        assert [r.method for r in faults.seen(path)] == ["HEAD", "GET", "GET"]
        assert faults.seen(path, "GET")[1].header("if-none-match") == f'"e{i}"'


def test_records_carry_the_callers_pipeline_link(faults: FaultServer, store: Store):
    # The link lives in a context variable: it must reach the worker threads that write
    # the records, through the event loop.
    url = faults.route("/linked.txt", lambda req: req.reply(200, b"linked\n"))
    link = PipelineLink(run_id="r-1", step_id="s-1")

    with linked(link):
        (result,) = fetch_many(store.root, [url], opts=fast())

    assert ok(result).record["pipeline"] == {"run_id": "r-1", "step_id": "s-1"}


@pytest.mark.parametrize("jobs", [1, 3])
def test_same_source_twice_downloads_once(faults: FaultServer, store: Store, jobs: int):
    body = b"shared\n" * 1000
    url = faults.route("/shared.bin", Resource(body, etag='"s"'))

    results = fetch_many(store.root, [url, url], jobs=jobs, opts=fast())

    assert sorted(ok(r).status for r in results) == ["downloaded", "unchanged"]
    assert len(faults.seen("/shared.bin", "GET")) == 2
    assert len(store.records(sha256(body))) == 1
