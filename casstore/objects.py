"""Object bytes on disk: the single-pass write, the zstd policy, and reading back.

An object lives at ``objects/ab/cdef…`` (raw) or ``objects/ab/cdef….zst`` (one zstd
frame); exactly one of the two is expected, and readers always get the original bytes.

Writing reads the input once: each chunk is hashed (SHA-256 in a helper thread, BLAKE3
inline), compressed or not, and written to a temp file in ``tmp/``; only when the id is
known is the file renamed into place. Two buffers are reused for the whole stream, so memory
stays constant whatever the size.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import mmap
import os
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import blake3
import zstandard

from casstore import _fs
from casstore.errors import IntegrityError, ObjectNotFound
from casstore.formats import is_compressed
from casstore.hashing import Digests, StreamHasher
from casstore.ids import check_object_id, is_prefix, object_path_str

CompressionPolicy = Literal["auto", "zstd", "none"]
Compression = Literal["none", "zstd"]

CHUNK = 1024 * 1024
# auto: zstd must save at least this fraction of the first chunk to be used.
_MIN_SAVING = 0.10
ZSTD_SUFFIX = ".zst"
# stat errors that mean "no such file here", as Path.is_file reads them
_ABSENT = frozenset((errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP))
_RING = 4  # buffers an ObjectWriter cycles through

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class StoredObject:
    """What a write produced."""

    id: str
    size: int
    stored_size: int
    compression: Compression
    blake3: str
    md5: str | None
    new: bool


class _Sink:
    """Where chunks of a large input go: a raw file, or a zstd stream over it.

    The choice is made on the first chunk (see :func:`_choose`), so the input is read once.
    """

    def __init__(
        self,
        fd: int,
        policy: CompressionPolicy,
        cctx: zstandard.ZstdCompressor,
        size_hint: int | None = None,
    ) -> None:
        self.file = io.FileIO(fd, "wb", closefd=True)
        self.policy = policy
        self.cctx = cctx
        self.compression: Compression | None = None
        self._zobj: zstandard.ZstdCompressionObj | None = None
        self._hint = size_hint  # the input's size when known: raw output is reserved
        self._reserved = False
        self._pos = 0  # raw bytes written so far
        self._direct = False  # O_DIRECT is on for the file now
        self._direct_ok = True  # until the filesystem refuses it

    def write(self, chunk: memoryview) -> None:
        if self.compression is None:
            self.compression = "none"
            if _worth_trying(self.policy, chunk):
                zobj = self.cctx.compressobj()
                out = zobj.compress(chunk) + zobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
                if self.policy == "zstd" or len(out) <= len(chunk) * (1 - _MIN_SAVING):
                    self.compression = "zstd"
                    self._zobj = zobj
                    _fs.write_all(self.file.fileno(), out)
                    return
        if self._zobj is not None:
            out = self._zobj.compress(chunk)
            if out:
                _fs.write_all(self.file.fileno(), out)
        else:
            if self._hint is not None and not self._reserved and self._hint > CHUNK:
                # Raw output: it will be as long as the input (see _fs.preallocate).
                self._reserved = _fs.preallocate(self.file.fileno(), self._hint)
            self._write_raw(chunk)

    def _write_raw(self, chunk: memoryview) -> None:
        """Raw bytes to the file: with ``O_DIRECT`` when the piece allows it.

        Whole aligned pieces (the writers' 1 MiB page-aligned buffers) go straight to the
        disk (see :func:`_fs.set_direct`); the last, shorter piece, and everything on a
        filesystem that refuses ``O_DIRECT``, through the page cache. The bytes on disk
        are the same either way, and they are made durable (an fsync, or the batch's
        barrier) before anything points at the object.
        """
        fd = self.file.fileno()
        view = chunk
        while view:
            direct = (
                self._direct_ok
                and len(view) % _fs.DIRECT_ALIGN == 0
                and self._pos % _fs.DIRECT_ALIGN == 0
                and _fs.is_aligned(view)
            )
            if direct != self._direct and not _fs.set_direct(fd, direct):
                if not direct:  # O_DIRECT would not come off: no unaligned write can go
                    raise OSError(errno.EINVAL, "cannot turn O_DIRECT off for an object file")
                self._direct_ok = direct = False
            self._direct = direct
            try:
                n = os.write(fd, view)
            except OSError as exc:
                if exc.errno != errno.EINVAL or not direct:
                    raise
                self._direct_ok = False  # refused after all: the page cache from now on
                continue
            view = view[n:]
            self._pos += n

    def close(self) -> int:
        if self._zobj is not None:
            _fs.write_all(self.file.fileno(), self._zobj.flush())
        size = self.file.tell()
        if self._reserved:
            os.ftruncate(self.file.fileno(), size)  # frees what was reserved and not used
        self.file.close()
        return size


def _input_size(reader: object) -> int | None:
    """The size of a regular file being read, else None (a pipe, a socket, a stream)."""
    fd = reader.fd if isinstance(reader, FdReader) else None
    if fd is None:
        try:
            fd = reader.fileno()  # type: ignore[attr-defined]
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        return st.st_size - os.lseek(fd, 0, os.SEEK_CUR)  # what is left to read
    except (OSError, TypeError, ValueError):
        return None


def _worth_trying(policy: CompressionPolicy, head: memoryview) -> bool:
    """Whether zstd should be tried at all: not under ``none``, not on compressed formats."""
    if policy == "none":
        return False
    return policy == "zstd" or not is_compressed(bytes(head[:16]))


def _check_expected(actual: str, expected: str | None) -> None:
    if expected is not None and actual != expected:
        raise IntegrityError(
            f"content hashes to {actual}, expected {expected}",
            what="sha256",
            expected=expected,
            actual=actual,
        )


class FdReader:
    """The read side of an open file descriptor, for :meth:`ObjectStore.write`.

    Reads go straight to ``readv(2)`` into the caller's buffer: no ``fstat``, ``ioctl`` or
    ``lseek`` of the kind opening a Python file object makes. Reading a directory raises
    :class:`IsADirectoryError`. The caller owns (and closes) the descriptor.
    """

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def readinto(self, buf: memoryview | bytearray) -> int:
        return os.readv(self.fd, [buf])


def _readinto(reader: BinaryIO | FdReader, buf: bytearray | mmap.mmap) -> int:
    """Fill ``buf`` as far as the stream allows (pipes return short reads)."""
    view = memoryview(buf)
    got = 0
    readinto = getattr(reader, "readinto", None)
    while got < len(buf):
        if readinto is not None:
            n = readinto(view[got:])
        else:
            data = reader.read(len(buf) - got)
            n = len(data)
            view[got : got + n] = data
        if not n:
            break
        got += n
    return got


class _ThreadState:
    """What one thread reuses across writes: two 1 MiB buffers and two zstd contexts."""

    def __init__(self, level: int) -> None:
        # page-aligned, so that whole pieces can be written with O_DIRECT
        self.bufs = (_fs.aligned_buffer(CHUNK), _fs.aligned_buffer(CHUNK))
        self.cctx = zstandard.ZstdCompressor(level=level, write_checksum=True)
        # Large inputs: zstd's own worker threads on every core (measured here: 1 GiB of
        # JSON-lines at level 3 compresses in about half the time with 2 threads).
        self.cctx_mt = zstandard.ZstdCompressor(level=level, write_checksum=True, threads=-1)


class ObjectStore:
    """The ``objects/`` directory of a store."""

    def __init__(
        self, objects_dir: Path, tmp_dir: Path, policy: CompressionPolicy = "auto", level: int = 3
    ) -> None:
        self.dir = objects_dir
        self.tmp = tmp_dir
        # The same as strings: the per-file write path builds no Path objects.
        self._dir = os.fspath(objects_dir)
        self._tmp = os.fspath(tmp_dir)
        self.policy = policy
        self.level = level
        # Buffers and zstd contexts are reused from one write to the next, one set per
        # thread, so several threads may write at once (``Store.add_many`` does).
        self._tls = threading.local()

    def _mine(self) -> _ThreadState:
        state: _ThreadState | None = getattr(self._tls, "state", None)
        if state is None:
            state = self._tls.state = _ThreadState(self.level)
        return state

    # ---- locating -------------------------------------------------------------------
    def locate(self, object_id: str) -> tuple[Path, Compression] | None:
        """The file holding an object and how it is stored, or None when absent."""
        found = self._find(object_id)
        return None if found is None else (Path(found[0]), found[1])

    def _find(self, object_id: str) -> tuple[str, Compression, int] | None:
        """:meth:`locate` with a string path and the file's size: one ``stat`` per form."""
        raw = object_path_str(self._dir, object_id)
        forms: tuple[tuple[str, Compression], ...] = ((raw, "none"), (raw + ZSTD_SUFFIX, "zstd"))
        for path, compression in forms:
            try:
                st = os.stat(path)
            except OSError as exc:
                if exc.errno in _ABSENT:
                    continue
                raise
            if stat.S_ISREG(st.st_mode):
                return path, compression, st.st_size
        return None

    def exists(self, object_id: str) -> bool:
        """True when the object's bytes are present."""
        return self.locate(object_id) is not None

    def ids(self) -> Iterator[str]:
        """Every object id present, in sorted order."""
        try:
            heads = sorted(e.name for e in os.scandir(self.dir) if e.is_dir())
        except FileNotFoundError:
            return
        for head in heads:
            if len(head) != 2:
                continue
            names = set()
            for entry in os.scandir(self.dir / head):
                name = entry.name
                if name.endswith(ZSTD_SUFFIX):
                    name = name[: -len(ZSTD_SUFFIX)]
                if len(name) == 62 and entry.is_file():
                    names.add(head + name)
            yield from (n for n in sorted(names) if is_prefix(n) and len(n) == 64)

    def match_prefix(self, prefix: str) -> list[str]:
        """Ids starting with ``prefix`` (at least 2 hex digits), sorted."""
        head = self.dir / prefix[:2]
        found = set()
        rest = prefix[2:]
        try:
            entries = list(os.scandir(head))
        except (FileNotFoundError, NotADirectoryError):
            return []
        for entry in entries:
            name = entry.name
            if name.endswith(ZSTD_SUFFIX):
                name = name[: -len(ZSTD_SUFFIX)]
            if len(name) == 62 and name.startswith(rest) and entry.is_file():
                oid = prefix[:2] + name
                if is_prefix(oid):
                    found.add(oid)
        return sorted(found)

    def stored_size(self, object_id: str) -> int:
        """Bytes the object takes on disk."""
        where = self._find(object_id)
        if where is None:
            raise ObjectNotFound(f"object {object_id} not found")
        return where[2]

    # ---- writing --------------------------------------------------------------------
    def write(
        self,
        reader: BinaryIO | FdReader,
        *,
        expected: str | None = None,
        md5: bool = False,
        durable: bool = True,
        progress: ProgressFn | None = None,
    ) -> StoredObject:
        """Store a stream in one pass and return what was stored.

        ``expected`` is an id the bytes must hash to (else :class:`IntegrityError`, and
        nothing is stored). With ``durable=False`` the caller owes a :func:`_fs.syncfs`
        barrier before anything points at the object. Each thread reuses its own
        buffers and zstd contexts from one write to the next.
        """
        first = self._mine().bufs[0]
        n = _readinto(reader, first)
        if n < CHUNK:  # the whole input is in hand: hash first, write only if new
            if progress is not None and n:
                progress(n)
            return self._write_small(memoryview(first)[:n], expected, md5, durable)
        size = _input_size(reader)
        fd, tmp = _fs.make_temp_str(self._tmp, "obj")
        sink = _Sink(fd, self.policy, self._mine().cctx_mt, size)
        hasher = StreamHasher(md5=md5)
        try:
            digests, stored_size = self._pump(reader, n, sink, hasher, progress)
            _check_expected(digests.sha256, expected)
            return self._place(tmp, digests, sink.compression or "none", stored_size, durable)
        except BaseException:
            hasher.close()
            with contextlib.suppress(OSError):
                sink.file.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _write_small(
        self, data: memoryview, expected: str | None, md5: bool, durable: bool
    ) -> StoredObject:
        oid = hashlib.sha256(data).hexdigest()
        _check_expected(oid, expected)
        b3 = blake3.blake3(data).hexdigest()
        m5 = hashlib.md5(data, usedforsecurity=False).hexdigest() if md5 else None
        size = len(data)
        existing = self._find(oid)
        if existing is not None:
            _fs.touch(existing[0])
            return StoredObject(oid, size, existing[2], existing[1], b3, m5, False)
        payload: bytes | memoryview = data
        compression: Compression = "none"
        if size and _worth_trying(self.policy, data):
            packed = self._mine().cctx.compress(data)
            if self.policy == "zstd" or len(packed) <= size * (1 - _MIN_SAVING):
                payload, compression = packed, "zstd"
        fd, tmp = _fs.make_temp_str(self._tmp, "obj", mode=0o444)
        try:
            try:
                _fs.write_all(fd, payload)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            self._publish(tmp, oid, compression, durable)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return StoredObject(oid, size, len(payload), compression, b3, m5, True)

    def _pump(
        self,
        reader: BinaryIO | FdReader,
        n: int,
        sink: _Sink,
        hasher: StreamHasher,
        progress: ProgressFn | None,
    ) -> tuple[Digests, int]:
        """Hash and write chunks until the input ends; ``bufs[0]`` already holds ``n`` bytes."""
        bufs = self._mine().bufs
        i = 0
        while n:
            view = memoryview(bufs[i])[:n]
            hasher.update(view)
            sink.write(view)
            if progress is not None:
                progress(n)
            if n < CHUNK:
                break
            i ^= 1
            # The helper thread may still hash bufs[i ^ 1]; bufs[i] is free.
            n = _readinto(reader, bufs[i])
        digests = hasher.finish()
        return digests, sink.close()

    def _place(
        self,
        tmp: _fs.StrPath,
        digests: Digests,
        compression: Compression,
        stored_size: int,
        durable: bool,
    ) -> StoredObject:
        oid = digests.sha256
        existing = self._find(oid)
        if existing is not None:
            os.unlink(tmp)
            _fs.touch(existing[0])
            return StoredObject(
                oid,
                digests.size,
                existing[2],
                existing[1],
                digests.blake3,
                digests.md5,
                False,
            )
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.chmod(tmp, 0o444)  # objects are immutable; the mode says so
        self._publish(tmp, oid, compression, durable)
        return StoredObject(
            oid, digests.size, stored_size, compression, digests.blake3, digests.md5, True
        )

    def _publish(self, tmp: _fs.StrPath, oid: str, compression: Compression, durable: bool) -> None:
        final = object_path_str(self._dir, oid)
        if compression == "zstd":
            final += ZSTD_SUFFIX
        _fs.publish(tmp, final)
        if durable:
            _fs.fsync_dir(os.path.dirname(final))

    def writer(
        self,
        *,
        md5: bool = False,
        progress: ProgressFn | None = None,
        observer: Callable[[memoryview], None] | None = None,
        size_hint: int | None = None,
    ) -> ObjectWriter:
        """A push-style writer for bytes that arrive in pieces (a download)."""
        return ObjectWriter(
            self, md5=md5, progress=progress, observer=observer, size_hint=size_hint
        )

    # ---- reading --------------------------------------------------------------------
    def open(self, object_id: str) -> BinaryIO:
        """A binary stream of the object's original bytes."""
        check_object_id(object_id)
        where = self.locate(object_id)
        if where is None:
            raise ObjectNotFound(f"object {object_id} not found")
        path, compression = where
        raw = open(path, "rb", buffering=0)  # noqa: SIM115 - returned to the caller
        _fs.read_ahead(raw.fileno())
        if compression == "none":
            return raw
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_size=CHUNK, closefd=True)
        return io.BufferedReader(reader, buffer_size=CHUNK)  # type: ignore[arg-type]

    def copy_to(self, object_id: str, out: BinaryIO) -> int:
        """Stream the object's original bytes into ``out``; return the byte count.

        Raises:
            IntegrityError: a stored zstd frame that does not decode.
        """
        total = 0
        view = memoryview(self._mine().bufs[0])
        with self.open(object_id) as src:
            while True:
                try:
                    n = src.readinto(view)
                except zstandard.ZstdError as exc:
                    raise corrupt(object_id, exc) from exc
                if not n:
                    break
                out.write(view[:n])
                total += n
        return total


def corrupt(object_id: str, exc: Exception) -> IntegrityError:
    """The error for an object whose stored bytes cannot be decoded."""
    return IntegrityError(
        f"object {object_id} is corrupt: its zstd frame does not decode ({exc}); run 'cas verify'",
        what="zstd",
    )


class ObjectWriter:
    """Bytes pushed in pieces of any size, stored in one pass, like :meth:`ObjectStore.write`.

    Pieces are gathered into the store's two reusable 1 MiB buffers. Each full buffer goes
    to three single-thread workers at once: SHA-256; BLAKE3 (and MD5) plus the file write;
    and an optional ``observer`` (a format checker). All of them release the GIL, so the
    caller's thread is left with reading the network. A buffer is refilled only after its
    three jobs are done, and each worker sees buffers in order.

    :meth:`restart` drops everything received (a server that answers a resume with the
    whole body); :meth:`finish` then :meth:`place` name and place the object;
    :meth:`abort` leaves nothing.
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        md5: bool,
        progress: ProgressFn | None,
        observer: Callable[[memoryview], None] | None = None,
        size_hint: int | None = None,
    ) -> None:
        self.store = store
        self.md5 = md5
        self.progress = progress
        self.observer = observer
        self.size_hint = size_hint  # expected bytes (a Content-Length): disk is reserved
        self._workers = [ThreadPoolExecutor(1, thread_name_prefix="cas-write") for _ in range(3)]
        # A ring of buffers gives the workers slack while the caller keeps reading.
        self._bufs = [_fs.aligned_buffer(CHUNK) for _ in range(_RING)]
        self._open()

    def _open(self) -> None:
        fd, self.tmp = _fs.make_temp(self.store.tmp, "dl")
        # A compressor of its own: writers made on one thread may be fed from several.
        cctx = zstandard.ZstdCompressor(level=self.store.level, write_checksum=True, threads=-1)
        self.sink = _Sink(fd, self.store.policy, cctx, self.size_hint)
        self._sha = hashlib.sha256()
        self._b3 = blake3.blake3()
        self._m5 = hashlib.md5(usedforsecurity=False) if self.md5 else None
        self._pending: list[list[Future[None]]] = [[] for _ in range(_RING)]
        self._i = 0
        self._fill = 0
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        """Take the next piece."""
        view = memoryview(data)
        while view:
            buf = self._bufs[self._i]
            k = min(CHUNK - self._fill, len(view))
            buf[self._fill : self._fill + k] = view[:k]
            self._fill += k
            view = view[k:]
            if self._fill == CHUNK:
                self._flush()

    def read_from(self, readinto: Callable[[memoryview], int], n: int) -> int:
        """Take up to ``n`` bytes from ``readinto`` (``socket.recv_into``, say), read straight
        into the buffers: no piece objects and no copy. Returns how many bytes came, fewer
        than ``n`` only when ``readinto`` reported the end (0). Bytes read before an error
        count, and stay in the buffers, as if they had been written.
        """
        got = 0
        while got < n:
            view = memoryview(self._bufs[self._i])[self._fill : CHUNK]
            k = readinto(view[: n - got])
            if not k:
                break
            self._fill += k
            got += k
            if self._fill == CHUNK:
                self._flush()
        return got

    def _io(self, chunk: memoryview) -> None:
        self._b3.update(chunk)
        if self._m5 is not None:
            self._m5.update(chunk)
        self.sink.write(chunk)

    def _flush(self) -> None:
        if not self._fill:
            return
        chunk = memoryview(self._bufs[self._i])[: self._fill]
        sha, io_, obs = self._workers
        jobs = [sha.submit(self._sha.update, chunk), io_.submit(self._io, chunk)]
        if self.observer is not None:
            jobs.append(obs.submit(self.observer, chunk))
        self._pending[self._i] = jobs
        self.size += self._fill
        if self.progress is not None:
            self.progress(self._fill)
        self._fill = 0
        self._i = (self._i + 1) % _RING
        self._wait(self._i)  # the buffer about to be refilled must be free

    def _wait(self, i: int) -> None:
        jobs, self._pending[i] = self._pending[i], []
        for job in jobs:
            job.result()  # re-raises a worker's error (a corrupt stream, a full disk)

    def _drain(self) -> None:
        """Wait for every job, raising the first error only after all have stopped."""
        errors = []
        for i in range(_RING):
            for job in self._pending[(self._i + 1 + i) % _RING]:
                try:
                    job.result()
                except BaseException as exc:
                    errors.append(exc)
            self._pending[(self._i + 1 + i) % _RING] = []
        if errors:
            raise errors[0]

    def restart(self) -> None:
        """Forget every byte received so far."""
        self._discard(keep_workers=True)
        self._open()

    def finish(self) -> Digests:
        """End of input: the digests of everything received (nothing is placed yet)."""
        try:
            self._flush()
            self._drain()
            self._stored_size = self.sink.close()
            self._digests = Digests(
                sha256=self._sha.hexdigest(),
                blake3=self._b3.hexdigest(),
                size=self.size,
                md5=self._m5.hexdigest() if self._m5 is not None else None,
            )
        except BaseException:
            self._discard()
            raise
        return self._digests

    def place(self, *, expected: str | None = None, durable: bool = True) -> StoredObject:
        """After :meth:`finish` and the caller's checks: name and place the object."""
        try:
            _check_expected(self._digests.sha256, expected)
            return self.store._place(
                self.tmp,
                self._digests,
                self.sink.compression or "none",
                self._stored_size,
                durable,
            )
        except BaseException:
            self._discard()
            raise
        finally:
            self._shutdown()

    def commit(self, *, expected: str | None = None, durable: bool = True) -> StoredObject:
        """:meth:`finish` then :meth:`place`."""
        self.finish()
        return self.place(expected=expected, durable=durable)

    def abort(self) -> None:
        """Drop the temporary file; nothing is stored."""
        self._discard()

    def _discard(self, *, keep_workers: bool = False) -> None:
        with contextlib.suppress(BaseException):
            self._drain()
        with contextlib.suppress(OSError):
            self.sink.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)
        if not keep_workers:
            self._shutdown()

    def _shutdown(self) -> None:
        for worker in self._workers:
            worker.shutdown(wait=False)
