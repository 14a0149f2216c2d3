"""Real servers on 127.0.0.1 for the fetch tests: nginx, and a programmable fault server.

* ``nginx``: the Debian package's binary with a config written here (one process, every
  path inside a temporary directory, ``etag on``, no gzip), so ETag, Last-Modified, 304,
  Range and If-Range behave as a real server does them.
* ``faults``: a ``ThreadingHTTPServer`` in a thread; a test registers one handler per
  path. Every response carries ``Connection: close`` (one request per connection, so a
  connection cut mid-body never confuses the next request), and every request is
  recorded, so tests can assert what the client actually sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# ---------------------------------------------------------------------------------------
# shared helpers


@pytest.fixture(autouse=True)
def _no_netrc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads $NETRC or ~/.netrc: a developer's real one must not change a test."""
    monkeypatch.setenv("NETRC", str(tmp_path / "no-such-netrc"))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store_files(root: Path) -> dict[str, bytes]:
    """``{relative path: bytes}`` of every file under a store (index and locks included)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def object_ids(root: Path) -> set[str]:
    """Ids of the object files under ``root/objects`` (records and their dirs left out)."""
    out = set()
    objects = root / "objects"
    for head in objects.iterdir():
        for entry in head.iterdir():
            if entry.is_file():
                out.add(head.name + entry.name.removesuffix(".zst"))
    return out


def source_refs(root: Path) -> list[str]:
    """Every file under ``refs/sources`` (ref names, relative)."""
    base = root / "refs" / "sources"
    if not base.exists():
        return []
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


def assert_no_trace(root: Path) -> None:
    """A refused fetch into a fresh store left nothing: no objects, no temp files, no ref."""
    assert object_ids(root) == set(), "a refused fetch left an object"
    assert list((root / "objects").rglob("*.json")) == [], "a refused fetch left a record"
    assert sorted((root / "tmp").iterdir()) == [], "a refused fetch left a temporary file"
    assert source_refs(root) == [], "a refused fetch moved a source ref"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 10.0) -> bool:
    """Poll until something accepts on 127.0.0.1:port (False if ``proc`` died or time ran out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.02)
    return False


# ---------------------------------------------------------------------------------------
# nginx

NGINX_CONF = """\
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp/client_body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    types {{
        application/json json;
        text/csv csv;
        application/gzip gz;
        text/plain txt;
    }}
    default_type application/octet-stream;
    sendfile on;
    etag on;
    gzip off;
    keepalive_timeout 30s;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {docroot};
        location / {{ }}
    }}
}}
"""


def _nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


@dataclass
class Nginx:
    base_url: str
    docroot: Path
    access_log: Path

    def site(self) -> tuple[str, Path]:
        """A fresh directory under the docroot: ``(its base URL, its path)``."""
        name = uuid.uuid4().hex[:12]
        path = self.docroot / name
        path.mkdir()
        return f"{self.base_url}/{name}", path

    def log_lines(self) -> list[str]:
        return self.access_log.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="session")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """A real nginx serving a temporary docroot on a free loopback port.

    Access log format (nginx's default ``combined``) is ``… "GET /path HTTP/1.1" 304 …``.
    """
    binary = _nginx_binary()
    if binary is None:
        reason = "nginx is not installed (apt-get install nginx-light or nginx)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("nginx")
    docroot = base / "www"
    docroot.mkdir()
    (base / "tmp").mkdir()
    # nginx runs in one process as the current user (master_process off), so it reads the
    # docroot whatever pytest's temp directories' permissions are.
    base.chmod(0o755)
    proc = None
    for _attempt in range(5):  # the free port may be taken between probing and binding
        port = free_port()
        conf = base / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=base, port=port, docroot=docroot))
        proc = subprocess.Popen(
            [binary, "-p", base, "-c", conf, "-e", base / "error.log", "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if wait_for_port(port, proc):
            break
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        _, err = proc.communicate(timeout=10)
        last_error = err.decode(errors="replace")
        proc = None
    if proc is None:
        pytest.fail(f"nginx did not start: {last_error}")
    try:
        yield Nginx(f"http://127.0.0.1:{port}", docroot, base / "access.log")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


# ---------------------------------------------------------------------------------------
# the fault server


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Request:
    """What a route handler gets: the request, and ways to answer (or misbehave)."""

    def __init__(self, handler: BaseHTTPRequestHandler, server: FaultServer, seen: Seen, n: int):
        self._h = handler
        self.server = server
        self.seen = seen
        self.method = seen.method
        self.path = seen.path
        self.n = n  # 1 for the first request of its method to this path, 2 for the second…
        self.sent = 0  # body bytes the socket accepted

    def header(self, name: str) -> str | None:
        return self.seen.header(name)

    def start(self, status: int, headers: dict[str, str] | None = None) -> None:
        """Status line and headers (plus ``Connection: close``)."""
        h = self._h
        h.send_response_only(status)
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.flush()

    def write(self, data: bytes) -> None:
        """Body bytes; counts what the client's socket accepted."""
        if self.method == "HEAD" or not data:
            return
        self._h.wfile.write(data)
        self.sent += len(data)

    def reply(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        length: bool | int = True,
    ) -> None:
        """A whole response. ``length``: True (the true Content-Length), an int (a lie), or
        False (no Content-Length: the body ends when the connection closes)."""
        headers = dict(headers or {})
        if length is True:
            headers["Content-Length"] = str(len(body))
        elif length is not False:
            headers["Content-Length"] = str(length)
        self.start(status, headers)
        self.write(body)

    def stream(self, pieces: Iterable[bytes]) -> None:
        """Write pieces until done or the client goes away (``self.sent`` says how far)."""
        with contextlib.suppress(OSError):
            for piece in pieces:
                self.write(piece)

    def drop(self) -> None:
        """Cut the connection now (mid-body, if a body was announced)."""
        self._h.close_connection = True
        with contextlib.suppress(OSError):
            self._h.connection.shutdown(socket.SHUT_RDWR)


Handler = Callable[[Request], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _handle(self) -> None:
        fs = self.server.fault
        path = self.path.split("?", 1)[0]
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
        with fs.lock:
            fs.requests.append(seen)
            n = sum(
                1
                for r in fs.requests
                if r.path.split("?", 1)[0] == path and r.method == seen.method
            )
            route = fs.routes.get(path)
            fs.active += 1
        req = Request(self, fs, seen, n)
        try:
            if route is None:
                req.reply(404, b"no route\n")
            else:
                route(req)
        except OSError:
            pass  # the client went away: part of several scenarios
        except Exception as exc:  # a broken handler must fail the test, not hang it
            fs.errors.append(exc)
        finally:
            self.close_connection = True
            with fs.lock:
                fs.active -= 1
                fs.done.notify_all()

    do_GET = do_HEAD = do_POST = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fault: FaultServer


@dataclass
class FaultServer:
    """A loopback HTTP server whose behaviour each test programs per path."""

    base_url: str = ""
    routes: dict[str, Handler] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.done = threading.Condition(self.lock)

    def route(self, path: str, handler: Handler) -> str:
        """Serve ``path`` with ``handler``; returns the full URL."""
        self.routes[path] = handler
        return self.base_url + path

    def url(self, path: str) -> str:
        return self.base_url + path

    def seen(self, path: str, method: str | None = None) -> list[Seen]:
        """Requests to ``path`` (query ignored), optionally of one method only."""
        with self.lock:
            return [
                r
                for r in self.requests
                if r.path.split("?", 1)[0] == path and (method is None or r.method == method)
            ]

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Until every handler has returned (a handler may still be writing when the
        client already gave up)."""
        with self.lock:
            assert self.done.wait_for(lambda: self.active == 0, timeout), "server still busy"

    def pause(self, seconds: float) -> bool:
        """Wait inside a handler; cut short when the server stops. True when stopping."""
        return self.stopping.wait(seconds)


@pytest.fixture
def faults() -> Iterator[FaultServer]:
    """A programmable server on 127.0.0.1 (a fresh one per test)."""
    fs = FaultServer()
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fault = fs
    fs.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield fs
    finally:
        fs.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert not fs.errors, f"a route handler failed: {fs.errors!r}"


# ---------------------------------------------------------------------------------------
# a well-behaved resource, with knobs for misbehaviour


def http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


@dataclass
class Resource:
    """A static file as a careful server serves it: HEAD, ETag, Last-Modified, 304, Range
    with If-Range, and knobs to break each of those.

    ``drops``: for the n-th full-body GET (1-based), cut the connection after that many
    body bytes. ``body`` and ``etag`` may be reassigned between requests (a resource
    that changes).
    """

    body: bytes
    etag: str | None = None  # as sent, e.g. '"v1"' or 'W/"v1"'
    last_modified: str | None = None
    ranges: bool = True  # honour Range (else: answer 200 with the whole body)
    head_status: int | None = None  # e.g. 405: HEAD refused
    headers: dict[str, str] = field(default_factory=dict)
    drops: dict[int, int] = field(default_factory=dict)
    on_drop: Callable[[Resource], None] | None = None  # called right after a drop
    gets: int = 0

    def __call__(self, req: Request) -> None:
        if req.method == "HEAD" and self.head_status is not None:
            req.reply(self.head_status, b"")
            return
        headers = dict(self.headers)
        if self.etag:
            headers["ETag"] = self.etag
        if self.last_modified:
            headers["Last-Modified"] = self.last_modified
        if self.ranges:
            headers["Accept-Ranges"] = "bytes"
        inm = req.header("if-none-match")
        if inm is not None and self.etag and _weak_eq(inm, self.etag):
            req.reply(304, b"", headers, length=False)
            return
        ims = req.header("if-modified-since")
        if inm is None and ims is not None and ims == self.last_modified:
            req.reply(304, b"", headers, length=False)
            return
        rng = req.header("range")
        if rng and self.ranges and self._if_range_ok(req.header("if-range")):
            start, end = _parse_range(rng, len(self.body))
            if start >= len(self.body):
                req.reply(416, b"", {"Content-Range": f"bytes */{len(self.body)}"})
                return
            part = self.body[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(self.body)}"
            req.reply(206, part, headers)
            return
        if req.method == "GET":
            self.gets += 1
            cut = self.drops.get(self.gets)
            if cut is not None:
                req.start(200, {**headers, "Content-Length": str(len(self.body))})
                req.write(self.body[:cut])
                req.drop()
                if self.on_drop is not None:
                    self.on_drop(self)
                return
        req.reply(200, self.body, headers)

    def _if_range_ok(self, if_range: str | None) -> bool:
        if if_range is None:
            return True
        if if_range.startswith('"'):
            return self.etag is not None and if_range == self.etag  # strong comparison
        return if_range == self.last_modified


def _weak_eq(header: str, etag: str) -> bool:
    strip = [t.strip().removeprefix("W/") for t in header.split(",")]
    return etag.removeprefix("W/") in strip or "*" in strip


def _parse_range(value: str, size: int) -> tuple[int, int]:
    spec = value.split("=", 1)[1].split(",", 1)[0].strip()
    first, _, last = spec.partition("-")
    start = int(first)
    end = int(last) if last else size - 1
    return start, min(end, size - 1)


# ---------------------------------------------------------------------------------------
# a proxy that cuts a connection, to make a real server's response break mid-body


class CuttingProxy:
    """A TCP relay on 127.0.0.1 to ``upstream_port``. The first ``len(cuts)`` connections
    are cut after that many bytes of response (``on_cut`` runs before the client sees
    the cut); later connections are relayed whole. ``requests`` keeps each connection's
    request bytes."""

    def __init__(self, upstream_port: int, cuts: list[int], on_cut: Callable[[], None] | None):
        self.upstream_port = upstream_port
        self.cuts = list(cuts)
        self.on_cut = on_cut
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            budget = self.cuts.pop(0) if self.cuts else None
            index = len(self.requests)
            self.requests.append(b"")
            t = threading.Thread(target=self._relay, args=(client, budget, index), daemon=True)
            t.start()
            self._threads.append(t)

    def _relay(self, client: socket.socket, budget: int | None, index: int) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))

        def up() -> None:
            with contextlib.suppress(OSError):
                while data := client.recv(65536):
                    self.requests[index] += data
                    upstream.sendall(data)
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)

        pump = threading.Thread(target=up, daemon=True)
        pump.start()
        try:
            left = budget
            while data := upstream.recv(65536):
                if left is not None and len(data) >= left:
                    client.sendall(data[:left])
                    if self.on_cut is not None:
                        self.on_cut()
                    break
                client.sendall(data)
                if left is not None:
                    left -= len(data)
        except OSError:
            pass
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            pump.join(5)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # wakes the blocked accept() on Linux
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._accept.join(5)
        for t in self._threads:
            t.join(5)


@pytest.fixture
def cutting_proxy(nginx: Nginx) -> Iterator[Callable[..., CuttingProxy]]:
    """``cutting_proxy(cuts=[n], on_cut=fn)``: a proxy to nginx that breaks responses."""
    made: list[CuttingProxy] = []
    port = int(nginx.base_url.rsplit(":", 1)[1])

    def make(cuts: list[int], on_cut: Callable[[], None] | None = None) -> CuttingProxy:
        proxy = CuttingProxy(port, cuts, on_cut)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()
        assert not proxy.errors, proxy.errors
