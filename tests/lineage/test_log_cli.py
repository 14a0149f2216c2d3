"""`cas log`, `cas why`, `cas stale`: what the user sees, on small hand-built graphs."""

from __future__ import annotations

import io

from casstore.store import Store
from tests.lineage._records import put_download, put_sample, when

# ---- cas log: one line per node --------------------------------------------------------


def test_log_shows_each_ancestor_with_its_type_time_and_fact(store: Store, cas):
    raw = put_download(store, b'{"a": 1}\n' * 20, source_id="stars")
    store.set_ref("sources/stars", raw)
    sample = put_sample(store, raw, b'{"a": 1}\n' * 5, n=5, seed=7)
    table = store.add(
        io.BytesIO(b"a\n1\n"), parents=[sample], transform="to-csv", params={"sep": ",", "q": "1"}
    ).id

    result = cas("log", table[:10])
    assert result.exit_code == 0, result
    assert result.lines == [
        f"{table[:12]}  derive    {when(store, table)}  to-csv q=1 sep=,",
        f"  {sample[:12]}  sample    {when(store, sample)}  random n=5 seed=7",
        f"    {raw[:12]}  download  {when(store, raw)}"
        '  https://data.example.org/dump.json.gz etag "v1-abc"  [sources/stars]',
    ]
    assert result.stderr == ""


def test_log_of_a_root_shows_only_itself(store: Store, cas, tmp_path):
    (tmp_path / "plain.txt").write_bytes(b"plain\n")
    oid = store.add(tmp_path / "plain.txt", ref="tags/plain").id
    result = cas("log", "tags/plain")
    assert result.exit_code == 0, result
    assert result.lines == [
        f"{oid[:12]}  import    {when(store, oid)}  {tmp_path / 'plain.txt'}  [tags/plain]"
    ]


def test_log_children_lists_everything_derived_transitively(store: Store, cas, diamond):
    a, b, c, d = (diamond[k] for k in "ABCD")
    other = store.add(io.BytesIO(b"unrelated\n")).id
    result = cas("log", "--children", a)
    assert result.exit_code == 0, result
    shown = {line.split()[0] for line in result.lines}
    assert shown == {x[:12] for x in (a, b, c, d)}
    assert other[:12] not in result.stdout
    assert result.lines[0].startswith(a[:12])
    assert result.lines[-1] == f"    {d[:12]}  derive    {when(store, d)}  join"


def test_log_depth_stops_that_many_steps_away(store: Store, cas, diamond):
    result = cas("log", "--depth", "1", diamond["D"])
    assert result.exit_code == 0, result
    shown = [line.split()[0] for line in result.lines]
    assert sorted(shown) == sorted(diamond[k][:12] for k in "BCD")
    assert cas("log", "--depth", "0", diamond["D"]).lines == [
        f"{diamond['D'][:12]}  derive    {when(store, diamond['D'])}  join"
    ]
    bad = cas("log", "--depth", "-1", diamond["D"])
    assert bad.exit_code == 2
    assert bad.stderr.startswith("cas: error:")


def test_log_of_an_unknown_object_is_one_error_line(store: Store, cas):
    result = cas("log", "deadbeef")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("cas: error:")


# ---- cas log --graph -------------------------------------------------------------------


def label(store: Store, oid: str, kind: str, fact: str) -> str:
    return f"{oid[:12]}  {kind:<8}  {when(store, oid)}  {fact}"


def test_graph_draws_a_diamond_with_the_shared_ancestor_once(store: Store, cas, diamond):
    a, b, c, d = (diamond[k] for k in "ABCD")
    result = cas("log", "--graph", d)
    assert result.exit_code == 0, result
    assert result.lines == [
        label(store, d, "derive", "join"),
        "├── " + label(store, b, "derive", "left"),
        "│   └── " + label(store, a, "import", "-"),
        "└── " + label(store, c, "derive", "right"),
        f"    └── {a[:12]}  (shown above)",
    ]


def test_graph_children_of_the_diamond_top(store: Store, cas, diamond):
    a, b, c, d = (diamond[k] for k in "ABCD")
    result = cas("log", "--graph", "--children", a)
    assert result.exit_code == 0, result
    assert result.lines == [
        label(store, a, "import", "-"),
        "├── " + label(store, b, "derive", "left"),
        "│   └── " + label(store, d, "derive", "join"),
        "└── " + label(store, c, "derive", "right"),
        f"    └── {d[:12]}  (shown above)",
    ]


def test_graph_lists_every_parent_of_a_node_with_several(store: Store, cas):
    parents = [store.add(io.BytesIO(f"part {i}\n".encode())).id for i in range(3)]
    merged = store.add(io.BytesIO(b"merged\n"), parents=parents, transform="concat").id
    result = cas("log", "--graph", merged)
    assert result.exit_code == 0, result
    assert result.lines[0] == label(store, merged, "derive", "concat")
    assert result.lines[1:] == [
        "├── " + label(store, parents[0], "import", "-"),
        "├── " + label(store, parents[1], "import", "-"),
        "└── " + label(store, parents[2], "import", "-"),
    ]


# ---- cas log --json --------------------------------------------------------------------


def test_log_json_has_nodes_and_edges(store: Store, cas, diamond):
    a, b, c, d = (diamond[k] for k in "ABCD")
    doc = cas("log", "--json", d).json()
    assert doc["root"] == d
    assert doc["direction"] == "ancestors"
    assert {n["id"]: n["depth"] for n in doc["nodes"]} == {d: 0, b: 1, c: 1, a: 2}
    by_id = {n["id"]: n for n in doc["nodes"]}
    assert by_id[d]["type"] == "derive"
    assert by_id[d]["fact"] == "join"
    assert by_id[a]["type"] == "import"
    assert {(e["child"], e["parent"]) for e in doc["edges"]} == {(d, b), (d, c), (b, a), (c, a)}
    [(rid, _)] = store.records(d)
    assert {e["record"] for e in doc["edges"] if e["child"] == d} == {rid}

    down = cas("log", "--json", "--children", b).json()
    assert down["direction"] == "descendants"
    assert {n["id"] for n in down["nodes"]} == {b, d}
    assert {(e["child"], e["parent"]) for e in down["edges"]} == {(d, b)}


# ---- cas log --history -----------------------------------------------------------------


def test_history_of_a_source_ref_lists_its_versions(store: Store, cas):
    v1 = put_download(store, b"version one\n", source_id="s")
    store.set_ref("sources/s", v1)
    v2 = put_download(store, b"version two\n", source_id="s", etag='"v2"')
    store.set_ref("sources/s", v2)
    for spec in ("sources/s", "s"):
        result = cas("log", "--history", spec)
        assert result.exit_code == 0, result
        assert len(result.lines) == 2, result
        # time, action, old -> new (the same columns as cas ref log)
        assert result.lines[0].split()[2:6] == ["set", "-", "->", v1[:12]]
        assert result.lines[1].split()[2:6] == ["set", v1[:12], "->", v2[:12]]
    doc = cas("log", "--history", "--json", "sources/s").json()
    assert [(e["old"], e["new"]) for e in doc] == [(None, v1), (v1, v2)]
    assert all(e["ref"] == "sources/s" for e in doc)


def test_history_of_a_removed_source_ref_is_still_shown(store: Store, cas):
    # The reflog outlives the ref (``cas ref log`` shows it): the versions a source had
    # are still worth knowing after the source is dropped.
    v1 = put_download(store, b"version one\n", source_id="gone")
    store.set_ref("sources/gone", v1)
    store.delete_ref("sources/gone")
    result = cas("log", "--history", "sources/gone")
    assert result.exit_code == 0, result
    assert result.lines[0].split()[2:6] == ["set", "-", "->", v1[:12]]
    assert result.lines[-1].split()[2] == "delete"


def test_history_of_a_missing_ref_is_an_error(store: Store, cas):
    result = cas("log", "--history", "sources/nothing")
    assert result.exit_code != 0
    assert result.stdout == ""
    assert result.stderr.startswith("cas: error:")


# ---- cas why ---------------------------------------------------------------------------


def test_why_prints_each_path(store: Store, cas, diamond):
    a, b, c, d = (diamond[k] for k in "ABCD")
    result = cas("why", d, a)
    assert result.exit_code == 0, result
    assert sorted(result.lines) == sorted(
        [f"{d[:12]} <- {b[:12]} <- {a[:12]}", f"{d[:12]} <- {c[:12]} <- {a[:12]}"]
    )
    assert cas("why", d, b).lines == [f"{d[:12]} <- {b[:12]}"]
    doc = cas("why", "--json", d, a).json()
    assert sorted(doc) == sorted([[d, b, a], [d, c, a]])


def test_why_exits_1_when_there_is_no_path(store: Store, cas, diamond):
    for obj, anc in ((diamond["B"], diamond["C"]), (diamond["A"], diamond["D"])):
        result = cas("why", obj, anc)
        assert result.exit_code == 1, result
        assert result.stdout == ""
        assert result.stderr == f"{obj} does not depend on {anc}\n"
    as_json = cas("why", "--json", diamond["B"], diamond["C"])
    assert as_json.exit_code == 1
    assert as_json.json() == []


# ---- cas stale -------------------------------------------------------------------------


def test_stale_lists_what_was_built_from_an_old_version(store: Store, cas):
    v1 = store.add(io.BytesIO(b"source v1\n"), source_id="s", ref="sources/s").id
    x = store.add(io.BytesIO(b"x from v1\n"), parents=[v1], transform="norm").id
    y = store.add(io.BytesIO(b"y from x\n"), parents=[x], transform="plot").id
    assert cas("stale").stdout == ""

    v2 = put_download(store, b"source v2\n", source_id="s")
    store.set_ref("sources/s", v2)
    fresh = store.add(io.BytesIO(b"x from v2\n"), parents=[v2], transform="norm").id
    result = cas("stale")
    assert result.exit_code == 0, result
    assert sorted(result.lines) == sorted(
        [
            f"{x[:12]}  sources/s  built from {v1[:12]}  now {v2[:12]}",
            f"{y[:12]}  sources/s  built from {v1[:12]}  now {v2[:12]}",
        ]
    )
    assert fresh[:12] not in result.stdout
    doc = cas("stale", "--json").json()
    assert sorted(doc, key=lambda i: i["object"]) == sorted(
        [
            {"object": x, "ref": "sources/s", "built_from": v1, "current": v2},
            {"object": y, "ref": "sources/s", "built_from": v1, "current": v2},
        ],
        key=lambda i: i["object"],
    )


def test_stale_ignores_other_sources_and_unmoved_refs(store: Store, cas):
    t1 = store.add(io.BytesIO(b"t v1\n"), source_id="t", ref="sources/t").id
    store.add(io.BytesIO(b"from t\n"), parents=[t1], transform="norm")
    other = put_download(store, b"other source\n", source_id="u")
    store.set_ref("sources/u", other)
    store.add(io.BytesIO(b"from u\n"), parents=[other], transform="norm")
    result = cas("stale")
    assert result.exit_code == 0, result
    assert result.stdout == ""
    assert cas("stale", "--json").json() == []
