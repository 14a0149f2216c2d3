"""`Store.add_many` storing many small files through worker processes (casstore.parallel)."""

import fcntl
import io
import os
import signal
import sqlite3
import threading
import time

import pytest

import casstore.store as store_mod
from casstore import parallel
from casstore.errors import InputError, WorkerDied
from tests._helpers import check_store, sha256


@pytest.fixture
def sent(monkeypatch):
    """Workers for any add of 8 or more small files, in chunks of 3; lists the chunks sent.

    The worker count is forced: pytest may run threads of its own (servers of other
    tests), and then casstore would rightly refuse to fork.
    """
    monkeypatch.setattr(store_mod, "_WORKERS_MIN", 8)
    monkeypatch.setattr(store_mod, "_WORKER_CHUNK", 3)
    monkeypatch.setattr(parallel, "worker_count", lambda: 2)
    chunks: list[list] = []
    submit = parallel.Workers.submit

    def spy(self, chunk):
        chunks.append(chunk)
        return submit(self, chunk)

    monkeypatch.setattr(parallel.Workers, "submit", spy)
    return chunks


@pytest.fixture
def small(tmp_path):
    """``small(n)``: n small files (two of them alike), as paths, with their contents."""

    def make(n: int, name: str = "s") -> tuple[list[str], list[bytes]]:
        d = tmp_path / "in"
        d.mkdir(exist_ok=True)
        datas = [f"{name} file {i}\n".encode() * (i % 7 + 1) for i in range(n - 1)]
        datas.append(datas[0])
        paths = []
        for i, data in enumerate(datas):
            p = d / f"{name}{i:04d}"
            p.write_bytes(data)
            paths.append(str(p))
        return paths, datas

    return make


def pending_tokens(store) -> list[str]:
    db = sqlite3.connect(store.root / "index.sqlite")
    try:
        return [k for (k,) in db.execute("SELECT key FROM meta WHERE key LIKE 'pending:%'")]
    finally:
        db.close()


def test_small_files_go_to_workers_and_come_back_in_input_order(store, sent, small):
    paths, datas = small(40)
    results = list(store.add_many(paths))
    assert len(sent) == 14  # 40 files in chunks of 3
    assert [r.id for r in results] == [sha256(d) for d in datas]
    assert [r.path for r in results] == paths
    assert [r.new_object for r in results] == [True] * 39 + [False]  # the last repeats one
    by_path = {rec.path: rec for r in results for _, rec in store.records(r.id)}
    assert sorted(by_path) == sorted(os.path.abspath(p) for p in paths)
    created = [by_path[os.path.abspath(p)].created for p in paths]
    assert created == sorted(created)  # taken in input order, whichever worker stored it
    check_store(store.root)  # objects, records and index agree
    assert pending_tokens(store) == []


def test_workers_mix_with_large_files_and_streams_in_input_order(store, sent, small):
    paths, datas = small(12)
    big = os.urandom(100_000)
    (store.root.parent / "big").write_bytes(big)
    stream = io.BytesIO(b"from a stream")
    inputs = [*paths[:6], str(store.root.parent / "big"), stream, *paths[6:]]
    results = list(store.add_many(inputs))
    want = [*datas[:6], big, b"from a stream", *datas[6:]]
    assert [r.id for r in results] == [sha256(d) for d in want]
    assert sent, "the small files went to workers"
    check_store(store.root)


def test_progress_sees_every_byte_of_the_workers_files(store, sent, small):
    paths, datas = small(20)
    seen: list[int] = []
    list(store.add_many(paths, progress=seen.append))
    assert sum(seen) == sum(len(d) for d in datas)


def test_a_failing_input_stops_the_add_and_what_was_stored_is_indexed(
    store, sent, small, tmp_path, monkeypatch
):
    monkeypatch.setattr(store_mod, "_BATCH_FILES", 5)  # the error comes after two batches
    paths, datas = small(30)
    inputs = [*paths[:13], str(tmp_path / "missing"), *paths[13:]]
    with pytest.raises(InputError, match="missing"):
        list(store.add_many(inputs))
    for data in datas[:13]:
        assert store.resolve(sha256(data))
    # Inputs in flight when the error came were finished; every file stored is indexed.
    check_store(store.root)
    assert pending_tokens(store) == []


def test_ctrl_c_in_the_progress_callback_loses_no_stored_file(store, sent, small):
    paths, _ = small(40)
    calls: list[int] = []

    def progress(n: int) -> None:
        calls.append(n)
        if len(calls) == 5:  # a terminal's bar redraws here: a Ctrl-C can land in it
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        list(store.add_many(paths, progress=progress))
    check_store(store.root)  # every file stored is indexed
    assert pending_tokens(store) == []


def _ctrl_c_at_call(n: int, real):
    """``real``, wrapped to send this process a real SIGINT on its n-th call (after it)."""
    calls = []

    def wrapped(*args, **kwargs):
        got = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == n:
            os.kill(os.getpid(), signal.SIGINT)
        return got

    return wrapped


def test_ctrl_c_right_after_a_file_is_stored_in_process_loses_nothing(store, small, monkeypatch):
    paths, _ = small(10)  # few files: stored in this process
    # record_rows runs after the record is written: the file is stored, not yet noted.
    monkeypatch.setattr(store_mod, "record_rows", _ctrl_c_at_call(3, store_mod.record_rows))
    with pytest.raises(KeyboardInterrupt):
        list(store.add_many(paths))
    found = check_store(store.root)  # every file stored is indexed
    assert len(found["objects"]) == 3
    assert pending_tokens(store) == []


def test_ctrl_c_right_after_a_chunk_is_sent_loses_nothing(store, sent, small, monkeypatch):
    paths, _ = small(40)
    real = parallel.Workers.submit

    def taken(self, chunk):
        """Submit, and return once a worker has the chunk: it will be stored."""
        future = real(self, chunk)
        while not (future.running() or future.done()):
            time.sleep(0.001)
        return future

    monkeypatch.setattr(parallel.Workers, "submit", _ctrl_c_at_call(2, taken))
    with pytest.raises(KeyboardInterrupt):
        list(store.add_many(paths))
    check_store(store.root)  # a chunk sent is waited for, and indexed
    assert pending_tokens(store) == []


def test_the_first_error_drops_chunks_no_worker_has_begun(store, sent, small, monkeypatch):
    paths, _ = small(300)
    real = store_mod.Store._add_in_worker

    def failing(self, common, derived, path, created):
        if path.endswith("s0004"):
            raise InputError(f"{path}: refused")
        return real(self, common, derived, path, created)

    monkeypatch.setattr(store_mod.Store, "_add_in_worker", failing)
    with pytest.raises(InputError, match="refused"):
        list(store.add_many(paths))
    found = check_store(store.root)
    # 100 chunks of 3 were sent. Before the adder reaches the failed chunk, the workers
    # may finish the chunks allowed in flight (2 workers x 16); once it has, it cancels
    # what no worker has taken (2 running, 3 queued). Everything else was never stored.
    assert len(found["objects"]) <= 3 * (1 + 2 * 16 + 2 + 3) < 150


def test_an_abandoned_add_indexes_what_its_workers_stored(store, sent, small, monkeypatch):
    monkeypatch.setattr(store_mod, "_BATCH_FILES", 5)  # results come while chunks are out
    paths, _ = small(40)
    results = store.add_many(paths)
    next(results)
    results.close()
    check_store(store.root)
    assert pending_tokens(store) == []


def test_a_worker_that_dies_is_an_error_and_the_index_gets_rebuilt(store, sent, small, monkeypatch):
    paths, datas = small(20)
    assert datas[10] not in datas[:10] + datas[11:]
    real = store_mod.Store._add_in_worker

    def fragile(self, common, derived, path, created):
        if path.endswith("s0010"):
            os._exit(3)
        return real(self, common, derived, path, created)

    monkeypatch.setattr(store_mod.Store, "_add_in_worker", fragile)
    with pytest.raises(WorkerDied, match="died"):
        list(store.add_many(paths))
    # The pool then stops the other worker wherever it is: at worst a stray temp file,
    # and files stored that nobody reported. So the writer's token stays, and the index
    # is rebuilt once this process is gone; after that rebuild, all agrees.
    assert len(pending_tokens(store)) == 1
    check_store(store.root, index=False, allow_tmp=True)
    store.rebuild_index()
    found = check_store(store.root, allow_tmp=True)
    assert sha256(datas[10]) not in found["objects"]


def test_no_workers_while_another_thread_runs():
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert parallel.worker_count() == 0
    finally:
        stop.set()
        t.join()


def test_few_files_are_stored_without_workers(store, sent, small):
    paths, datas = small(7)
    assert [r.id for r in store.add_many(paths)] == [sha256(d) for d in datas]
    assert sent == []


def test_ctrl_c_ends_a_wait_for_another_writers_record_lock(store, small):
    paths, datas = small(3)  # few files: stored in this process, Ctrl-C held back
    oid = sha256(datas[1])
    meta = store.objects.dir / oid[:2] / f"{oid[2:]}.meta"
    meta.mkdir(parents=True)
    held = os.open(meta, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(held, fcntl.LOCK_EX)  # another writer of this object, stuck
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            list(store.add_many(paths))
        assert time.monotonic() - started < 5
    finally:
        timer.cancel()
        os.close(held)
    # Its bytes were stored, its record could not be: the writer's token stays, so the
    # index is rebuilt once this process is gone.
    assert store.objects.exists(oid)
    assert len(pending_tokens(store)) == 1
