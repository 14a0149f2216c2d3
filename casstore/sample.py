"""``cas sample``: reproducible head, random and systematic samples of stored records.

A sample is cut from one parent object by a *recipe*: the parent id, the regime and its
parameters, and :data:`SAMPLER_VERSION`. The SHA-256 of the recipe's canonical JSON is a
key in the index, so asking for the same sample again returns the stored object at once,
without reading the parent. The bytes are a pure function of the recipe (random samples
use a seeded generator, default seed 0), so a sample can always be remade and checked.

Reading streams: the parent is decompressed on the fly (:mod:`casstore.sample_input`)
and scanned in chunks (:mod:`casstore.jsonstream` for JSON arrays,
:mod:`casstore.sample_lines` for JSON-lines, CSV and text). Memory is bounded by the
chunk size and, for a random sample, by its N records, never by the input:

* head: the first N records (from ``offset``); reading stops once they are in hand.
* random: reservoir sampling (Li's algorithm L, which draws how many records to skip
  rather than a number per record), output in input order.
* systematic: the records at 0-based positions ``offset``, ``offset + K``, … .

The output keeps the input's record format, uncompressed: a JSON array gives a JSON
array (``[`` then the elements, each its input bytes, joined by ``,\\n``, then ``]\\n``),
JSON-lines and text give their lines, CSV its header row and then the sampled rows.
Malformed input raises :class:`~casstore.errors.SampleFormatError` naming the record
and the byte offset in the decompressed data, and nothing is stored.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import zstandard
from pydantic import BaseModel

from casstore.errors import InvalidRefName, SampleFormatError, UsageError
from casstore.jsonstream import JsonArrayScanner, Picker, format_error
from casstore.meta.context import current_link
from casstore.objects import ObjectWriter, corrupt
from casstore.records import SampleRecord, valid_records
from casstore.refs import check_ref_name, whoami
from casstore.sample_input import StreamEnded, open_input, read_chunks
from casstore.sample_lines import LineScanner

if TYPE_CHECKING:
    from casstore.store import Store

SAMPLER_VERSION = "1"
Regime = Literal["head", "random", "systematic"]
REGIMES: tuple[Regime, ...] = ("head", "random", "systematic")
ProgressFn = Callable[[int], None]

# Reading sizes: a head sample reads in small pieces so it stops soon after its N
# records; a full pass reads in larger ones and decompresses ahead in a helper thread.
_HEAD_READ, _HEAD_OUT = 64 * 1024, 256 * 1024
_FULL_READ, _FULL_OUT = 1 << 20, 1 << 20


class SampleResult(BaseModel):
    """What :func:`sample_object` made (or found already made)."""

    object: str
    record_id: str
    reused: bool
    ref: str
    parent: str
    regime: Regime
    n_requested: int | None
    n_taken: int
    input_format: str
    output_format: str
    size: int
    record: dict[str, Any]


@dataclass(frozen=True)
class Recipe:
    """A regime with its parameters, checked and normalised (what the key is made of)."""

    regime: Regime
    n: int | None
    seed: int | None
    stride: int | None
    offset: int | None

    def key(self, parent: str) -> str:
        """The SHA-256 of the canonical JSON of the recipe for ``parent``."""
        doc = {
            "parent": parent,
            "regime": self.regime,
            "n": self.n,
            "seed": self.seed,
            "stride": self.stride,
            "offset": self.offset,
            "sampler_version": SAMPLER_VERSION,
        }
        data = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(data.encode()).hexdigest()


def make_recipe(
    regime: str,
    *,
    n: int | None = None,
    seed: int | None = None,
    stride: int | None = None,
    offset: int = 0,
) -> Recipe:
    """Check a regime's parameters and fill in defaults (random: seed 0).

    Raises:
        UsageError: an unknown regime, a missing or out-of-range parameter, or one the
            regime does not take.
    """
    if regime not in REGIMES:
        raise UsageError(f"unknown sampling regime {regime!r} (head, random or systematic)")
    if offset is None or offset < 0:
        raise UsageError("the offset must be 0 or more")
    if regime in ("head", "random"):
        if n is None or n < 1:
            raise UsageError(f"a {regime} sample needs a number of records of at least 1")
        if stride is not None:
            raise UsageError(f"a {regime} sample takes no stride (that is for systematic)")
    if regime == "head":
        if seed is not None:
            raise UsageError("a head sample takes no seed")
        return Recipe("head", n, None, None, offset)
    if regime == "random":
        if offset:
            raise UsageError("a random sample takes no offset")
        if seed is not None and seed < 0:
            raise UsageError("the seed must be 0 or more")
        return Recipe("random", n, 0 if seed is None else seed, None, None)
    if stride is None or stride < 1:
        raise UsageError("a systematic sample needs a stride K of at least 1")
    if n is not None:
        raise UsageError("a systematic sample takes every K-th record: no count")
    if seed is not None:
        raise UsageError("a systematic sample takes no seed")
    return Recipe("systematic", None, None, stride, offset)


def default_ref(parent: str, source_id: str | None, recipe: Recipe, seed_given: bool) -> str:
    """``samples/<source id or 12 hex of the parent>/<regime>-<n>`` and variants."""
    if recipe.regime == "systematic":
        tail = f"systematic-{recipe.stride}"
    else:
        tail = f"{recipe.regime}-{recipe.n}"
    if recipe.regime == "random" and seed_given:
        tail += f"-s{recipe.seed}"
    if recipe.offset:
        tail += f"-o{recipe.offset}"
    for owner in (source_id, parent[:12]):
        if owner:
            name = f"samples/{owner}/{tail}"
            try:
                return check_ref_name(name)
            except InvalidRefName:
                continue
    raise AssertionError("unreachable: a hex prefix is always a valid ref component")


# ---- pickers --------------------------------------------------------------------------
class HeadPicker:
    """The first ``n`` records from ``offset``, passed straight to the output."""

    def __init__(self, n: int, offset: int, emit: Callable[[bytes], None]) -> None:
        self.want = offset
        self.end = offset + n
        self.emit = emit
        self.taken = 0

    def take(self, index: int, record: bytes) -> None:
        """Write the record; want the next one until ``n`` are taken."""
        self.emit(record)
        self.taken += 1
        self.want = index + 1 if index + 1 < self.end else -1


class SystematicPicker:
    """Records at ``offset``, ``offset + stride``, …, passed straight to the output."""

    def __init__(self, stride: int, offset: int, emit: Callable[[bytes], None]) -> None:
        self.want = offset
        self.stride = stride
        self.emit = emit
        self.taken = 0

    def take(self, index: int, record: bytes) -> None:
        """Write the record; want the one ``stride`` further on."""
        self.emit(record)
        self.taken += 1
        self.want = index + self.stride


class ReservoirPicker:
    """A uniform random sample of ``n`` records, reproducible from ``seed``.

    Li's algorithm L: after the reservoir fills, draw how many records to skip before
    the next replacement, so the scanner compares one index per record and the generator
    is called about ``3 n log(total / n)`` times in all. The reservoir keeps
    ``(index, bytes)`` so the sample comes out in input order.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.rng = random.Random(seed)
        self.items: list[tuple[int, bytes]] = []
        self.w = 1.0
        self.want = 0

    def _u(self) -> float:
        return 1.0 - self.rng.random()  # in (0, 1]: safe for log

    def _skip(self) -> int:
        if self.w >= 1.0:
            return 0
        return min(int(math.log(self._u()) / math.log1p(-self.w)), 1 << 62)

    def take(self, index: int, record: bytes) -> None:
        """Fill the reservoir, then replace a random slot; draw the next wanted index."""
        if len(self.items) < self.n:
            self.items.append((index, record))
            if len(self.items) < self.n:
                self.want = index + 1
                return
        else:
            self.items[self.rng.randrange(self.n)] = (index, record)
        self.w *= math.exp(math.log(self._u()) / self.n)
        self.want = index + 1 + self._skip()

    @property
    def taken(self) -> int:
        """Records in the reservoir."""
        return len(self.items)

    def records(self) -> list[bytes]:
        """The sample, in input order."""
        return [record for _, record in sorted(self.items, key=lambda item: item[0])]


# ---- output ---------------------------------------------------------------------------
class SampleOutput:
    """Writes records in the input's record format to an object writer."""

    def __init__(self, writer: ObjectWriter, fmt: str) -> None:
        self.writer = writer
        self.json = fmt == "json"
        self.count = 0
        if self.json:
            writer.write(b"[")

    def header(self, row: bytes) -> None:
        """CSV: the header row, written before any record."""
        self.writer.write(row)

    def emit(self, record: bytes) -> None:
        """One record: an element of the array, or a line (with its newline)."""
        if self.json and self.count:
            self.writer.write(b",\n")
        self.writer.write(record)
        self.count += 1

    def close(self) -> None:
        """End the document (a JSON array's ``]``)."""
        if self.json:
            self.writer.write(b"]\n")


# ---- the operation --------------------------------------------------------------------
def sample_object(
    store: Store,
    spec: str,
    *,
    regime: str,
    n: int | None = None,
    seed: int | None = None,
    stride: int | None = None,
    offset: int = 0,
    ref: str | None = None,
    progress: ProgressFn | None = None,
    on_total: Callable[[int | None], None] | None = None,
) -> SampleResult:
    """Cut a sample from the object ``spec`` names, store it with a ``sample`` record.

    ``regime`` is ``head`` (``n`` records from ``offset``), ``random`` (``n`` records,
    ``seed`` default 0) or ``systematic`` (every ``stride``-th record from ``offset``).
    The ref ``ref`` (default ``samples/<source or short id>/<regime>-<n>…``) is moved to
    the sample. When the same recipe was sampled before and its object is still there,
    that object is returned (``reused``) without reading the parent. ``progress`` gets
    byte counts of the parent as it is read, ``on_total`` its size first (when known).

    Raises:
        UsageError: bad parameters. ObjectNotFound: no such parent.
        SampleFormatError: malformed input (nothing is stored).
        UnsupportedFormat: binary data or a container format.
    """
    recipe = make_recipe(regime, n=n, seed=seed, stride=stride, offset=offset)
    if ref is not None:
        check_ref_name(ref)
        store.refs.check_free(ref)
    parent = store.resolve(spec)
    key = recipe.key(parent)
    parent_records = [r for _, r in valid_records(store.objects.dir, parent)]
    source_id, dataset = _lineage(parent_records)
    ref_name = ref or default_ref(parent, source_id, recipe, seed is not None)
    memo = _memo(store, key)
    if memo is not None:
        oid, rid, record = memo
        with store.lock.hold(), store.writing():
            store._move_ref(ref_name, oid, message="sample")
        return _result(oid, rid, record, reused=True, ref=ref_name)
    if on_total is not None:
        on_total(parent_records[-1].size if parent_records else None)
    with store.lock.hold():  # shared: gc (exclusive) waits until the ref points here
        writer = store.objects.writer()
        try:
            picker, input_label, output_format = _cut(store, parent, recipe, writer, progress)
            writer.finish()
        except BaseException:
            writer.abort()  # malformed input, an interrupt: nothing is stored
            raise
        user, host = whoami()
        # Object, record, index, ref: a death in here is noticed (the index is rebuilt).
        try:
            with store.writing():
                stored = writer.place()
                record = SampleRecord(
                    object=stored.id,
                    size=stored.size,
                    blake3=stored.blake3,
                    parents=(parent,),
                    user=user,
                    host=host,
                    source_id=source_id,
                    dataset=dataset,
                    regime=recipe.regime,
                    n_requested=recipe.n,
                    n_taken=picker.taken,
                    seed=recipe.seed,
                    offset=recipe.offset,
                    stride=recipe.stride,
                    input_format=input_label,
                    output_format=output_format,
                    sampler_version=SAMPLER_VERSION,
                    recipe=key,
                    pipeline=current_link(),
                )
                rid = store.record_object(stored, record)
                store._move_ref(ref_name, stored.id, message="sample")
        except BaseException:
            writer.abort()  # before the place: drops the temporary file; after: harmless
            raise
    return _result(stored.id, rid, record, reused=False, ref=ref_name)


def _lineage(records: list[Any]) -> tuple[str | None, str | None]:
    """Source id and dataset of the parent's newest record that names a source."""
    for record in reversed(records):
        if record.source_id is not None:
            return record.source_id, record.dataset
    return None, None


def _memo(store: Store, key: str) -> tuple[str, str, SampleRecord] | None:
    """A stored sample made by this recipe whose bytes are still present."""
    for oid, rid in store.index.by_recipe(key):
        if not store.objects.exists(oid):
            continue
        for found_id, record in valid_records(store.objects.dir, oid):
            if found_id == rid and isinstance(record, SampleRecord) and record.recipe == key:
                return oid, rid, record
    return None


def _result(oid: str, rid: str, record: SampleRecord, *, reused: bool, ref: str) -> SampleResult:
    return SampleResult(
        object=oid,
        record_id=rid,
        reused=reused,
        ref=ref,
        parent=record.parents[0],
        regime=record.regime,
        n_requested=record.n_requested,
        n_taken=record.n_taken,
        input_format=record.input_format,
        output_format=record.output_format,
        size=record.size,
        record=record.model_dump(mode="json", exclude_none=True),
    )


def _cut(
    store: Store,
    parent: str,
    recipe: Recipe,
    writer: ObjectWriter,
    progress: ProgressFn | None,
) -> tuple[HeadPicker | SystematicPicker | ReservoirPicker, str, str]:
    """Stream the parent through a scanner into ``writer``; return the picker and formats."""
    head = recipe.regime == "head"
    read_size, out_size = (_HEAD_READ, _HEAD_OUT) if head else (_FULL_READ, _FULL_OUT)
    with store.objects.open(parent) as f:
        raw = _stored_bytes(parent, read_chunks(f, read_size, progress))
        try:
            src = open_input(raw, out_size=out_size, threaded=not head)
        except StreamEnded as exc:
            raise format_error("input", 1, exc.offset, str(exc)) from None
        chunks = src.chunks
        out = SampleOutput(writer, src.format)
        picker: HeadPicker | SystematicPicker | ReservoirPicker
        if recipe.regime == "random":
            picker = ReservoirPicker(recipe.n or 0, recipe.seed or 0)
        elif head:
            picker = HeadPicker(recipe.n or 0, recipe.offset or 0, out.emit)
        else:
            picker = SystematicPicker(recipe.stride or 1, recipe.offset or 0, out.emit)
        scanner = _scanner(src.format, picker, out)
        try:
            for chunk in chunks:
                if not scanner.feed(chunk):
                    break
            else:
                scanner.finish()
        except StreamEnded as exc:
            raise format_error(
                src.format,
                scanner.count + 1,
                exc.offset,
                f"{exc} (after record {scanner.count})",
            ) from None
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # stops the read-ahead thread
    if isinstance(picker, ReservoirPicker):
        for record in picker.records():
            out.emit(record)
    out.close()
    return picker, src.label, src.format


def _scanner(fmt: str, picker: Picker, out: SampleOutput) -> JsonArrayScanner | LineScanner:
    if fmt == "json":
        return JsonArrayScanner(picker)
    return LineScanner(picker, fmt, on_header=out.header if fmt == "csv" else None)


def _stored_bytes(oid: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The parent's bytes; a stored zstd frame that does not decode is the store's fault."""
    try:
        yield from chunks
    except zstandard.ZstdError as exc:
        raise corrupt(oid, exc) from exc


__all__ = [
    "REGIMES",
    "SAMPLER_VERSION",
    "HeadPicker",
    "Recipe",
    "ReservoirPicker",
    "SampleFormatError",
    "SampleResult",
    "SystematicPicker",
    "default_ref",
    "make_recipe",
    "sample_object",
]
