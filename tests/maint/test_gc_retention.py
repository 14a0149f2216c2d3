"""``cas gc`` retention: --keep-samples, --samples-older-than, --keep-last/-daily/-weekly on a
source's reflog, and --prune-content."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from casstore.store import Store
from tests.maint._maint import (
    add_download,
    add_sample,
    days_ago,
    gc_ok,
    ok,
    present,
    verify_problems,
    write_reflog,
)


def reflog(store: Store, name: str) -> list[dict]:
    path = store.root / "logs" / "refs" / name.replace("/", "%2F")
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- samples ----------------------------------------------------------------------------


@pytest.fixture
def samples(store: Store) -> dict[str, str]:
    """Two sources; four samples of ``src`` made 4..1 days ago, two of ``other``."""
    src = store.add(io.BytesIO(b"the source\n"), ref="sources/src").id
    other = store.add(io.BytesIO(b"another source\n"), ref="sources/other").id
    ids = {"src": src, "other": other}
    made = {}
    for n in range(1, 5):
        ids[f"s{n}"] = add_sample(store, src, f"sample {n}\n".encode())
        store.set_ref(f"samples/src/s{n}", ids[f"s{n}"])
        made[f"samples/src/s{n}"] = (ids[f"s{n}"], days_ago(5 - n))
    for n in (1, 2):
        ids[f"o{n}"] = add_sample(store, other, f"other sample {n}\n".encode())
        store.set_ref(f"samples/other/o{n}", ids[f"o{n}"])
        made[f"samples/other/o{n}"] = (ids[f"o{n}"], days_ago(40 - 30 * (n - 1)))
    store.close()
    for name, (oid, when) in made.items():
        write_reflog(store.root, name, [(when, None, oid)])
    return ids


def test_keep_samples_keeps_the_newest_per_source(cas, store, samples):
    ids = samples
    result = gc_ok(cas, "--grace", "0", "--keep-samples", "2")
    assert [x for x in result.lines if "(retention)" in x] == [
        "removed ref samples/src/s1 (retention)",
        "removed ref samples/src/s2 (retention)",
    ]
    refs = ok(cas("ref", "list", "samples/", "--json")).json()
    assert {r["name"] for r in refs} == {
        "samples/src/s3",
        "samples/src/s4",
        "samples/other/o1",
        "samples/other/o2",
    }
    assert reflog(store, "samples/src/s1") == [] and reflog(store, "samples/src/s2") == []
    assert len(reflog(store, "samples/src/s3")) == 1
    assert present(store) == {ids[k] for k in ("src", "other", "s3", "s4", "o1", "o2")}


def test_keep_samples_one(cas, store, samples):
    ids = samples
    gc_ok(cas, "--grace", "0", "--keep-samples", "1")
    assert present(store) == {ids[k] for k in ("src", "other", "s4", "o2")}


def test_samples_older_than(cas, store, samples):
    ids = samples
    result = gc_ok(cas, "--grace", "0", "--samples-older-than", "30d")
    assert [x for x in result.lines if "(retention)" in x] == [
        "removed ref samples/other/o1 (retention)"
    ]
    assert ids["o1"] not in present(store)
    assert {ids[k] for k in ("s1", "s2", "s3", "s4", "o2")} <= present(store)
    assert reflog(store, "samples/other/o1") == []
    gc_ok(cas, "--grace", "0", "--samples-older-than", "60h")  # o2 is 10 days old
    assert present(store) == {ids[k] for k in ("src", "other", "s3", "s4")}


def test_without_a_sample_policy_samples_stay(cas, store, samples):
    gc_ok(cas, "--grace", "0")
    assert present(store) == set(samples.values())


# ---- a source's history -----------------------------------------------------------------


def _anchor() -> datetime:
    """A Wednesday, 12:00 UTC, three to four weeks ago (well inside the 90-day expiry)."""
    d = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=21)
    return d - timedelta(days=(d.weekday() - 2) % 7)


@pytest.fixture
def history(store: Store) -> dict[str, str]:
    """sources/x moved through v1..v5, derived from one base import.

    UTC days: v1, v2 on day -10 (a Sunday, two ISO weeks back); v3 on day -1 (Tuesday);
    v4, v5 on day 0 (Wednesday); v5 is current.
    """
    base = store.add(io.BytesIO(b"base\n")).id
    ids = {"base": base}
    for n in range(1, 6):
        data = f"version {n}\n".encode()
        ids[f"v{n}"] = store.add(io.BytesIO(data), parents=[base], transform="v").id
    store.set_ref("sources/x", ids["v5"])
    store.close()
    a = _anchor()
    h = timedelta(hours=1)
    d = timedelta(days=1)
    write_reflog(
        store.root,
        "sources/x",
        [
            (a - 10 * d, None, ids["v1"]),
            (a - 10 * d + h, ids["v1"], ids["v2"]),
            (a - d, ids["v2"], ids["v3"]),
            (a + h, ids["v3"], ids["v4"]),
            (a + 2 * h, ids["v4"], ids["v5"]),
        ],
    )
    return ids


@pytest.mark.parametrize(
    "flags, kept",
    [
        (["--keep-last", "1"], {"v5"}),
        (["--keep-last", "2"], {"v5", "v4"}),
        (["--keep-last", "9"], {"v1", "v2", "v3", "v4", "v5"}),
        (["--keep-daily", "1"], {"v5"}),
        (["--keep-daily", "2"], {"v5", "v3"}),
        (["--keep-daily", "3"], {"v5", "v3", "v2"}),
        (["--keep-weekly", "1"], {"v5"}),
        (["--keep-weekly", "2"], {"v5", "v2"}),
        (["--keep-last", "2", "--keep-weekly", "2"], {"v5", "v4", "v2"}),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_history_policy(cas, store, history, flags, kept):
    ids = history
    gc_ok(cas, "--grace", "0", *flags)
    versions = {f"v{n}" for n in range(1, 6)}
    assert {v for v in versions if ids[v] in present(store)} == kept
    assert ids["base"] in present(store)
    # the reflog keeps only lines about kept versions
    log = reflog(store, "sources/x")
    assert {e["new"] for e in log} <= {ids[v] for v in kept}
    assert log and log[-1]["new"] == ids["v5"]


def test_history_policy_applies_to_sources_only(cas, store, history):
    ids = history
    store2 = Store.open(store.root)
    store2.set_ref("tags/t", ids["v5"])
    store2.close()
    write_reflog(
        store.root,
        "tags/t",
        [(days_ago(3), None, ids["v1"]), (days_ago(2), ids["v1"], ids["v5"])],
    )
    gc_ok(cas, "--grace", "0", "--keep-last", "1")
    assert ids["v1"] in present(store), "a tag's history is not a source's"
    assert len(reflog(store, "tags/t")) == 2


# ---- --prune-content --------------------------------------------------------------------

URL_OLD = "http://127.0.0.1:9/old.jsonl"
URL_NEW = "http://127.0.0.1:9/new.jsonl"


@pytest.fixture
def downloads(store: Store) -> dict[str, str]:
    """An old download (60 days) and a new one, each with a derived child under a ref."""
    old = add_download(store, b"old download\n" * 20, URL_OLD, created=days_ago(60))
    new = add_download(store, b"new download\n" * 20, URL_NEW)
    ids = {
        "old": old,
        "new": new,
        "old_child": store.add(
            io.BytesIO(b"from old\n"), parents=[old], transform="t", ref="tags/c"
        ).id,
        "new_child": store.add(
            io.BytesIO(b"from new\n"), parents=[new], transform="t", ref="tags/c2"
        ).id,
    }
    store.close()
    return ids


def test_prune_content_drops_old_download_bytes_keeps_records(cas, store, downloads):
    ids = downloads
    old_meta = store.root / "objects" / ids["old"][:2] / f"{ids['old'][2:]}.meta"
    records = sorted(old_meta.iterdir())
    result = gc_ok(cas, "--grace", "0", "--prune-content", "30d")
    [line] = [x for x in result.lines if x.startswith("empty ")]
    assert line.startswith(f"empty {ids['old']}  ")
    assert ids["old"] not in present(store)
    assert {ids["new"], ids["old_child"], ids["new_child"]} <= present(store)
    assert sorted(old_meta.iterdir()) == records, "the records of pruned bytes must stay"
    marker = old_meta.with_name(old_meta.name.removesuffix(".meta") + ".pruned")
    assert marker.exists()
    # verify accepts the pruned parent (gc_ok checked it is clean), and lineage shows the URL
    log = ok(cas("log", "tags/c"))
    assert URL_OLD in log.stdout
    # a second run has nothing more to prune
    again = gc_ok(cas, "--grace", "0", "--prune-content", "30d")
    assert [x for x in again.lines if x.startswith("empty ")] == []


def test_prune_content_threshold(cas, store, downloads):
    ids = downloads
    gc_ok(cas, "--grace", "0", "--prune-content", "90d")
    assert ids["old"] in present(store)
    gc_ok(cas, "--grace", "0", "--prune-content", "0")
    assert ids["old"] not in present(store) and ids["new"] not in present(store)


def test_prune_content_spares_ref_targets_and_pins(cas, store, downloads):
    ids = downloads
    ok(cas("ref", "set", "sources/old", ids["old"]))
    ok(cas("pin", ids["new"]))
    gc_ok(cas, "--grace", "0", "--prune-content", "0")
    assert {ids["old"], ids["new"]} <= present(store)


def test_show_still_shows_a_pruned_download(cas, store, downloads):
    ids = downloads
    gc_ok(cas, "--grace", "0", "--prune-content", "30d")
    result = cas("show", ids["old"])
    assert result.exit_code == 0, result
    assert URL_OLD in result.stdout


def test_lineage_of_pruned_download_survives_an_index_rebuild(cas, store, downloads):
    gc_ok(cas, "--grace", "0", "--prune-content", "30d")
    ok(cas("index", "rebuild"))
    log = ok(cas("log", "tags/c"))
    assert URL_OLD in log.stdout, log
    assert verify_problems(cas) == (0, [])
