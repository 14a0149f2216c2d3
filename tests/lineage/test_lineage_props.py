"""Lineage queries on random DAGs built through the API, checked against brute force.

Each example builds a fresh store: nodes are small distinct byte strings added with
``Store.add(parents=[...])`` (parents among earlier nodes, so the graph is acyclic), and a
few nodes get a second record naming other parents (an object made twice, two ways: its
parents are the union). The expected answers come from the parent map the test keeps
itself, never from the index.
"""

from __future__ import annotations

import io
import itertools
import tempfile
from collections import deque
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from casstore.lineage import MAX_PATHS
from casstore.store import Store

EXAMPLES = min(30, settings.default.max_examples)
TRANSFORMS = [None, "clean", "join", "normalize", "to-csv"]
params_st = st.dictionaries(
    st.sampled_from(["units", "k", "mode"]), st.sampled_from(["ly", "1", "a b", "x=y"]), max_size=2
)


@dataclass
class Plan:
    """What to add: one record per entry, in order; ``node`` indexes the contents."""

    size: int
    adds: list[tuple[int, tuple[int, ...], str | None, dict[str, str]]]
    parents: dict[int, set[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.parents = {i: set() for i in range(self.size)}
        for node, ps, _, _ in self.adds:
            self.parents[node] |= set(ps)

    @property
    def children(self) -> dict[int, set[int]]:
        out: dict[int, set[int]] = {i: set() for i in range(self.size)}
        for child, ps in self.parents.items():
            for p in ps:
                out[p].add(child)
        return out


@st.composite
def plans(draw, max_nodes: int = 25) -> Plan:
    size = draw(st.integers(1, max_nodes))
    adds = []
    for i in range(size):
        ps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=min(i, 3))) if i else []
        transform = draw(st.sampled_from(TRANSFORMS)) if ps else None
        params = draw(params_st) if ps else {}
        adds.append((i, tuple(ps), transform, params))
    if size > 1:
        # Some objects made a second time from other parents: a second derive record.
        for _ in range(draw(st.integers(0, 3))):
            node = draw(st.integers(1, size - 1))
            ps = draw(st.lists(st.integers(0, node - 1), unique=True, min_size=1, max_size=2))
            adds.append((node, tuple(ps), draw(st.sampled_from(TRANSFORMS)), {}))
    return Plan(size, adds)


def content(i: int) -> bytes:
    return f"node {i}\n".encode()


def build(store: Store, plan: Plan) -> list[str]:
    ids: dict[int, str] = {}
    for node, ps, transform, params in plan.adds:
        result = store.add(
            io.BytesIO(content(node)),
            parents=[ids[p] for p in ps],
            transform=transform,
            params=params,
        )
        ids[node] = result.id
    return [ids[i] for i in range(plan.size)]


def distances(start: int, nexts: dict[int, set[int]]) -> dict[int, int]:
    """Shortest number of steps from ``start`` to everything reachable (itself: 0)."""
    seen = {start: 0}
    queue = deque([start])
    while queue:
        n = queue.popleft()
        for m in nexts[n]:
            if m not in seen:
                seen[m] = seen[n] + 1
                queue.append(m)
    return seen


def count_paths(a: int, b: int, parents: dict[int, set[int]]) -> int:
    memo: dict[int, int] = {}

    def count(n: int) -> int:
        if n == b:
            return 1
        if n not in memo:
            memo[n] = sum(count(p) for p in parents[n])
        return memo[n]

    return count(a)


def all_paths(a: int, b: int, parents: dict[int, set[int]]) -> set[tuple[int, ...]]:
    out: set[tuple[int, ...]] = set()

    def walk(n: int, path: tuple[int, ...]) -> None:
        if n == b:
            out.add(path)
            return
        for p in parents[n]:
            walk(p, (*path, p))

    walk(a, (a,))
    return out


def expected_fact(transform: str | None, params: dict[str, str], derived: bool) -> str:
    if not derived:
        return "-"  # an import from a stream without a name
    shown = " ".join(f"{k}={v}" for k, v in sorted(params.items()))
    return " ".join(x for x in (transform or "derived", shown) if x)


@settings(max_examples=EXAMPLES)
@given(plan=plans(), depth=st.integers(0, 4))
def test_log_gives_exactly_the_ancestors_and_descendants(tmp_path, plan: Plan, depth: int):
    with tempfile.TemporaryDirectory(dir=tmp_path) as d, Store.init(d) as store:
        ids = build(store, plan)
        index_of = {oid: i for i, oid in enumerate(ids)}
        first = {}
        for node, ps, transform, params in plan.adds:
            first.setdefault(node, expected_fact(transform, params, bool(ps)))
        children = plan.children
        for i, oid in enumerate(ids):
            for direction, nexts, kwargs in (
                ("ancestors", plan.parents, {}),
                ("descendants", children, {"children": True}),
            ):
                want = distances(i, nexts)
                lin = store.log(oid, **kwargs)
                assert lin.root == oid
                assert lin.direction == direction
                got = {index_of[n.id]: n.depth for n in lin.nodes}
                assert got == want, (direction, i)
                assert [n.depth for n in lin.nodes] == sorted(n.depth for n in lin.nodes)
                edges = {(index_of[e.child], index_of[e.parent]) for e in lin.edges}
                assert edges == {
                    (c, p)
                    for c in range(plan.size)
                    for p in plan.parents[c]
                    if c in want and p in want
                }
                for n in lin.nodes:
                    assert n.fact == first[index_of[n.id]]
                    assert n.type == ("derive" if plan.adds[index_of[n.id]][1] else "import")

                near = store.log(oid, depth=depth, **kwargs)
                got = {index_of[n.id]: n.depth for n in near.nodes}
                assert got == {n: k for n, k in want.items() if k <= depth}, (direction, i)


@settings(max_examples=EXAMPLES)
@given(plan=plans())
def test_why_gives_exactly_the_paths(tmp_path, plan: Plan):
    with tempfile.TemporaryDirectory(dir=tmp_path) as d, Store.init(d) as store:
        ids = build(store, plan)
        index_of = {oid: i for i, oid in enumerate(ids)}
        for a in range(plan.size):
            ancestors = distances(a, plan.parents)
            for b in range(plan.size):
                found = [tuple(index_of[x] for x in path) for path in store.why(ids[a], ids[b])]
                if b not in ancestors:
                    assert found == [], (a, b)
                    continue
                assert len(set(found)) == len(found), "a path listed twice"
                total = count_paths(a, b, plan.parents)
                if total <= MAX_PATHS:
                    assert set(found) == all_paths(a, b, plan.parents), (a, b)
                else:  # capped: every one listed is still a real path
                    assert len(found) == MAX_PATHS
                    for path in found:
                        assert path[0] == a and path[-1] == b
                        assert all(q in plan.parents[p] for p, q in itertools.pairwise(path))
