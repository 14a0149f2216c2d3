"""``cas gc``: reclaim space without ever breaking a chain of custody.

Under the store lock held exclusively (writers hold it shared, so gc waits for them and
they wait for gc), in this order:

1. Retention: sample refs beyond ``keep_samples`` per source, or older than
   ``samples_older_than``, are removed with their reflogs (a sample can be remade from its
   parent and recipe); a source's reflog keeps only the versions chosen by ``keep_last`` /
   ``keep_daily`` / ``keep_weekly``; reflog entries older than ``reflog_expire`` go.
2. Roots: every ref, every remaining reflog entry, every pin, and every object written
   within the ``grace`` period (an in-flight write is never collected).
3. Reachable: the roots and all their ancestors through record parents, so lineage stays
   whole. Everything else is garbage, except downloaded and imported bytes (records with no
   parents): they cannot be remade, so they go only with ``include_sources``.
4. Deletion in the reverse order of writing: index rows, then records, then bytes.
   ``prune_content`` drops the bytes of old downloaded ancestors but keeps their records,
   with a ``.pruned`` marker, so lineage still shows URL, headers and hash.
5. Stray temporary files older than the grace period are removed.

Afterwards, with the lock released, a ``gc_result`` metadata record about the store is
emitted (see :mod:`casstore.meta.emit`). A dry run changes nothing, so it emits nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from casstore.errors import ObjectNotFound
from casstore.ids import check_object_id
from casstore.records import meta_dir
from casstore.verify import PRUNED_SUFFIX, stray_tmp

if TYPE_CHECKING:
    from casstore.refs import ReflogEntry
    from casstore.store import Store


class GcPolicy(BaseModel):
    """What gc keeps. Durations in seconds; None: no such rule."""

    grace: float = 3600.0
    reflog_expire: float = 90 * 86400.0
    include_sources: bool = False
    keep_samples: int | None = None
    samples_older_than: float | None = None
    keep_last: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    prune_content: float | None = None


class GcItem(BaseModel):
    """An object gc removes (or, with prune-content, empties), and why."""

    object: str
    action: Literal["delete", "prune-content"]
    reason: str
    bytes: int


class GcReport(BaseModel):
    """What a gc run did (or, with ``dry_run``, would do)."""

    dry_run: bool
    removed_refs: list[str]
    expired_reflog_entries: int
    objects: list[GcItem]
    bytes: int
    kept: int
    protected_sources: int
    stray_tmp: list[str]


class PinState(BaseModel):
    """An object and whether it is now pinned."""

    object: str
    pinned: bool


class Explanation(BaseModel):
    """Why gc keeps (or would remove) an object."""

    object: str
    kept: bool
    reason: str
    path: list[str]  # from the root that reaches it, down to the object


# ---- retention -----------------------------------------------------------------------


def _last_move(entries: list[ReflogEntry]) -> float:
    moves = [e for e in entries if e.action in ("set", "fetch", "sample", "add")]
    chosen = moves[-1] if moves else (entries[-1] if entries else None)
    return chosen.time.timestamp() if chosen else 0.0


def _sample_refs_to_drop(store: Store, policy: GcPolicy, now: float) -> list[str]:
    if policy.keep_samples is None and policy.samples_older_than is None:
        return []
    groups: dict[str, list[tuple[float, str]]] = {}
    for name in store.refs.names("samples/"):
        parts = name.split("/")
        group = parts[1] if len(parts) > 2 else ""
        groups.setdefault(group, []).append((_last_move(store.refs.log(name)), name))
    drop = []
    for members in groups.values():
        members.sort(reverse=True)
        for i, (when, name) in enumerate(members):
            beyond = policy.keep_samples is not None and i >= policy.keep_samples
            old = policy.samples_older_than is not None and now - when > policy.samples_older_than
            if beyond or old:
                drop.append(name)
    return sorted(drop)


def _kept_versions(entries: list[ReflogEntry], policy: GcPolicy, current: str | None) -> set[str]:
    """The versions of a source its history policy keeps (restic's keep-last/daily/weekly)."""
    versions: list[tuple[float, str]] = []
    seen: set[str] = set()
    for e in reversed(entries):  # newest first
        if e.new and e.action != "fetch-unchanged" and e.new not in seen:
            seen.add(e.new)
            versions.append((e.time.timestamp(), e.new))
    keep = {current} if current else set()
    if policy.keep_last:
        keep.update(v for _, v in versions[: policy.keep_last])
    for count, fmt in ((policy.keep_daily, "%Y-%m-%d"), (policy.keep_weekly, "%G-W%V")):
        if not count:
            continue
        buckets: list[str] = []
        for when, v in versions:
            bucket = datetime.fromtimestamp(when, UTC).strftime(fmt)
            if bucket not in buckets:
                if len(buckets) == count:
                    break
                buckets.append(bucket)
                keep.add(v)
    return keep


def _rewrite_reflog(store: Store, name: str, entries: list[ReflogEntry]) -> None:
    from casstore import _fs

    path = store.refs._log_path(name)
    if not entries:
        path.unlink(missing_ok=True)
        return
    lines = "".join(
        json.dumps(e.model_dump(mode="json"), sort_keys=True, separators=(",", ":")) + "\n"
        for e in entries
    )
    _fs.atomic_write(path, lines.encode(), store.tmp)


# ---- reachability --------------------------------------------------------------------


def _reachable(store: Store, roots: set[str]) -> dict[str, str]:
    """``{object: the object it was reached from}`` (roots map to themselves)."""
    db = store.index.db
    via: dict[str, str] = {r: r for r in roots}
    queue = deque(roots)
    parents: dict[str, list[str]] = {}
    for child, parent in db.execute("SELECT DISTINCT child, parent FROM edges"):
        parents.setdefault(child, []).append(parent)
    while queue:
        oid = queue.popleft()
        for parent in parents.get(oid, []):
            if parent not in via:
                via[parent] = oid
                queue.append(parent)
    return via


def _roots(
    store: Store,
    policy: GcPolicy,
    now: float,
    *,
    refs: dict[str, str] | None = None,
    reflogs: dict[str, list[ReflogEntry]] | None = None,
) -> dict[str, str]:
    """``{object: why it is a root}``; ``refs`` and ``reflogs`` default to what is on disk."""
    roots: dict[str, str] = {}
    if refs is None:
        refs = store.refs.items()
    if reflogs is None:
        reflogs = {name: store.refs.log(name) for name in store.refs.logged_names()}
    for name, oid in refs.items():
        roots.setdefault(oid, f"ref {name}")
    for name, entries in reflogs.items():
        for e in entries:
            # An entry keeps the version it moved to; a delete entry keeps what was removed.
            for oid in (e.new, e.old if e.action == "delete" else None):
                if oid:
                    roots.setdefault(oid, f"reflog of {name} ({e.time:%Y-%m-%d})")
    for oid in pins(store):
        roots.setdefault(oid, "pinned")
    for oid in store.objects.ids():
        where = store.objects.locate(oid)
        if where and now - where[0].stat().st_mtime < policy.grace:
            roots.setdefault(oid, "written within the grace period")
    return roots


def _is_source_bytes(store: Store, oid: str) -> bool:
    from casstore.records import valid_records

    return any(
        r.type in ("download", "import") and not r.parents
        for _, r in valid_records(store.objects.dir, oid)
    )


# ---- pins ----------------------------------------------------------------------------


def pins(store: Store) -> list[str]:
    """Pinned object ids."""
    try:
        return sorted(n for n in os.listdir(store.root / "pins") if len(n) == 64)
    except FileNotFoundError:
        return []


def pin(store: Store, spec: str, *, on: bool = True) -> str:
    """Pin (or unpin) an object so gc keeps it and its ancestors."""
    oid = check_object_id(store.resolve(spec))
    path = store.root / "pins" / oid
    if on:
        path.parent.mkdir(exist_ok=True)
        path.touch()
    else:
        path.unlink(missing_ok=True)
    return oid


# ---- the run -------------------------------------------------------------------------


class _Plan:
    """What gc decides before it touches anything (shared by gc, --dry-run and --explain)."""

    def __init__(self, store: Store, policy: GcPolicy, now: float) -> None:
        self.removed_refs = _sample_refs_to_drop(store, policy, now)
        self.current = store.refs.items()
        self.reflogs: dict[str, list[ReflogEntry]] = {}
        self.changed: set[str] = set()
        self.expired = 0
        for name in store.refs.logged_names():
            entries = store.refs.log(name)
            survivors = (
                []
                if name in self.removed_refs
                else self._survivors(
                    entries,
                    policy,
                    now,
                    self.current.get(name) if name.startswith("sources/") else None,
                    name.startswith("sources/"),
                )
            )
            if name not in self.removed_refs:
                self.expired += len(entries) - len(survivors)
            if len(survivors) != len(entries):
                self.changed.add(name)
            self.reflogs[name] = survivors
        kept_refs = {n: o for n, o in self.current.items() if n not in self.removed_refs}
        self.roots = _roots(store, policy, now, refs=kept_refs, reflogs=self.reflogs)
        self.reachable = _reachable(store, set(self.roots))
        self.all_ids = list(store.objects.ids())
        # Downloaded and imported bytes cannot be remade: unless told otherwise, they stay,
        # and so does everything they were themselves made from (lineage stays whole).
        self.protected = []
        if not policy.include_sources:
            self.protected = [
                oid
                for oid in self.all_ids
                if oid not in self.reachable and _is_source_bytes(store, oid)
            ]
            for oid in self.protected:
                self.roots.setdefault(
                    oid, "downloaded or imported bytes are kept unless --include-sources"
                )
            for oid, via in _reachable(store, set(self.protected)).items():
                self.reachable.setdefault(oid, via)

    @staticmethod
    def _survivors(
        entries: list[ReflogEntry],
        policy: GcPolicy,
        now: float,
        current: str | None,
        is_source: bool,
    ) -> list[ReflogEntry]:
        kept_versions = None
        if is_source and (policy.keep_last or policy.keep_daily or policy.keep_weekly):
            kept_versions = _kept_versions(entries, policy, current)
        out = []
        for e in entries:
            if now - e.time.timestamp() > policy.reflog_expire:
                continue
            if kept_versions is not None and (e.new or e.old) not in kept_versions:
                continue
            out.append(e)
        return out


def gc(store: Store, policy: GcPolicy, *, dry_run: bool = False) -> GcReport:
    """Collect garbage under the exclusive store lock; see the module docstring."""
    with store.lock.hold(exclusive=True):
        now = time.time()  # after the wait: what was written meanwhile is judged fairly
        if store.index.has_dead_writers():
            store.rebuild_index()
        plan = _Plan(store, policy, now)
        items: list[GcItem] = []
        for oid in plan.all_ids:
            if oid in plan.reachable:
                continue
            where = store.objects.locate(oid)
            size = where[0].stat().st_size if where else 0
            items.append(GcItem(object=oid, action="delete", reason="unreachable", bytes=size))
        if policy.prune_content is not None:
            items.extend(_prunable(store, plan.reachable, set(plan.current.values()), policy, now))
        if not dry_run:
            # Reverse of the write order: refs and reflogs, then objects.
            for name in sorted(plan.changed - set(plan.removed_refs)):
                _rewrite_reflog(store, name, plan.reflogs[name])
            for name in plan.removed_refs:
                store.refs.delete(name, message="gc retention")
                _rewrite_reflog(store, name, [])
                store.index.set_ref(name, None)
            for item in items:
                _remove(store, item)
        stray = _stray(store, policy, now, dry_run)
    report = GcReport(
        dry_run=dry_run,
        removed_refs=plan.removed_refs,
        expired_reflog_entries=plan.expired,
        objects=items,
        bytes=sum(i.bytes for i in items),
        kept=len(plan.all_ids) - sum(1 for i in items if i.action == "delete"),
        protected_sources=len(plan.protected),
        stray_tmp=stray,
    )
    if not dry_run:
        _emit_result(store, report)
    return report


def _emit_result(store: Store, report: GcReport) -> None:
    """Emit the run's ``gc_result`` metadata record (about the store itself)."""
    from casstore.meta.emit import emit
    from casstore.meta.kinds import GcResult

    result = GcResult(
        dry_run=report.dry_run,
        objects=sum(1 for i in report.objects if i.action == "delete"),
        pruned=sum(1 for i in report.objects if i.action == "prune-content"),
        bytes=report.bytes,
        reflog_entries=report.expired_reflog_entries,
        refs=len(report.removed_refs),
        kept=report.kept,
        protected_sources=report.protected_sources,
        stray_tmp=len(report.stray_tmp),
    )
    emit(store, "gc", {"gc_result": result}, producer_id="cas.gc")


def _prunable(
    store: Store, reachable: dict[str, str], targets: set[str], policy: GcPolicy, now: float
) -> list[GcItem]:
    from casstore.records import valid_records

    out = []
    assert policy.prune_content is not None
    for oid in sorted(reachable):
        if oid in targets or oid in pins(store):
            continue
        where = store.objects.locate(oid)
        if where is None:
            continue
        records = valid_records(store.objects.dir, oid)
        downloads = [r for _, r in records if r.type == "download" and not r.parents]
        if not downloads or len(downloads) != len(records):
            continue
        newest = max(r.created.timestamp() for r in downloads)
        if now - newest > policy.prune_content:
            out.append(
                GcItem(
                    object=oid,
                    action="prune-content",
                    bytes=where[0].stat().st_size,
                    reason=f"downloaded {datetime.fromtimestamp(newest, UTC):%Y-%m-%d};"
                    " records kept",
                )
            )
    return out


def _remove(store: Store, item: GcItem) -> None:
    oid = item.object
    where = store.objects.locate(oid)
    md = meta_dir(store.objects.dir, oid)
    if item.action == "prune-content":
        marker = md.with_name(md.name.removesuffix(".meta") + PRUNED_SUFFIX)
        marker.write_text(
            json.dumps({"pruned": datetime.now(UTC).isoformat(), "reason": item.reason}) + "\n"
        )
        if where:
            where[0].unlink(missing_ok=True)
        with store.index.transaction() as db:
            db.execute("DELETE FROM objects WHERE id=?", (oid,))
        return
    # Reverse of the write order: index rows, then records, then bytes.
    with store.index.transaction() as db:
        db.execute("DELETE FROM objects WHERE id=?", (oid,))
        db.execute("DELETE FROM edges WHERE child=?", (oid,))
        db.execute("DELETE FROM recipes WHERE object_id=?", (oid,))
        db.execute("DELETE FROM records WHERE object_id=?", (oid,))
    shutil.rmtree(md, ignore_errors=True)
    if where:
        where[0].unlink(missing_ok=True)


def _stray(store: Store, policy: GcPolicy, now: float, dry_run: bool) -> list[str]:
    out = []
    for entry, _ in stray_tmp(store, max(policy.grace, 60.0), now):
        out.append(f"tmp/{entry.name}")
        if dry_run:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)
    return out


def explain(store: Store, spec: str, policy: GcPolicy) -> Explanation:
    """Which root keeps an object, by which path; or why gc would take it.

    The answer comes from the same plan a gc with ``policy`` would make, retention and
    reflog expiry included.
    """
    oid = store.resolve(spec)
    if not store.objects.exists(oid):
        raise ObjectNotFound(f"object {oid} has no bytes here (pruned or removed)")
    plan = _Plan(store, policy, time.time())
    via = plan.reachable
    if oid in via:
        path = [oid]
        while via[path[-1]] != path[-1]:
            path.append(via[path[-1]])
        path.reverse()
        return Explanation(object=oid, kept=True, reason=plan.roots[path[0]], path=path)
    return Explanation(object=oid, kept=False, reason="no ref, reflog, pin or grace", path=[])
