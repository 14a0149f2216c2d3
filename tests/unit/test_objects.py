import gzip
import io
import os
import stat
import threading

import blake3
import pytest
import zstandard

from casstore.errors import IntegrityError, InvalidObjectId, ObjectNotFound
from casstore.objects import CHUNK, ObjectStore
from tests._helpers import ZSTD_MAGIC, json_lines, random_bytes, sha256

JSONISH = json_lines(300_000)
RANDOM = random_bytes(300_000)


@pytest.fixture
def make(tmp_path):
    def make(policy="auto", level=3) -> ObjectStore:
        objects, tmp = tmp_path / "objects", tmp_path / "tmp"
        objects.mkdir(exist_ok=True)
        tmp.mkdir(exist_ok=True)
        return ObjectStore(objects, tmp, policy, level)

    return make


def files_under(d):
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())


def put(store: ObjectStore, data: bytes, **kw):
    return store.write(io.BytesIO(data), **kw)


def read(store: ObjectStore, oid: str) -> bytes:
    with store.open(oid) as f:
        return f.read()


class ShortReads:
    """A pipe-like reader without readinto: hands out at most ``step`` bytes per read."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def read(self, n: int = -1) -> bytes:
        n = self.step if n < 0 else min(n, self.step)
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out


# ---- compression policy -----------------------------------------------------------------


def test_auto_keeps_gzip_raw_even_when_zstd_could_shrink_it(make):
    s = make("auto")
    data = gzip.compress(JSONISH, compresslevel=1)
    got = put(s, data)
    assert got.compression == "none"
    path, comp = s.locate(got.id)
    assert comp == "none" and not path.name.endswith(".zst")
    assert path.read_bytes() == data
    assert read(s, got.id) == data


def test_auto_keeps_random_bytes_raw(make):
    s = make("auto")
    got = put(s, RANDOM)
    assert got.compression == "none"
    assert got.stored_size == got.size == len(RANDOM)
    assert s.locate(got.id)[0].read_bytes() == RANDOM


def test_auto_keeps_data_that_saves_under_ten_percent_raw(make):
    s = make("auto")
    data = random_bytes(190_000, seed=3) + b"\x00" * 10_000  # about 5% compressible
    got = put(s, data)
    assert got.compression == "none"
    assert read(s, got.id) == data


def test_auto_compresses_jsonish_data(make):
    s = make("auto")
    got = put(s, JSONISH)
    assert got.compression == "zstd"
    path, comp = s.locate(got.id)
    assert comp == "zstd"
    assert path.name == got.id[2:] + ".zst"
    raw = path.read_bytes()
    assert raw.startswith(ZSTD_MAGIC)
    assert got.stored_size == len(raw) < len(JSONISH) // 2
    # one zstd frame that any zstd reader can decode
    assert zstandard.ZstdDecompressor().decompressobj().decompress(raw) == JSONISH
    assert read(s, got.id) == JSONISH


def test_zstd_policy_compresses_even_random_bytes(make):
    s = make("zstd")
    got = put(s, RANDOM)
    assert got.compression == "zstd"
    assert s.locate(got.id)[0].name.endswith(".zst")
    assert read(s, got.id) == RANDOM


def test_none_policy_keeps_everything_raw(make):
    s = make("none")
    got = put(s, JSONISH)
    assert got.compression == "none"
    assert s.locate(got.id)[0].read_bytes() == JSONISH


@pytest.mark.parametrize("policy", ["auto", "zstd", "none"])
def test_empty_input(make, policy):
    s = make(policy)
    got = put(s, b"")
    assert got.id == sha256(b"")
    assert got.size == 0
    assert got.blake3 == blake3.blake3(b"").hexdigest()
    assert got.compression == "none"
    assert read(s, got.id) == b""


# ---- ids, digests, sizes ------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["auto", "zstd", "none"])
@pytest.mark.parametrize(
    "size", [1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + CHUNK // 2]
)
@pytest.mark.parametrize("kind", ["json", "random"])
def test_multi_chunk_round_trip(make, policy, size, kind):
    data = json_lines(size, seed=size) if kind == "json" else random_bytes(size, seed=size)
    s = make(policy)
    got = put(s, data, md5=True)
    assert got.id == sha256(data)
    assert got.size == len(data)
    assert got.blake3 == blake3.blake3(data).hexdigest()
    assert got.stored_size == s.stored_size(got.id)
    assert read(s, got.id) == data
    out = io.BytesIO()
    assert s.copy_to(got.id, out) == len(data)
    assert out.getvalue() == data


def test_compressible_start_then_random_rest_still_round_trips(make):
    data = json_lines(CHUNK + 5) + random_bytes(2 * CHUNK)
    s = make("auto")
    got = put(s, data)
    assert got.compression == "zstd"  # decided on the first chunk
    assert read(s, got.id) == data


@pytest.mark.parametrize("step", [1000, 65536, CHUNK + 3])
def test_short_reads_without_readinto(make, step):
    data = json_lines(CHUNK * 2 + 100)
    s = make("auto")
    got = s.write(ShortReads(data, step))
    assert got.id == sha256(data)
    assert read(s, got.id) == data


def test_a_real_pipe_fed_in_small_pieces(make):
    data = random_bytes(3 * CHUNK + 11, seed=9)
    r, w = os.pipe()

    def writer():
        with os.fdopen(w, "wb") as f:
            for i in range(0, len(data), 10_000):
                f.write(data[i : i + 10_000])

    t = threading.Thread(target=writer)
    t.start()
    with os.fdopen(r, "rb", buffering=0) as f:
        got = make("auto").write(f)
    t.join()
    assert got.id == sha256(data)


def test_progress_reports_every_byte(make):
    seen = []
    put(make(), JSONISH * 5, progress=seen.append)
    assert sum(seen) == len(JSONISH) * 5


# ---- expected ids, dedup, immutability -----------------------------------------------------


@pytest.mark.parametrize("data", [JSONISH, RANDOM, b""])
def test_expected_id_mismatch_stores_nothing(make, tmp_path, data):
    s = make("auto")
    wrong = sha256(b"something else")
    with pytest.raises(IntegrityError) as info:
        put(s, data, expected=wrong)
    assert info.value.expected == wrong
    assert info.value.actual == sha256(data)
    assert info.value.what == "sha256"
    assert files_under(tmp_path / "objects") == []
    assert files_under(tmp_path / "tmp") == []
    assert not s.exists(sha256(data))


def test_expected_id_that_matches(make):
    s = make()
    assert put(s, JSONISH, expected=sha256(JSONISH)).id == sha256(JSONISH)


@pytest.mark.parametrize("data", [JSONISH, RANDOM])
def test_same_bytes_twice_are_stored_once(make, tmp_path, data):
    s = make("auto")
    first = put(s, data)
    path = s.locate(first.id)[0]
    os.utime(path, (1_000_000, 1_000_000))
    second = put(s, data)
    assert first.new is True
    assert second.new is False
    assert second.id == first.id
    assert second.stored_size == first.stored_size
    assert second.compression == first.compression
    assert len(files_under(tmp_path / "objects")) == 1
    assert files_under(tmp_path / "tmp") == []
    assert path.stat().st_mtime > 1_000_000, "an existing object's mtime is refreshed for gc"


def test_objects_are_read_only_files(make):
    s = make()
    got = put(s, b"immutable")
    mode = stat.S_IMODE(s.locate(got.id)[0].stat().st_mode)
    assert mode & 0o222 == 0


def test_listing_and_prefixes(make):
    s = make()
    ids = sorted(put(s, d).id for d in (JSONISH, RANDOM, b"a", b"b"))
    assert list(s.ids()) == ids
    assert all(s.exists(i) for i in ids)
    for i in ids:
        assert s.match_prefix(i[:8]) == [i]
    absent = next(p for p in ("0000", "ffff", "1234") if not any(i.startswith(p) for i in ids))
    assert s.match_prefix(absent) == []


def test_stray_files_are_not_objects(make, tmp_path):
    s = make()
    got = put(s, b"real")
    head = tmp_path / "objects" / got.id[:2]
    (head / "notes.txt").write_text("x")
    (tmp_path / "objects" / "zz").mkdir()
    (tmp_path / "tmp" / "obj-123-abc").write_bytes(b"partial")
    assert list(s.ids()) == [got.id]


def test_missing_object(make):
    s = make()
    with pytest.raises(ObjectNotFound) as info:
        s.open(sha256(b"absent"))
    assert isinstance(info.value, KeyError)
    assert s.locate(sha256(b"absent")) is None
    with pytest.raises(ObjectNotFound):
        s.stored_size(sha256(b"absent"))


def test_open_rejects_a_bad_id(make):
    with pytest.raises(InvalidObjectId):
        make().open("../../etc/passwd")


# ---- disk reserved up front for raw output of a known size -------------------------------


def _allocated(path) -> int:
    return os.stat(path).st_blocks * 512


def test_a_large_raw_file_is_stored_whole_and_keeps_no_reserved_blocks(make, tmp_path):
    store = make()
    data = random_bytes(3 * CHUNK + 12345)
    src = tmp_path / "input.bin"
    src.write_bytes(data)
    with open(src, "rb") as f:
        got = store.write(f)
    assert got.compression == "none"
    path = store.locate(got.id)[0]
    assert path.read_bytes() == data
    # what was reserved for the input's size and not used is given back
    assert _allocated(path) < len(data) + 64 * 1024


def test_a_reserved_writer_that_gets_fewer_bytes_than_announced_frees_the_rest(make):
    store = make()
    data = random_bytes(2 * CHUNK + 7)
    w = store.writer(size_hint=50 * CHUNK)
    w.write(data)
    got = w.commit()
    path = store.locate(got.id)[0]
    assert path.read_bytes() == data
    assert os.path.getsize(path) == len(data)
    assert _allocated(path) < len(data) + 64 * 1024


def test_a_reserved_writer_that_compresses_is_not_truncated(make):
    store = make(policy="zstd")
    data = JSONISH * 10
    w = store.writer(size_hint=len(data))
    w.write(data)
    got = w.commit()
    assert got.compression == "zstd"
    assert read(store, got.id) == data


def test_preallocate_keeps_the_file_size(tmp_path):
    from casstore import _fs

    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        reserved = _fs.preallocate(fd, 4 * CHUNK)
        assert os.fstat(fd).st_size == 0
        if reserved:  # the filesystem can reserve: the blocks are there
            assert _allocated(path) >= 4 * CHUNK
        assert _fs.preallocate(fd, 0) is False
    finally:
        os.close(fd)


# ---- raw output written past the page cache (O_DIRECT) -----------------------------------


def _takes_o_direct(directory) -> bool:
    from casstore import _fs

    fd = os.open(directory / "probe", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        return _fs.set_direct(fd, True)
    finally:
        os.close(fd)
        os.unlink(directory / "probe")


@pytest.fixture
def direct_calls(monkeypatch):
    """Record every O_DIRECT switch the writers make: ``[(on, accepted), ...]``."""
    from casstore import _fs

    calls = []
    real = _fs.set_direct

    def spy(fd, on):
        ok = real(fd, on)
        calls.append((on, ok))
        return ok

    monkeypatch.setattr(_fs, "set_direct", spy)
    return calls


@pytest.mark.parametrize("size", [2 * CHUNK, 2 * CHUNK + 1, CHUNK + 4096, 3 * CHUNK - 1])
def test_raw_output_with_o_direct_round_trips_whatever_the_tail(make, direct_calls, size):
    store = make()
    data = random_bytes(size, seed=size)
    got = put(store, data)
    w = store.writer(size_hint=size)
    w.write(data)
    got2 = w.commit()
    assert got.id == got2.id == sha256(data)
    assert got.compression == "none"
    assert store.locate(got.id)[0].read_bytes() == data
    if _takes_o_direct(store.tmp):
        # whole 1 MiB pieces went direct; a tail that is not a multiple of 4 KiB did not
        assert (True, True) in direct_calls
        if size % 4096:
            assert (False, True) in direct_calls


def test_a_filesystem_refusing_o_direct_gets_plain_writes(make, monkeypatch):
    from casstore import _fs

    monkeypatch.setattr(_fs, "set_direct", lambda fd, on: not on)  # refuses to turn it on
    store = make()
    data = random_bytes(2 * CHUNK + 99, seed=3)
    assert read(store, put(store, data).id) == data


def test_an_o_direct_write_refused_with_einval_is_written_again_plainly(make, monkeypatch):
    import errno
    import fcntl

    from casstore import objects

    real_write = os.write
    refused = []

    def picky(fd, data):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT and not refused:
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(objects.os, "write", picky)
    store = make()
    data = random_bytes(3 * CHUNK, seed=4)
    got = put(store, data)
    monkeypatch.setattr(objects.os, "write", real_write)
    assert read(store, got.id) == data
    assert got.size == len(data)
    if _takes_o_direct(make().tmp):
        assert refused, "the refusal was never met: the test tested nothing"


def test_compressed_output_never_turns_o_direct_on(make, direct_calls):
    store = make(policy="zstd")
    data = JSONISH * 10
    got = put(store, data)
    assert got.compression == "zstd"
    assert read(store, got.id) == data
    assert [on for on, _ in direct_calls if on] == []


def test_aligned_buffers_are_not_shared_with_a_forked_child():
    # A forked child must get its own copy, as of a bytearray: a shared mapping would let
    # both processes fill (and hash) the same buffer.
    from casstore import _fs

    buf = _fs.aligned_buffer(4096)
    assert _fs.is_aligned(memoryview(buf))
    pid = os.fork()
    if pid == 0:
        buf[0:5] = b"child"
        os._exit(0)
    os.waitpid(pid, 0)
    assert buf[0:5] == b"\0" * 5
