"""A state machine over a store: adds, derives, samples, ref moves, pins and gc runs.

The model knows, independently of casstore, every object with the parents its records name,
which objects were imported (sources), the refs, their reflogs and the pins. After each gc
exactly the model's keep-set must remain:

    closure under parents of (ref targets ∪ pins ∪ reflog entries not expired ∪ protected
    sources), where protected sources are imported objects unless include_sources,

and ``verify`` must find nothing wrong. gc always runs with grace 0 (the grace period has
its own tests), so nothing is kept for being young.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from casstore.gc import GcPolicy, gc, pin
from casstore.store import Store
from casstore.verify import verify
from tests.maint._maint import add_sample

# A small pool, so derived bytes sometimes equal imported ones (one object, two records).
CONTENTS = [f"content {i}\n".encode() for i in range(5)]
REFS = ["tags/a", "tags/b", "sources/s", "samples/s/x", "samples/s/y"]
HUGE = 10 * 365 * 86400.0


class GcMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="gc-machine-"))
        self.store = Store.init(self.dir)
        self.parents: dict[str, set[str]] = {}  # object -> parents named by its records
        self.sources: set[str] = set()  # objects with an import record (no parents)
        self.refs: dict[str, str] = {}
        self.reflog: list[tuple[str | None, str | None]] = []  # every ref's, together
        self.pins: set[str] = set()

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _objects(self) -> list[str]:
        return sorted(self.parents)

    # ---- writes ---------------------------------------------------------------------
    @rule(content=st.sampled_from(CONTENTS))
    def add(self, content: bytes) -> None:
        oid = self.store.add(io.BytesIO(content)).id
        self.parents.setdefault(oid, set())
        self.sources.add(oid)

    @precondition(lambda self: self.parents)
    @rule(content=st.sampled_from(CONTENTS), data=st.data())
    def derive(self, content: bytes, data: st.DataObject) -> None:
        parents = data.draw(
            st.lists(st.sampled_from(self._objects()), min_size=1, max_size=2, unique=True)
        )
        oid = self.store.add(io.BytesIO(content), parents=parents, transform="t").id
        self.parents.setdefault(oid, set()).update(parents)

    @precondition(lambda self: self.parents)
    @rule(content=st.sampled_from(CONTENTS), data=st.data())
    def sample(self, content: bytes, data: st.DataObject) -> None:
        parent = data.draw(st.sampled_from(self._objects()))
        oid = add_sample(self.store, parent, b"sample of " + content)
        self.parents.setdefault(oid, set()).add(parent)

    # ---- refs and pins --------------------------------------------------------------
    @precondition(lambda self: self.parents)
    @rule(name=st.sampled_from(REFS), data=st.data())
    def set_ref(self, name: str, data: st.DataObject) -> None:
        oid = data.draw(st.sampled_from(self._objects()))
        update = self.store.set_ref(name, oid)
        assert update.old == self.refs.get(name)
        if update.changed:
            self.reflog.append((update.old, oid))
        self.refs[name] = oid

    @precondition(lambda self: self.refs)
    @rule(data=st.data())
    def remove_ref(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.refs)))
        self.store.delete_ref(name)
        self.reflog.append((self.refs.pop(name), None))

    @precondition(lambda self: self.parents)
    @rule(data=st.data())
    def pin(self, data: st.DataObject) -> None:
        oid = data.draw(st.sampled_from(self._objects()))
        assert pin(self.store, oid) == oid
        self.pins.add(oid)

    @precondition(lambda self: self.pins)
    @rule(data=st.data())
    def unpin(self, data: st.DataObject) -> None:
        oid = data.draw(st.sampled_from(sorted(self.pins)))
        pin(self.store, oid, on=False)
        self.pins.discard(oid)

    # ---- gc -------------------------------------------------------------------------
    @rule(expire_all=st.booleans(), include_sources=st.booleans())
    def gc(self, expire_all: bool, include_sources: bool) -> None:
        roots = set(self.refs.values()) | self.pins
        if not expire_all:
            roots |= {oid for move in self.reflog for oid in move if oid}
        if not include_sources:
            roots |= self.sources
        keep: set[str] = set()
        todo = [r for r in roots if r in self.parents]
        while todo:
            oid = todo.pop()
            if oid not in keep:
                keep.add(oid)
                todo.extend(p for p in self.parents[oid] if p in self.parents)

        policy = GcPolicy(
            grace=0, reflog_expire=0 if expire_all else HUGE, include_sources=include_sources
        )
        report = gc(self.store, policy)
        remaining = set(self.store.objects.ids())
        assert remaining == keep, (
            f"kept but not reachable: {sorted(remaining - keep)};"
            f" reachable but removed: {sorted(keep - remaining)}"
        )
        assert {item.object for item in report.objects} == set(self.parents) - keep
        problems = verify(self.store).problems
        assert problems == [], problems

        self.parents = {oid: ps for oid, ps in self.parents.items() if oid in keep}
        self.sources &= keep
        if expire_all:
            self.reflog = []

    # ---- always ---------------------------------------------------------------------
    @invariant()
    def files_match_the_model(self) -> None:
        assert set(self.store.objects.ids()) == set(self.parents)
        assert self.store.refs.items() == self.refs
        assert {p.name for p in (self.store.root / "pins").glob("*")} == self.pins


GcMachine.TestCase.settings = settings(
    settings.default,
    max_examples=min(20, settings.default.max_examples),
    stateful_step_count=20,
    deadline=None,
)
TestGcMachine = GcMachine.TestCase
