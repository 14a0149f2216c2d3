"""A state machine for refs: compare-and-swap, deletes, name clashes, reflogs."""

import itertools
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from casstore.errors import RefConflict, RefNotFound
from casstore.refs import RefStore
from tests._helpers import sha256

NAMES = ["a", "a/b", "a/b/c", "a/d", "x", "tags/v1", "tags/v1/rc", "tags/v2"]
OIDS = [sha256(bytes([i])) for i in range(4)]


def clashes(name: str, existing: dict[str, str]) -> bool:
    return any(
        other != name and (other.startswith(name + "/") or name.startswith(other + "/"))
        for other in existing
    )


class Refs(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="refs-machine-"))
        (self.dir / "refs").mkdir()
        self.refs = RefStore(self.dir, lock_timeout=2)
        self.model: dict[str, str] = {}
        self.log_len: dict[str, int] = {}

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(
        name=st.sampled_from(NAMES),
        oid=st.sampled_from(OIDS),
        mode=st.sampled_from(["any", "right", "wrong"]),
    )
    def set(self, name: str, oid: str, mode: str) -> None:
        current = self.model.get(name)
        kwargs = {}
        if mode == "right":
            kwargs["expected"] = current
        elif mode == "wrong":
            kwargs["expected"] = next(o for o in [None, *OIDS] if o != current)
        if clashes(name, self.model) or mode == "wrong":
            with pytest.raises(RefConflict):
                self.refs.set(name, oid, **kwargs)
            return
        update = self.refs.set(name, oid, **kwargs)
        assert update.old == current
        assert update.changed == (current != oid)
        if update.changed:
            self.log_len[name] = self.log_len.get(name, 0) + 1
        self.model[name] = oid

    @rule(name=st.sampled_from(NAMES))
    def delete(self, name: str) -> None:
        if name not in self.model:
            with pytest.raises(RefNotFound):
                self.refs.delete(name)
            return
        update = self.refs.delete(name)
        assert update.old == self.model.pop(name)
        self.log_len[name] += 1

    @invariant()
    def refs_match_the_model(self) -> None:
        assert list(self.refs.names()) == sorted(self.model)
        for name in NAMES:
            assert self.refs.get(name) == self.model.get(name)

    @invariant()
    def reflogs_match_the_model(self) -> None:
        for name in NAMES:
            log = self.refs.log(name)
            assert len(log) == self.log_len.get(name, 0)
            if log:
                assert log[-1].new == self.model.get(name)
            for prev, entry in itertools.pairwise(log):
                assert entry.old == prev.new

    @invariant()
    def no_lock_files_left(self) -> None:
        assert not list((self.dir / "refs").rglob("*.lock"))


TestRefs = Refs.TestCase
TestRefs.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
