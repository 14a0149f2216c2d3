"""The :class:`Store`: the Python API that the ``cas`` command and user pipelines share.

A store is a ``.casstore/`` directory (see ``docs/format.md``). :class:`Store` ties its
parts together (objects, records, refs, index) and owns the order of writes that keeps it
trustworthy: object bytes, then records, then a durability barrier, then the index, then
refs. It never prints, exits or reads the environment; the CLI does that.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import BrokenExecutor, Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import zstandard
from pydantic import BaseModel

from casstore import _fs
from casstore.config import StoreConfig, default_toml, load_config
from casstore.errors import (
    AmbiguousPrefix,
    InputError,
    InvalidRefName,
    ObjectNotFound,
    RefNotFound,
    StoreNotFound,
    UsageError,
    WorkerDied,
)
from casstore.ids import is_object_id, is_prefix
from casstore.index import Index, ObjectRowIn, RecordRows, record_rows
from casstore.meta.context import current_link
from casstore.objects import FdReader, ObjectStore, StoredObject, corrupt
from casstore.records import (
    DeriveRecord,
    ImportRecord,
    ManifestOrigin,
    RecordBase,
    load_records,
    record_names,
    utcnow,
    valid_records,
    write_record,
)
from casstore.refs import ANY, ReflogEntry, RefStore, RefUpdate, check_ref_name, whoami

if TYPE_CHECKING:
    from casstore import parallel
    from casstore.export import ExportResult
    from casstore.fetch import FetchResult
    from casstore.fetch.sources import SourceRegistry
    from casstore.lineage import Lineage, StaleItem
    from casstore.meta.manifest import ManifestExport, ManifestImport
    from casstore.meta.repository import EmbeddedRepository
    from casstore.meta.runs import RunHandle, RunLog
    from casstore.run import Derivation, RunResult
    from casstore.sample import SampleResult

STORE_DIRNAME = ".casstore"
# Where a bare name is looked up, in order, when it is not a full ref name.
REF_SEARCH = ("tags/", "sources/", "samples/", "")
# A batch of adds ends (barrier, index commit) after this many files or bytes.
_BATCH_FILES = 4096
_BATCH_BYTES = 256 * 1024 * 1024
_ADD_THREADS = 2  # large inputs stored at once by add_many
_ADD_WINDOW = 64  # results waiting to be yielded, in order
# Files this large go to the add threads; smaller ones are stored in the caller's thread.
# Measured here (2 cores): threads lose at 16 KiB, break even near 48 KiB, win at 128 KiB.
_ADD_THREADED_SIZE = 64 * 1024
# Smaller files go to worker processes when at least this many are added at once, in
# chunks of _WORKER_CHUNK, at most _WORKER_CHUNKS_AHEAD chunks per worker in flight.
_WORKERS_MIN = 512
_WORKER_CHUNK = 64
_WORKER_CHUNKS_AHEAD = 16

Source = str | os.PathLike[str] | BinaryIO
ProgressFn = Callable[[int], None]


class AddResult(BaseModel):
    """One stored input: the line ``cas add`` prints, and more."""

    id: str
    path: str
    size: int
    stored_size: int
    compression: str
    record_id: str
    new_object: bool
    new_record: bool


class RecordEntry(BaseModel):
    """A record with its id, as shown by ``cas show``."""

    id: str
    record: dict[str, Any]


class ObjectInfo(BaseModel):
    """Everything known about one object."""

    id: str
    size: int
    stored_size: int
    compression: str
    refs: list[str]
    records: list[RecordEntry]


class ObjectSummary(BaseModel):
    """One line of ``cas ls``."""

    id: str
    size: int
    stored_size: int
    compression: str
    type: str | None
    created: str | None
    refs: list[str]


class StoreInfo(BaseModel):
    """Where a store is and how it is configured."""

    root: str
    format: int
    compression: str


class RefInfo(BaseModel):
    """A ref and the object it points to."""

    name: str
    object: str


class SourceInfo(BaseModel):
    """A registered source with its current object and last download."""

    source: Any
    object: str | None
    last_download: dict[str, Any] | None
    versions: int


class IndexCounts(BaseModel):
    """Rows in the index after a rebuild."""

    objects: int
    records: int
    edges: int
    refs: int


# One stored input: what add_many yields, and the index rows its batch inserts.
_Added = tuple[AddResult, ObjectRowIn, RecordRows]


class _Job:
    """One entry of add_many's window, in input order: outcomes in hand, a large file in
    an add thread (a future of one outcome), or a chunk of small files in a worker process
    (a future of a list that ends early at the first error)."""

    __slots__ = ("counted", "future", "rest")

    def __init__(
        self,
        future: Future[Any] | None = None,
        outcomes: Iterable[_Added | BaseException] | None = None,
        *,
        counted: bool = True,
    ) -> None:
        self.future = future
        # The outcomes not yet taken, once known: a caller that stops midway finds the rest.
        self.rest = None if outcomes is None else collections.deque(outcomes)
        self.counted = counted  # False for a worker's chunk: progress sees its sizes here

    def done(self) -> bool:
        return self.rest is not None or self.future is None or self.future.done()

    def outcomes(self) -> collections.deque[_Added | BaseException]:
        """Its outcomes in order: what it stored, and where it failed, its error. Waits;
        a Ctrl-C while waiting propagates and leaves the job as it was, to be settled."""
        if self.rest is None:
            assert self.future is not None
            try:
                got = self.future.result()
            except BrokenExecutor as exc:
                got = [WorkerDied(f"a worker process storing files died unexpectedly ({exc})")]
            except Exception as exc:
                got = [exc]
            self.rest = collections.deque(got if isinstance(got, list) else [got])
        return self.rest

    def cancel(self) -> None:
        """Drop it if no thread or worker has begun it (its outcome is then an error)."""
        if self.rest is None and self.future is not None:
            self.future.cancel()


def _settle(window: Iterable[_Job], batch: list[_Added]) -> bool:
    """After an error: drop jobs not yet begun, finish the others, and append what they
    stored to ``batch`` (to be indexed).

    Their errors are dropped: they come after the one being raised. Returns False when a
    worker process died, so that what it stored may be missing from ``batch``.
    """
    window = list(window)
    for job in window:
        job.cancel()
    reported = True
    for job in window:
        for outcome in job.outcomes():
            if isinstance(outcome, WorkerDied):
                reported = False
            elif not isinstance(outcome, BaseException):
                batch.append(outcome)
    return reported


def _take_head(
    window: collections.deque[_Job], batch: list[_Added], progress: ProgressFn | None
) -> Iterator[_Added]:
    """Append the first job's stored inputs to ``batch`` and yield them, in order; raise
    its error where it failed.

    An outcome leaves the job only once it is in ``batch``, so a Ctrl-C at any point
    loses nothing: what is left stays at the head of ``window``, to be settled (at worst
    an outcome is in both, and indexing it twice is harmless).
    """
    job = window[0]
    rest = job.outcomes()
    while rest:
        outcome = rest[0]
        if isinstance(outcome, BaseException):
            rest.popleft()
            raise outcome
        if not job.counted and progress is not None and outcome[1][1]:
            progress(outcome[1][1])
        batch.append(outcome)
        rest.popleft()
        yield outcome
    window.popleft()


def _small_path(size: int | None) -> bool:
    """Whether an input is a regular file small enough for a worker process (and not
    empty: a pseudo-file of /proc or /sys says 0 bytes, and its read may block a worker,
    which ignores Ctrl-C)."""
    return size is not None and 0 < size < _ADD_THREADED_SIZE


def _is_store_dir(path: Path) -> bool:
    return (path / "objects").is_dir() and (path / "config.toml").is_file()


def locate_store(path: str | os.PathLike[str]) -> Path:
    """The ``.casstore`` directory for ``path``: the store itself or the directory holding it."""
    p = Path(path)
    if _is_store_dir(p / STORE_DIRNAME):
        return p / STORE_DIRNAME
    if _is_store_dir(p):
        return p
    raise StoreNotFound(f"no casstore store at {p} (make one with 'cas init {p}')")


def find_store(start: str | os.PathLike[str] | None = None) -> Path:
    """The nearest ``.casstore`` directory at or above ``start`` (default: the cwd)."""
    here = Path(start or Path.cwd()).absolute()
    for d in (here, *here.parents):
        if _is_store_dir(d / STORE_DIRNAME):
            return d / STORE_DIRNAME
    raise StoreNotFound(
        "not inside a casstore store (run 'cas init' here, or pass --store DIR or set CAS_STORE)"
    )


def expand_inputs(paths: Iterable[str], store_root: _fs.StrPath | None = None) -> Iterator[str]:
    """Files to add: each path, with directories expanded to every file below (sorted).

    ``-`` passes through (standard input). Below a named directory, the store at
    ``store_root`` (whatever its name), any ``.casstore`` directory and links into the
    store are left out, and a named path inside the store is refused. A path
    that does not exist, a file that cannot be read or a directory that cannot be listed
    raises :class:`InputError`, so that a caller expanding every input before it stores
    any stores nothing when one of them is bad.
    """
    inside = os.path.realpath(store_root) if store_root is not None else None
    for raw in paths:
        if raw == "-":
            yield raw
            continue
        if inside is not None and _fs.is_within(os.path.realpath(raw), inside):
            raise InputError(f"{raw}: is inside the store itself")
        if os.path.isdir(raw):
            yield from _files_below(raw, inside)
        elif os.path.exists(raw):
            _check_readable(raw)
            yield raw  # a file, or a pipe such as /dev/stdin or <(cmd)
        else:
            reason = "no such file or directory"
            try:
                os.stat(raw)
            except OSError as exc:  # say why: "Not a directory", "Permission denied", ...
                if exc.errno != errno.ENOENT and exc.strerror:
                    reason = exc.strerror
            raise InputError(f"{raw or repr(raw)}: {reason}")


def _check_readable(path: str) -> None:
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: {os.strerror(errno.EACCES)}")


def _files_below(top: str, store: str | None = None) -> Iterator[str]:
    """Every file below ``top``: its own files (sorted), then each subdirectory's in turn.

    Symbolic links to files count as files; links to directories, to nothing or in a loop
    are left out, and so are the store at ``store`` (the real path of its root, whatever
    its name), any ``.casstore`` directory and links into the store. A directory that
    cannot be listed, or a file that cannot be read, raises :class:`InputError`: leaving
    it out would leave a gap nobody is told about. Directory entries say what they are,
    so a tree of plain files costs no ``stat`` per file.
    """
    try:
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"{top}: {exc.strerror or exc}") from None
    subdirs = []
    for entry in entries:
        path = os.path.join(top, entry.name)
        try:
            if entry.is_dir(follow_symlinks=False):
                if entry.name != STORE_DIRNAME and not _in_store(path, store):
                    subdirs.append(path)
            elif entry.is_file():
                if entry.is_symlink() and _in_store(path, store):
                    continue
                _check_readable(path)
                yield path
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOENT):  # a link to nothing, or a loop
                continue
            raise InputError(f"{path}: {exc.strerror or exc}") from None
    for d in subdirs:
        yield from _files_below(d, store)


def _in_store(path: str, store: str | None) -> bool:
    return store is not None and _fs.is_within(os.path.realpath(path), store)


def _file_size(src: Source) -> int | None:
    """The size of a regular file to add; None for a stream, a pipe or anything else that
    is not a regular file (or cannot be stat'ed): such inputs are read where Ctrl-C can
    stop them, in the caller's thread."""
    if not isinstance(src, (str, os.PathLike)):
        return None
    try:
        st = os.stat(src)
    except (OSError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _printable(path: str) -> str:
    """A path as valid UTF-8 text: bytes that are not UTF-8 become ``\\xNN`` escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class Store:
    """An open casstore store.

    Open one with :meth:`Store.open` (a path), :meth:`Store.discover` (search upwards) or
    make one with :meth:`Store.init`. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, root: Path, config: StoreConfig) -> None:
        self.root = root
        self.config = config
        self.tmp = root / "tmp"
        # Git keeps no empty directories: a store checked out from a repository (like the
        # example store) may lack tmp/; writes need it on the store's own filesystem.
        with contextlib.suppress(OSError):  # a read-only store still reads
            self.tmp.mkdir(exist_ok=True)
        self.objects = ObjectStore(
            root / "objects", self.tmp, config.objects.compression, config.objects.zstd_level
        )
        self.refs = RefStore(root, lock_timeout=config.locks.timeout)
        self.lock = _fs.StoreLock(root / "lock", timeout=config.locks.store_timeout)
        self._index: Index | None = None

    # ---- life cycle ------------------------------------------------------------------
    @classmethod
    def init(cls, path: str | os.PathLike[str] = ".", *, compression: str = "auto") -> Store:
        """Make ``path/.casstore`` (``path`` is created when missing) and open it.

        Raises:
            UsageError: a store already exists there.
        """
        if compression not in ("auto", "zstd", "none"):
            raise UsageError(f"compression must be auto, zstd or none, not {compression!r}")
        base = Path(path)
        root = base if base.name == STORE_DIRNAME else base / STORE_DIRNAME
        if _is_store_dir(root):
            raise UsageError(f"a store already exists at {root}")
        for d in (root, *root.parents):
            if d.exists() or d.is_symlink():
                if not d.is_dir():
                    raise UsageError(f"cannot make a store at {root}: {d} is not a directory")
                break
        for sub in ("objects", "refs", "logs/refs", "log", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "lock").touch()
        _fs.atomic_write(root / "sources.toml", b"# registered sources\n", root / "tmp")
        # config.toml last: its presence is what makes the directory a store.
        _fs.atomic_write(root / "config.toml", default_toml(compression).encode(), root / "tmp")
        store = cls.open(root)
        store.index  # noqa: B018 - build the empty index now
        return store

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Store:
        """Open the store at ``path`` (the ``.casstore`` directory or the one holding it)."""
        root = locate_store(path).absolute()
        return cls(root, load_config(root / "config.toml"))

    @classmethod
    def discover(cls, start: str | os.PathLike[str] | None = None) -> Store:
        """Open the nearest store at or above ``start`` (default: the working directory)."""
        root = find_store(start)
        return cls(root, load_config(root / "config.toml"))

    def close(self) -> None:
        """Release the index connection."""
        if self._index is not None:
            self._index.close()
            self._index = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def sources(self) -> SourceRegistry:
        """The registered sources (``sources.toml``)."""
        from casstore.fetch.sources import SourceRegistry

        return SourceRegistry(self.root / "sources.toml", lock_timeout=self.config.locks.timeout)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Mark a write in flight: if the process dies inside, the next open rebuilds the
        index, so files written but not yet indexed are never missed."""
        token = self.index.begin_pending()
        try:
            yield
        finally:
            with self.index.transaction() as db:
                self.index.end_pending(db, token)

    def record_object(self, stored: StoredObject, record: RecordBase) -> str:
        """Write a record for a stored object (durably) and index both; return the record id."""
        rid, _ = write_record(self.objects.dir, self.tmp, record, durable=True)
        idx = self.index
        with idx.transaction() as db:
            idx.put_object(db, stored.id, stored.size, stored.stored_size, stored.compression)
            idx.put_record(db, rid, record)
        return rid

    def fetch(self, target: str, **kwargs: Any) -> FetchResult:
        """Fetch a URL or registered source: see :func:`casstore.fetch.fetch` for options."""
        from casstore.fetch import fetch

        return fetch(self, target, **kwargs)

    def source_info(self, source_id: str) -> SourceInfo:
        """A registered source, where its ref points, its last download record."""
        from casstore.errors import SourceNotFound
        from casstore.fetch.fetcher import previous_download

        src = self.sources.get(source_id)
        if src is None:
            raise SourceNotFound(f"no source {source_id!r}")
        ref = f"sources/{source_id}"
        oid = self.refs.get(ref)
        last = previous_download(self, oid, source_id)
        moves = [e for e in self.refs.log(ref) if e.action in ("fetch", "set")]
        return SourceInfo(
            source=src,
            object=oid,
            last_download=last.model_dump(mode="json", exclude_none=True) if last else None,
            versions=len(moves),
        )

    # ---- deriving ---------------------------------------------------------------------
    def derive(
        self,
        inputs: list[str],
        transform: str,
        params: dict[str, Any] | None = None,
        *,
        ref: str | None = None,
    ) -> contextlib.AbstractContextManager[Derivation]:
        """A context manager for pipeline code that makes a file from stored inputs::

            with store.derive(inputs=["sources/systems"], transform="normalize",
                              params={"units": "ly"}) as out:
                with out.open() as f:
                    f.write(...)
            print(out.result.id)

        The file is stored with a ``derive`` record only when the block succeeds; an
        exception inside leaves nothing behind and propagates.
        """
        from casstore.run import derive

        return derive(self, inputs, transform, params, ref=ref)

    def sample(self, spec: str, **kwargs: Any) -> SampleResult:
        """A reproducible sample of an object: see :func:`casstore.sample.sample_object`.

        ``store.sample("sources/systems", regime="random", n=1000, seed=7)``
        """
        from casstore.sample import sample_object

        return sample_object(self, spec, **kwargs)

    def run(self, command: list[str], **kwargs: Any) -> RunResult:
        """Run a command on stored inputs: see :func:`casstore.run.run_command`."""
        from casstore.run import run_command

        return run_command(self, command, **kwargs)

    # ---- lineage ---------------------------------------------------------------------
    def log(self, spec: str, *, children: bool = False, depth: int | None = None) -> Lineage:
        """The lineage of an object: its ancestors back to the roots, or (``children``)
        everything derived from it, transitively."""
        from casstore.lineage import lineage

        oid = self.resolve(spec)
        lin = lineage(
            self.index,
            oid,
            direction="descendants" if children else "ancestors",
            depth=depth,
            refs=self.refs_by_object(),
        )
        if any(n.pipeline for n in lin.nodes):
            self.runs().name_links(lin.nodes)  # pipeline id and step name of each run
        return lin

    def why(self, spec: str, ancestor: str) -> list[list[str]]:
        """Every path by which object ``spec`` depends on ``ancestor`` (empty: it does not)."""
        from casstore.lineage import paths

        return paths(self.index, self.resolve(spec), self.resolve(ancestor))

    def stale(self) -> list[StaleItem]:
        """Derived objects built from a version of a source that its ref has moved past."""
        from casstore.lineage import stale

        return stale(self.index, self.refs.items("sources/"))

    def metadata(self, tenant: str | None = None) -> EmbeddedRepository:
        """The metadata repository (``log/metadata.jsonl`` mirrored into the index).

        ``tenant`` defaults to the store's (``[meta] tenant`` in config.toml); reads see
        only that tenant's records.
        """
        from casstore.meta.repository import EmbeddedRepository

        return EmbeddedRepository(
            self.index.db,
            self.root / "log",
            self.tmp,
            tenant=tenant or self.config.meta.tenant,
            strict=self.config.meta.strict,
            lock_timeout=self.config.locks.timeout,
        )

    def pipeline_run(
        self,
        pipeline_id: str,
        *,
        trigger_type: str = "manual",
        trigger_by: str | None = None,
        parameters: dict[str, Any] | None = None,
        config_version: str | None = None,
        tenant: str | None = None,
    ) -> contextlib.AbstractContextManager[RunHandle]:
        """A logged pipeline run around a block (``log/runs.jsonl``, see docs/runs.md)::

            with store.pipeline_run("daily_ingest", trigger_type="scheduler") as run:
                with run.step("download", step_type="fetch") as step:
                    step.metadata["bytes"] = store.fetch("systems").size

        COMPLETED when the block ends, FAILED with the error when it raises (the error
        propagates). Records written inside carry the run (and step) in ``pipeline``.
        ``trigger_by`` defaults to the current user.
        """
        from casstore.meta.runs import pipeline_run

        return pipeline_run(
            self.runs(tenant),
            pipeline_id,
            trigger_type=trigger_type,
            trigger_by=trigger_by if trigger_by is not None else whoami()[0],
            parameters=parameters,
            config_version=config_version,
        )

    def runs(self, tenant: str | None = None) -> RunLog:
        """The pipeline run log (``log/runs.jsonl`` mirrored into the index) of ``tenant``
        (default: the store's), for queries and for runs driven step by step."""
        from casstore.meta.runs import RunLog

        return RunLog(
            self.index.db,
            self.root / "log",
            tenant=tenant or self.config.meta.tenant,
            lock_timeout=self.config.locks.timeout,
        )

    def describe(self) -> StoreInfo:
        """The store's location and settings."""
        return StoreInfo(
            root=str(self.root),
            format=self.config.store.format,
            compression=self.config.objects.compression,
        )

    @property
    def index(self) -> Index:
        """The SQLite index, rebuilt from the files when it is missing."""
        if self._index is None:
            idx = Index(self.root / "index.sqlite", timeout=self.config.locks.timeout * 2)
            if not idx.is_built() or idx.has_dead_writers():
                self._rebuild(idx)
            self._index = idx
        return self._index

    # ---- adding ----------------------------------------------------------------------
    def add(
        self,
        source: Source,
        *,
        source_id: str | None = None,
        dataset: str | None = None,
        parents: Iterable[str] = (),
        transform: str | None = None,
        params: dict[str, str] | None = None,
        ref: str | None = None,
        progress: ProgressFn | None = None,
        manifest: ManifestOrigin | None = None,
    ) -> AddResult:
        """Store one file or binary stream with an ``import`` (or, with parents, ``derive``) record.

        ``parents`` are object ids, prefixes or ref names; every one must exist, else
        nothing is stored. ``ref`` is moved to the new object afterwards. ``manifest``
        records the manifest entry an imported file came from (``cas manifest import``).
        """
        results = list(
            self.add_many(
                [source],
                source_id=source_id,
                dataset=dataset,
                parents=parents,
                transform=transform,
                params=params,
                ref=ref,
                progress=progress,
                manifest=manifest,
            )
        )
        return results[0]

    def add_many(
        self,
        sources: Iterable[Source],
        *,
        source_id: str | None = None,
        dataset: str | None = None,
        parents: Iterable[str] = (),
        transform: str | None = None,
        params: dict[str, str] | None = None,
        ref: str | None = None,
        progress: ProgressFn | None = None,
        manifest: ManifestOrigin | None = None,
    ) -> Iterator[AddResult]:
        """Store many inputs, yielding each result once it is durable and indexed.

        Writes go in batches: objects and records without a per-file fsync, then one
        filesystem barrier, then the index, so a directory of small files costs one sync.
        """
        if source_id is not None:
            check_ref_name(source_id, what="source id")
        if (transform is not None or params) and not parents:
            raise UsageError("--transform and --param describe a derivation: give --parent too")
        if ref is not None:
            check_ref_name(ref)
            self.refs.check_free(ref)  # a clash found only after storing would be too late
        parent_ids = list(dict.fromkeys(self.resolve(p) for p in parents))
        sources = list(sources) if ref is not None else sources
        if ref is not None and len(sources) != 1:  # type: ignore[arg-type]
            raise UsageError("--ref names one object: add exactly one file with it")
        user, host = whoami()
        common: dict[str, Any] = {
            "user": user,
            "host": host,
            "source_id": source_id,
            "dataset": dataset,
            "parents": tuple(parent_ids),
            # read here, in the caller's thread: the add threads do not see its context
            "pipeline": current_link(),
        }
        if parent_ids:
            common.update(transform=transform, params=dict(params or {}))
        if manifest is not None:
            if parent_ids:
                raise UsageError("a manifest entry is an import: it cannot have parents")
            common["manifest"] = manifest
        last: AddResult | None = None
        with self.lock.hold():
            # One list for the whole add, emptied in place after each batch: _store_all
            # appends each stored input to it (also, on an error, the inputs in flight).
            batch: list[_Added] = []
            batch_bytes = 0
            token = self.index.begin_pending()
            unsettled: list[bool] = []  # set when inputs in flight could not be waited for
            failed_at: list[int] = []  # where in ``batch`` the inputs after a failure begin
            stored = self._store_all(
                sources, common, bool(parent_ids), progress, batch, unsettled, failed_at
            )
            indexed = False
            try:
                try:
                    for item in stored:  # already in batch: _store_all appends it
                        batch_bytes += item[1][1]
                        last = item[0]
                        if len(batch) >= _BATCH_FILES or batch_bytes >= _BATCH_BYTES:
                            self._index_batch(batch)
                            done = batch.copy()
                            batch.clear()
                            batch_bytes = 0
                            yield from (r for r, _, _ in done)
                except WorkerDied:
                    unsettled.append(True)
                    raise
                finally:
                    # Also on an error or an abandoned iteration: what was written is
                    # complete (object and record), so index it, and clear this writer's
                    # token. Closing ``stored`` first finishes inputs still in flight into
                    # ``batch``. When a worker died, or that wait was interrupted, files may
                    # be stored that nobody reported: the token then stays, so the next
                    # open of the store, after this process ends, rebuilds the index.
                    try:
                        stored.close()
                    finally:
                        self._index_batch(batch, None if unsettled else token)
                        indexed = True
            except Exception:
                # An input failed: the files stored and indexed before it are reported
                # first (as sha256sum prints the lines it could make), then the error.
                if indexed:  # (those after it, finished in flight, are indexed, not reported)
                    yield from (r for r, _, _ in batch[: failed_at[0] if failed_at else None])
                raise
            yield from (r for r, _, _ in batch)
            if ref is not None and last is not None:
                self._move_ref(ref, last.id, message="add")

    def _store_all(
        self,
        sources: Iterable[Source],
        common: dict[str, Any],
        derived: bool,
        progress: ProgressFn | None,
        batch: list[_Added],
        unsettled: list[bool],
        failed_at: list[int],
    ) -> Iterator[_Added]:
        """Store every input, appending what was stored to ``batch`` and yielding it, in
        input order.

        A file of at least ``_ADD_THREADED_SIZE`` bytes goes to a pool of threads: its
        hashing and compression release the GIL, so several overlap. Smaller files cost
        mostly system calls and Python work, which threads would only fight over (the
        GIL); given as a list of at least ``_WORKERS_MIN``, they go in chunks to worker
        processes (:mod:`casstore.parallel`), else they are stored in the caller's thread.
        At the first error nothing more is started: jobs not yet begun by a thread or
        worker are dropped, the others are finished and appended to ``batch`` (so they get
        indexed), then the error propagates. If that wait is itself interrupted (a second
        Ctrl-C), or a Ctrl-C cut into a stream being stored, ``unsettled`` gets an entry:
        files may then be stored that ``batch`` does not list. ``failed_at`` gets the
        length ``batch`` had when the error came: the inputs before the failing one.
        """
        sizes: list[int | None] | None = None
        workers: parallel.Workers | None = None
        in_flight = _ADD_WINDOW
        window: collections.deque[_Job] = collections.deque()
        chunk: list[tuple[str, datetime]] = []
        pool: ThreadPoolExecutor | None = None
        # Set while an input is stored in this thread and not yet noted in ``window``: a
        # Ctrl-C that ends the add then may have cut in between (Ctrl-C is held back for
        # a small regular file, but not for a stream, which may block).
        exposed = False

        def send_chunk() -> None:
            assert workers is not None
            with _fs.interrupts_held():  # a chunk sent is always waited for
                window.append(_Job(workers.submit(chunk.copy()), counted=False))
            chunk.clear()

        try:
            if isinstance(sources, (list, tuple)):
                sizes = [_file_size(src) for src in sources]
                small = sum(1 for n in sizes if _small_path(n))
                if small >= _WORKERS_MIN:
                    from casstore import parallel  # multiprocessing: only when it is used

                    count = parallel.worker_count()
                    if count:
                        job = functools.partial(self._add_in_worker, common, derived)
                        workers = parallel.Workers(count, job)
                        in_flight = count * _WORKER_CHUNKS_AHEAD
            for i, src in enumerate(sources):
                # The time is taken here, in input order, so that records made in
                # parallel still sort as the inputs were given.
                created = utcnow()
                size = sizes[i] if sizes is not None else _file_size(src)
                if workers is not None and _small_path(size):
                    chunk.append((os.fspath(src), created))  # type: ignore[arg-type]
                    if len(chunk) >= _WORKER_CHUNK:
                        send_chunk()
                    continue
                if chunk:
                    send_chunk()
                stamp = {**common, "created": created}
                if size is not None and size >= _ADD_THREADED_SIZE:
                    if pool is None:
                        pool = ThreadPoolExecutor(_ADD_THREADS, thread_name_prefix="cas-add")
                    with _fs.interrupts_held():
                        future = pool.submit(self._add_one, src, stamp, derived, progress)
                        window.append(_Job(future))
                else:
                    # A small regular file is read and stored at once: Ctrl-C waits for
                    # it, so that it is never stored without being noted (a wait for
                    # another writer's record lock gives up). A stream, an empty file
                    # (a pseudo-file may block) or anything else stays exposed: a Ctrl-C
                    # there may leave it stored but not noted.
                    exposed, failed = True, False
                    shield = size is not None and size > 0
                    with _fs.interrupts_held() if shield else contextlib.nullcontext() as noted:
                        try:
                            added = self._add_one(src, stamp, derived, progress, noted)
                            window.append(_Job(outcomes=[added]))
                        except Exception as exc:
                            window.append(_Job(outcomes=[exc]))
                            failed = True
                        exposed = False
                    if failed:
                        break  # nothing after the first error is started
                while window and (len(window) >= in_flight or window[0].done()):
                    yield from _take_head(window, batch, progress)
            if chunk:
                send_chunk()
            while window:
                yield from _take_head(window, batch, progress)
        except BaseException:
            unsettled.append(True)
            failed_at.append(len(batch))
            if _settle(window, batch) and not exposed:
                unsettled.clear()
            raise
        finally:
            if pool is not None:
                pool.shutdown()
            if workers is not None:
                workers.close()

    def _add_in_worker(
        self, common: dict[str, Any], derived: bool, path: str, created: datetime
    ) -> _Added:
        """:meth:`_add_one` as a worker process runs it (see :mod:`casstore.parallel`)."""
        return self._add_one(path, {**common, "created": created}, derived, None)

    def _add_one(
        self,
        src: Source,
        common: dict[str, Any],
        derived: bool,
        progress: ProgressFn | None,
        abandon: _fs.interrupts_held | None = None,
    ) -> _Added:
        if isinstance(src, (str, os.PathLike)):
            display = os.fspath(src)
            try:
                fd = os.open(display, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise InputError(f"{display}: {exc.strerror or exc}") from exc
            try:
                # A bare descriptor: a Python file object would cost an fstat (and more).
                stored = self.objects.write(FdReader(fd), durable=False, progress=progress)
            except IsADirectoryError as exc:  # opening a directory succeeds; reading fails
                raise InputError(f"{display}: {exc.strerror or exc}") from exc
            finally:
                os.close(fd)
            origin: str | None = _printable(os.path.abspath(display))
        else:
            name = getattr(src, "name", None)
            display = name if isinstance(name, str) and name != "<stdin>" else "-"
            stored = self.objects.write(src, durable=False, progress=progress)
            origin = None if display == "-" else _printable(display)
        cls = DeriveRecord if derived else ImportRecord
        record = cls(
            object=stored.id, size=stored.size, blake3=stored.blake3, path=origin, **common
        )
        rid, new_record = write_record(
            self.objects.dir, self.tmp, record, durable=False, abandon=abandon
        )
        result = AddResult(
            id=stored.id,
            path=display,
            size=stored.size,
            stored_size=stored.stored_size,
            compression=stored.compression,
            record_id=rid,
            new_object=stored.new,
            new_record=new_record,
        )
        row = (stored.id, stored.size, stored.stored_size, stored.compression)
        return result, row, record_rows(rid, record)

    def _index_batch(self, batch: list[_Added], token: str | None = None) -> None:
        """Barrier, then index a batch; with ``token``, also end this writer's pending mark."""
        if batch:
            _fs.syncfs(self.root)  # one durability barrier for the whole batch
        idx = self.index
        with idx.transaction() as db:
            idx.put_rows(db, (row for _, row, _ in batch), (rows for _, _, rows in batch))
            if token is not None:
                idx.end_pending(db, token)

    # ---- reading ---------------------------------------------------------------------
    def resolve(self, spec: str) -> str:
        """Turn a full id, a ref name or a unique prefix (≥ 4 hex digits) into an object id.

        A bare name ``x`` is tried as ``tags/x``, ``sources/x``, ``samples/x``, then ``x``.

        Raises:
            ObjectNotFound, AmbiguousPrefix
        """
        if is_object_id(spec):
            if not self.objects.exists(spec) and not record_names(self.objects.dir, spec):
                raise ObjectNotFound(f"object {spec} not found")
            return spec
        valid_ref = True
        try:
            check_ref_name(spec)
        except InvalidRefName:
            valid_ref = False
        if valid_ref:
            for prefix in REF_SEARCH:
                target = self.refs.get(prefix + spec)
                if target is not None:
                    return target
        low = spec.lower()
        if is_prefix(low):
            matches = self.objects.match_prefix(low)
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise AmbiguousPrefix(spec, matches)
        if re.fullmatch(r"[0-9a-f]{1,3}", low):
            raise ObjectNotFound(
                f"no ref named {spec!r}, and an id prefix needs at least 4 hex digits"
            )
        if not valid_ref and not is_prefix(low):
            raise ObjectNotFound(f"{spec!r} is not an object id, prefix or ref name")
        raise ObjectNotFound(f"no object or ref matches {spec!r}")

    def open_object(self, spec: str) -> BinaryIO:
        """A binary stream of an object's original bytes."""
        return self.objects.open(self.resolve(spec))

    def read(self, spec: str) -> bytes:
        """An object's bytes in memory: for small objects only; stream big ones."""
        oid = self.resolve(spec)
        with self.objects.open(oid) as f:
            try:
                return f.read()
            except zstandard.ZstdError as exc:
                raise corrupt(oid, exc) from exc

    def cat(self, spec: str, out: BinaryIO) -> int:
        """Stream an object's original bytes into ``out``; return the byte count."""
        return self.objects.copy_to(self.resolve(spec), out)

    def records(self, spec: str) -> list[tuple[str, Any]]:
        """``(record_id, record)`` pairs of an object, oldest first, each checked on load."""
        return load_records(self.objects.dir, self.resolve(spec))

    def refs_by_object(self) -> dict[str, list[str]]:
        """``{object_id: [ref names]}`` from the ref files."""
        out: dict[str, list[str]] = {}
        for name, oid in self.refs.items().items():
            out.setdefault(oid, []).append(name)
        return out

    def show(self, spec: str) -> ObjectInfo:
        """Size, storage, refs and every record of one object."""
        from casstore.verify import is_pruned

        oid = self.resolve(spec)
        where = self.objects.locate(oid)
        pruned = where is None and is_pruned(self.objects.dir, oid)
        if where is None and not pruned:
            raise ObjectNotFound(f"object {oid} has records but its bytes are missing")
        records = load_records(self.objects.dir, oid)
        size = records[0][1].size if records else self._measure(oid)
        return ObjectInfo(
            id=oid,
            size=size,
            stored_size=where[0].stat().st_size if where else 0,
            compression=where[1] if where else "pruned",
            refs=self.refs_by_object().get(oid, []),
            records=[
                RecordEntry(id=rid, record=r.model_dump(mode="json", exclude_none=True))
                for rid, r in records
            ],
        )

    def list_objects(self) -> list[ObjectSummary]:
        """Every object (from the index), oldest first, with the refs pointing to it."""
        by_object = self.refs_by_object()
        return [
            ObjectSummary(
                id=row.id,
                size=row.size,
                stored_size=row.stored_size,
                compression=row.compression,
                type=row.type,
                created=row.created,
                refs=by_object.get(row.id, []),
            )
            for row in self.index.objects()
        ]

    def _measure(self, oid: str) -> int:
        n = 0
        with self.objects.open(oid) as f:
            while chunk := f.read(1 << 20):
                n += len(chunk)
        return n

    # ---- refs ------------------------------------------------------------------------
    def set_ref(
        self, name: str, spec: str, *, expected: str | Any | None = ANY, message: str = "set"
    ) -> RefUpdate:
        """Point ref ``name`` at the object ``spec`` resolves to (compare-and-swap)."""
        check_ref_name(name)
        oid = self.resolve(spec)
        if not self.objects.exists(oid):
            raise ObjectNotFound(
                f"object {oid} has no bytes in the store; a ref cannot point to it"
            )
        with self.lock.hold():
            return self._move_ref(name, oid, expected=expected, message=message)

    def _move_ref(
        self, name: str, oid: str, *, expected: str | Any | None = ANY, message: str = ""
    ) -> RefUpdate:
        update = self.refs.set(name, oid, expected=expected, message=message)
        if update.changed:
            self.index.set_ref(name, oid)
        return update

    def delete_ref(self, name: str, *, expected: str | Any | None = ANY) -> RefUpdate:
        """Remove a ref; its reflog stays, so the object remains findable."""
        with self.lock.hold():
            update = self.refs.delete(name, expected=expected, message="rm")
            self.index.set_ref(name, None)
        return update

    def list_refs(self, prefix: str = "") -> list[RefInfo]:
        """Every ref under ``prefix`` with its object, sorted by name."""
        return [RefInfo(name=n, object=o) for n, o in self.refs.items(prefix).items()]

    def get_ref(self, name: str) -> RefInfo:
        """One ref (exact name, or a bare name found as tags/, sources/, samples/ or itself)."""
        check_ref_name(name)
        for prefix in REF_SEARCH:
            target = self.refs.get(prefix + name)
            if target is not None:
                return RefInfo(name=prefix + name, object=target)
        raise RefNotFound(f"no ref named {name!r}")

    def ref_log(self, name: str) -> list[ReflogEntry]:
        """The history of a ref (also of a removed one)."""
        check_ref_name(name)
        entries = self.refs.log(name)
        if not entries and self.refs.get(name) is None:
            raise RefNotFound(f"no ref or reflog named {name!r}")
        return entries

    # ---- index -----------------------------------------------------------------------
    def rebuild_index(self) -> IndexCounts:
        """Recreate ``index.sqlite`` from the files; return the row counts."""
        path = self.root / "index.sqlite"
        self.close()
        # Exclusive: every writer holds the store lock shared from its first file to its
        # index commit, so none can lose rows to a database deleted under it.
        with self.lock.hold(exclusive=True):
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{path}{suffix}")
            idx = Index(path, timeout=self.config.locks.timeout * 2)
            self._rebuild(idx)
        self._index = idx
        return IndexCounts(**idx.counts())

    def _ids_with_records_or_bytes(self) -> list[str]:
        """Every object with bytes, plus those with records only (pruned by gc, or moved
        to quarantine by verify): their records still belong in the lineage."""
        ids = set(self.objects.ids())
        for meta in self.objects.dir.glob("??/*.meta"):
            oid = meta.parent.name + meta.name.removesuffix(".meta")
            if is_object_id(oid):
                ids.add(oid)
        return sorted(ids)

    def _rebuild(self, idx: Index) -> None:
        def scan() -> tuple[list[tuple[str, int, int, str]], list[tuple[str, Any]], dict]:
            records: list[tuple[str, Any]] = []
            objects = []
            for oid in self._ids_with_records_or_bytes():
                loaded = valid_records(self.objects.dir, oid)
                records.extend(loaded)
                where = self.objects.locate(oid)
                if where is None:
                    continue
                size = loaded[0][1].size if loaded else self._measure(oid)
                objects.append((oid, size, where[0].stat().st_size, where[1]))
            return objects, records, self.refs.items()

        # The scan runs inside the index's write transaction: a concurrent add either
        # indexed its files before (and the scan sees them) or waits and indexes after.
        idx.rebuild(scan)

    # ---- manifests and export ---------------------------------------------------------
    def export_manifest(self, *, domain: str, **kwargs: Any) -> ManifestExport:
        """Write ``<domain>_<process>.manifest.json``: see
        :func:`casstore.meta.manifest.export_manifest` for options."""
        from casstore.meta.manifest import export_manifest

        return export_manifest(self, domain=domain, **kwargs)

    def import_manifest(self, path: str | os.PathLike[str], **kwargs: Any) -> ManifestImport:
        """Store the files a manifest lists: see :func:`casstore.meta.manifest.import_manifest`."""
        from casstore.meta.manifest import import_manifest

        return import_manifest(self, path, **kwargs)

    def export(
        self, specs: Iterable[str], out_dir: str | os.PathLike[str], **kwargs: Any
    ) -> ExportResult:
        """Copy objects out as named files with SHA256SUMS: see
        :func:`casstore.export.export_objects`."""
        from casstore.export import export_objects

        return export_objects(self, specs, out_dir, **kwargs)
