"""``cas gc``: roots, reachability, protected sources, grace, reflog expiry, pins, stray tmp
files, --dry-run and --explain. After every gc the store must verify clean."""

from __future__ import annotations

import io
import json

import pytest

from casstore.cli._output import human_size
from casstore.errors import UsageError
from casstore.store import Store
from casstore.when import parse_duration
from tests._helpers import check_store, object_files
from tests.maint._maint import (
    HOUR,
    add_download,
    add_sample,
    age,
    days_ago,
    gc_ok,
    listing,
    ok,
    present,
    verify_problems,
    write_reflog,
)


def derive(store: Store, data: bytes, *parents: str, ref: str | None = None) -> str:
    return store.add(io.BytesIO(data), parents=list(parents), transform="t", ref=ref).id


def imported(store: Store, data: bytes, ref: str | None = None) -> str:
    return store.add(io.BytesIO(data), ref=ref).id


def removed_lines(result) -> dict[str, str]:
    """``{object: line}`` for each object a gc run printed as removed (or to be)."""
    out = {}
    for line in result.lines:
        words = line.removeprefix("would ").split()
        if len(words) >= 2 and words[0] == "remove" and len(words[1]) == 64:
            out[words[1]] = line
    return out


# ---- durations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("0", 0),
        ("30m", 1800),
        ("1h", 3600),
        ("90d", 90 * 86400),
        ("2w", 14 * 86400),
        ("45s", 45),
        ("1.5h", 5400),
        (" 2D ", 2 * 86400),
        ("120", 120),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "abc", "-1h", "1y", "1h30m", "1e3", "soon"])
def test_parse_duration_rejects(text):
    with pytest.raises(UsageError, match="not a duration"):
        parse_duration(text)


def test_gc_rejects_a_bad_duration(cas, store):
    result = cas("gc", "--grace", "soon")
    assert result.exit_code == 2, result
    assert "not a duration" in result.stderr


# ---- reachability -----------------------------------------------------------------------


def test_unreachable_derived_objects_go_reachable_ones_stay_with_ancestors(cas, store):
    i = imported(store, b"imported\n")
    a = derive(store, b"a\n", i)
    b = derive(store, b"b\n", a, ref="tags/b")
    c = derive(store, b"c\n", a)  # never referenced
    e = derive(store, b"e\n", c)  # derived from garbage: garbage too
    store.close()
    result = gc_ok(cas, "--grace", "0")
    assert present(store) == {i, a, b}
    lines = removed_lines(result)
    assert set(lines) == {c, e}
    assert all("unreachable" in line for line in lines.values())
    assert result.lines[-1].startswith("removed 2 object(s)"), result
    objects = store.root / "objects"
    for gone in (c, e):
        assert not (objects / gone[:2] / f"{gone[2:]}.meta").exists(), "records left behind"
    check_store(store.root)
    # a second run finds nothing more
    again = gc_ok(cas, "--grace", "0")
    assert removed_lines(again) == {}
    assert present(store) == {i, a, b}


def test_sources_are_protected_unless_include_sources(cas, store):
    kept_import = imported(store, b"kept, referenced\n", ref="tags/keep")
    lone_import = imported(store, b"nobody refers to me\n")
    lone_download = add_download(store, b"downloaded once\n", "http://127.0.0.1:1/d")
    garbage = derive(store, b"made from the lone import\n", lone_import)
    store.close()
    result = gc_ok(cas, "--grace", "0")
    assert present(store) == {kept_import, lone_import, lone_download}
    assert set(removed_lines(result)) == {garbage}
    assert "(2 unreferenced downloads/imports protected)" in result.lines[-1]

    result = gc_ok(cas, "--grace", "0", "--include-sources")
    assert present(store) == {kept_import}
    assert set(removed_lines(result)) == {lone_import, lone_download}


def test_protected_source_keeps_its_own_ancestors(cas, store):
    """Bytes that were imported and also derived from something: kept as a source, their
    derive record still names a parent, which must stay so lineage is whole."""
    base = imported(store, b"base\n")
    parent = derive(store, b"parent\n", base)
    both = imported(store, b"both imported and derived\n")
    assert derive(store, b"both imported and derived\n", parent) == both
    store.close()
    ok(cas("gc", "--grace", "0"))
    assert both in present(store)
    assert parent in present(store), "gc removed the parent of an object it kept"
    assert verify_problems(cas) == (0, [])


def test_grace_keeps_young_objects_and_their_ancestors(cas, store):
    i = imported(store, b"i\n")
    old_parent = derive(store, b"old parent\n", i)
    young = derive(store, b"young\n", old_parent)
    old_lone = derive(store, b"old and alone\n", i)
    store.close()
    files = object_files(store.root)
    age(files[old_parent], 2 * HOUR)
    age(files[old_lone], 2 * HOUR)

    result = gc_ok(cas)  # the configured grace: 1h
    assert set(removed_lines(result)) == {old_lone}
    assert present(store) == {i, old_parent, young}

    assert set(removed_lines(gc_ok(cas, "--grace", "3h"))) == set()
    age(files[young], 40 * 60)
    assert set(removed_lines(gc_ok(cas, "--grace", "1h"))) == set()
    assert set(removed_lines(gc_ok(cas, "--grace", "30m"))) == {young, old_parent}
    assert present(store) == {i}


def test_removed_ref_keeps_its_target_until_the_reflog_expires(cas, store):
    i = imported(store, b"i\n")
    d = derive(store, b"d\n", i, ref="tags/x")
    store.close()
    ok(cas("ref", "rm", "tags/x"))
    assert set(removed_lines(gc_ok(cas, "--grace", "0"))) == set()
    assert set(removed_lines(gc_ok(cas, "--grace", "0", "--reflog-expire", "30d"))) == set()
    assert d in present(store)

    # the same history, two months old
    write_reflog(store.root, "tags/x", [(days_ago(61), None, d), (days_ago(60), d, None)])
    assert set(removed_lines(gc_ok(cas, "--grace", "0"))) == set()  # 90 days by default
    result = gc_ok(cas, "--grace", "0", "--reflog-expire", "30d")
    assert set(removed_lines(result)) == {d}
    assert "2 reflog entries expired" in result.lines[-1]
    log = store.root / "logs" / "refs" / "tags%2Fx"
    assert not log.exists() or log.read_text() == ""


def test_reflog_expiry_drops_old_entries_only(cas, store):
    i = imported(store, b"i\n")
    v1, v2, v3 = (derive(store, f"v{n}\n".encode(), i) for n in (1, 2, 3))
    store.set_ref("tags/x", v3)
    store.close()
    write_reflog(
        store.root,
        "tags/x",
        [(days_ago(60), None, v1), (days_ago(59), v1, v2), (days_ago(1), v2, v3)],
    )
    result = gc_ok(cas, "--grace", "0", "--reflog-expire", "30d")
    # v2 is the old side of the young entry: whether that keeps it is left open here
    assert v1 in removed_lines(result)
    assert v1 not in present(store)
    assert {i, v3} <= present(store)
    lines = (store.root / "logs" / "refs" / "tags%2Fx").read_text().splitlines()
    assert [(json.loads(x)["old"], json.loads(x)["new"]) for x in lines] == [(v2, v3)]


def test_reflog_expire_zero_leaves_only_what_refs_reach(cas, store):
    i = imported(store, b"i\n")
    v1 = derive(store, b"v1\n", i, ref="tags/x")
    v2 = derive(store, b"v2\n", i, ref="tags/x")
    store.close()
    result = gc_ok(cas, "--grace", "0", "--reflog-expire", "0")
    assert set(removed_lines(result)) == {v1}
    assert present(store) == {i, v2}


def test_pin_keeps_an_object_and_its_ancestors_unpin_releases(cas, store):
    i = imported(store, b"i\n")
    a = derive(store, b"a\n", i)
    p = derive(store, b"p\n", a)
    store.close()
    assert ok(cas("pin", p[:10])).lines == [f"pinned {p}"]
    assert set(removed_lines(gc_ok(cas, "--grace", "0"))) == set()
    assert present(store) == {i, a, p}
    assert ok(cas("unpin", p)).lines == [f"unpinned {p}"]
    assert set(removed_lines(gc_ok(cas, "--grace", "0"))) == {a, p}
    assert present(store) == {i}


def test_pin_of_a_missing_object_fails(cas, store):
    result = cas("pin", "deadbeef")
    assert result.exit_code != 0
    assert result.stderr.startswith("cas: error:")
    assert not (store.root / "pins").exists() or not any((store.root / "pins").iterdir())


# ---- stray temporary files --------------------------------------------------------------


def test_gc_removes_stray_tmp_files_past_the_grace(cas, store):
    tmp = store.root / "tmp"
    old = tmp / "obj-1-abandoned"
    young = tmp / "obj-2-in-flight"
    old.write_bytes(b"x")
    young.write_bytes(b"y")
    age(old, 2 * HOUR)
    result = gc_ok(cas)  # grace 1h
    assert "removed tmp/obj-1-abandoned" in result.lines
    assert not old.exists()
    assert young.exists()
    age(young, 30 * 60)
    gc_ok(cas)
    assert young.exists()  # still within the hour
    gc_ok(cas, "--grace", "10m")
    assert not young.exists()


# ---- --dry-run --------------------------------------------------------------------------


@pytest.fixture
def garbage_store(store: Store) -> dict[str, str]:
    """A store with something for every kind of collection: garbage objects, a sample ref
    beyond retention, an expired reflog, a stray tmp file."""
    src = imported(store, b"source\n", ref="sources/src")
    ids = {
        "src": src,
        "garbage": derive(store, b"garbage\n", src),
        "garbage2": derive(store, b"more garbage, bigger\n" * 50, src),
        "sample": add_sample(store, src, b"a sample\n"),
        "old": derive(store, b"only in an old reflog\n", src),
        "kept": derive(store, b"kept\n", src, ref="tags/kept"),
    }
    store.set_ref("samples/src/s1", ids["sample"])
    store.close()
    write_reflog(store.root, "tags/gone", [(days_ago(200), None, ids["old"])])
    stray = store.root / "tmp" / "w-9-stray"
    stray.write_bytes(b"stray")
    age(stray, 5 * HOUR)
    return ids


def test_dry_run_changes_nothing_and_lists_everything(cas, store, garbage_store):
    ids = garbage_store
    args = ("--grace", "0", "--keep-samples", "0")
    before = listing(store.root, volatile=True)
    dry = ok(cas("gc", "--dry-run", *args))
    after = listing(store.root, volatile=True)
    before.pop("lock"), after.pop("lock")  # names the last exclusive holder
    assert after == before, "gc --dry-run changed the store"

    goes = {ids["garbage"], ids["garbage2"], ids["sample"], ids["old"]}
    listed = removed_lines(dry)
    assert set(listed) == goes
    sizes = {oid: object_files(store.root)[oid].stat().st_size for oid in goes}
    for oid, line in listed.items():
        assert line.startswith(f"would remove {oid}  {human_size(sizes[oid])}  "), line
        assert "unreachable" in line
    assert "would remove ref samples/src/s1 (retention)" in dry.lines
    assert "would remove tmp/w-9-stray" in dry.lines
    assert dry.lines[-1].startswith(
        f"would remove {len(goes)} object(s), {human_size(sum(sizes.values()))};"
    )

    plan = ok(cas("gc", "--dry-run", "--json", *args)).json()
    assert plan["dry_run"] is True
    assert {(o["object"], o["bytes"]) for o in plan["objects"]} == set(sizes.items())
    assert all(o["reason"] for o in plan["objects"])

    real = gc_ok(cas, *args)
    assert set(removed_lines(real)) == goes
    assert real.lines[-1] == dry.lines[-1].replace("would remove", "removed", 1).replace(
        "would expire", "expired", 1
    )
    assert present(store) == {ids["src"], ids["kept"]}


# ---- --explain --------------------------------------------------------------------------


def test_explain_names_the_root_and_the_path(cas, store):
    i = imported(store, b"i\n")
    a = derive(store, b"a\n", i)
    b = derive(store, b"b\n", a, ref="tags/b")
    store.close()
    result = ok(cas("gc", "--explain", i[:8], "--grace", "0"))
    assert result.lines == ["kept: ref tags/b", f"  {b}", f"  {a}", f"  {i}"]
    why = ok(cas("gc", "--explain", "tags/b", "--json", "--grace", "0")).json()
    assert why == {"object": b, "kept": True, "reason": "ref tags/b", "path": [b]}


def test_explain_pins_grace_sources_and_garbage(cas, store):
    i = imported(store, b"i\n")
    lone = imported(store, b"lone import\n")
    pinned = derive(store, b"pinned\n", i)
    young = derive(store, b"young\n", i)
    old = derive(store, b"old\n", i)
    store.close()
    age(object_files(store.root)[old], 2 * HOUR)
    ok(cas("pin", pinned))
    assert ok(cas("gc", "--explain", pinned)).lines[0] == "kept: pinned"
    assert ok(cas("gc", "--explain", young)).lines[0] == "kept: written within the grace period"
    assert ok(cas("gc", "--explain", young, "--grace", "0")).lines[0].startswith("would be removed")
    assert ok(cas("gc", "--explain", old)).lines[0].startswith("would be removed")
    src = ok(cas("gc", "--explain", lone, "--grace", "0", "--json")).json()
    assert src["kept"] is True and "--include-sources" in src["reason"]
    assert (
        ok(cas("gc", "--explain", lone, "--grace", "0", "--include-sources"))
        .lines[0]
        .startswith("would be removed")
    )
    # the pin reaches the parent
    why = ok(cas("gc", "--explain", i, "--grace", "0", "--json")).json()
    assert why == {"object": i, "kept": True, "reason": "pinned", "path": [pinned, i]}


@pytest.mark.parametrize(
    "flags",
    [
        ["--grace", "0"],
        ["--grace", "0", "--reflog-expire", "0"],
        ["--grace", "0", "--keep-samples", "0"],
    ],
    ids=["plain", "reflog-expire-0", "keep-samples-0"],
)
def test_explain_agrees_with_what_gc_does(cas, store, garbage_store, flags):
    """For every object, --explain under the same flags says what the run then does."""
    plan = ok(cas("gc", "--dry-run", "--json", *flags)).json()
    goes = {o["object"] for o in plan["objects"] if o["action"] == "delete"}
    assert goes
    names = {oid: name for name, oid in garbage_store.items()}
    disagree = []
    for oid in sorted(present(store)):
        why = ok(cas("gc", "--explain", oid, "--json", *flags)).json()
        if why["kept"] != (oid not in goes):
            disagree.append(
                f"{names[oid]}: gc {'removes' if oid in goes else 'keeps'} it,"
                f" --explain says {why['reason']!r}"
            )
    assert disagree == []


# ---- the library API ---------------------------------------------------------------------


def test_gc_report_counts(store):
    from casstore.gc import GcPolicy, gc

    i = imported(store, b"i\n")
    lone = imported(store, b"lone\n")
    keep = derive(store, b"keep\n", i, ref="tags/k")
    lose = derive(store, b"lose\n", i)
    report = gc(store, GcPolicy(grace=0))
    assert [(o.object, o.action, o.bytes) for o in report.objects] == [(lose, "delete", 5)]
    assert (report.bytes, report.kept, report.protected_sources) == (5, 3, 1)
    assert present(store) == {i, lone, keep}
