"""``cas run`` and ``Store.derive``: make new objects from stored ones, with provenance.

``cas run`` copies each input out of the store into a private directory (read-only copies,
so a misbehaving command cannot damage the store), runs the command with the inputs'
paths in placeholders and environment variables, and stores every declared output with a
``run`` record: the command, the inputs, exit code, duration, the working directory's git
commit, the values of the environment variables named with ``--env``.

The action key (SHA-256 of command, input ids, transform, params and named environment
values) makes runs memoised: the same action again puts the stored outputs back at their
paths without running the command.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from casstore.errors import CommandFailed, InputError, UsageError
from casstore.meta.context import current_link
from casstore.records import DeriveRecord, RunRecord, valid_records
from casstore.refs import check_ref_name, whoami

if TYPE_CHECKING:
    from casstore.store import AddResult, Store

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RunOutput(BaseModel):
    """One declared output of a run and the object it became."""

    path: str
    object: str
    record_id: str


class RunResult(BaseModel):
    """What ``cas run`` did."""

    action: str
    status: Literal["ran", "restored"]
    exit_code: int
    duration_ms: int
    outputs: list[RunOutput]


def _signature(path: Path) -> tuple[int, int, int] | None:
    """Inode, mtime and size of a file (None when absent): did a command rewrite it?"""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def parse_inputs(specs: list[str]) -> list[tuple[str, str]]:
    """``OBJ`` or ``NAME=OBJ`` -> ``(name, spec)``; unnamed inputs are ``in0``, ``in1``, …"""
    out = []
    for i, spec in enumerate(specs):
        name, sep, obj = spec.partition("=")
        if sep and _NAME.fullmatch(name):
            out.append((name, obj))
        else:
            out.append((f"in{i}", spec))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise UsageError(f"input names must be distinct: {', '.join(names)}")
    return out


def action_key(
    command: list[str],
    inputs: Mapping[str, str],
    transform: str | None,
    params: Mapping[str, str],
    env: Mapping[str, str],
    outputs: list[str],
) -> str:
    """The memo key of a run: same key, same outputs."""
    doc = {
        "command": command,
        "inputs": dict(sorted(inputs.items())),
        "transform": transform,
        "params": dict(sorted(params.items())),
        "env": dict(sorted(env.items())),
        "outputs": outputs,
    }
    return hashlib.sha256(
        json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def git_commit(cwd: str) -> str | None:
    """The HEAD commit of the git work tree holding ``cwd`` (``+dirty`` when changed)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def run_command(
    store: Store,
    command: list[str],
    *,
    inputs: list[str] = (),  # type: ignore[assignment]
    outputs: list[str] = (),  # type: ignore[assignment]
    transform: str | None = None,
    params: Mapping[str, str] | None = None,
    env_names: list[str] = (),  # type: ignore[assignment]
    environ: Mapping[str, str] | None = None,
    force: bool = False,
    cwd: str | None = None,
) -> RunResult:
    """Run ``command`` on stored inputs and store its declared outputs (see module doc)."""
    if not command:
        raise UsageError("give the command after --")
    # The child inherits this process's environment unless the caller passes one.
    environ = dict(environ if environ is not None else os.environ)
    cwd = cwd or os.getcwd()
    params = dict(params or {})
    named = [(n, store.resolve(s)) for n, s in parse_inputs(list(inputs))]
    input_ids = dict(named)
    missing = [v for v in env_names if v not in environ]
    if missing:
        raise UsageError(f"--env names unset variables: {', '.join(missing)}")
    env_values = {v: environ[v] for v in env_names}
    unknown = {m for arg in command for m in _PLACEHOLDER.findall(arg)} - set(input_ids)
    if unknown:
        raise UsageError(f"unknown placeholders {sorted(unknown)}; inputs are {sorted(input_ids)}")
    key = action_key(command, input_ids, transform, params, env_values, list(outputs))
    if not force:
        restored = _restore(store, key, list(outputs), cwd)
        if restored is not None:
            return restored
    with tempfile.TemporaryDirectory(prefix="run-", dir=store.tmp) as work:
        paths = _materialise(store, named, Path(work))
        argv = [_PLACEHOLDER.sub(lambda m: paths[m.group(1)], arg) for arg in command]
        child_env = {**environ, **{f"CAS_INPUT_{n.upper()}": p for n, p in paths.items()}}
        child_env["CAS_INPUTS"] = os.pathsep.join(paths[n] for n, _ in named)
        # A file already at an output path must be rewritten by the command, else the old
        # file would be stored as this action's output.
        before = {o: _signature(Path(cwd, o)) for o in outputs}
        commit = git_commit(cwd)  # before the command, which may touch tracked files
        started = time.monotonic()
        try:
            proc = subprocess.run(argv, cwd=cwd, env=child_env, check=False)
        except OSError as exc:
            raise UsageError(f"cannot run {command[0]!r}: {exc.strerror or exc}") from exc
        duration_ms = int((time.monotonic() - started) * 1000)
    if proc.returncode != 0:
        raise CommandFailed(proc.returncode, command)
    user, host = whoami()
    results = []
    for out in outputs:
        target = Path(cwd, out)
        if not target.is_file() or (before[out] is not None and before[out] == _signature(target)):
            raise InputError(f"the command did not write its declared output {out}; nothing stored")
    with store.writing():  # a death in here is noticed: the index gets rebuilt
        for out in outputs:
            with open(Path(cwd, out), "rb") as f:
                stored = store.objects.write(f, durable=True)
            record = RunRecord(
                object=stored.id,
                size=stored.size,
                blake3=stored.blake3,
                parents=tuple(dict.fromkeys(input_ids.values())),
                user=user,
                host=host,
                command=tuple(command),
                inputs=input_ids,
                output=out,
                exit_code=0,
                duration_ms=duration_ms,
                cwd=cwd,
                git_commit=commit,
                env=env_values,
                transform=transform,
                params=params,
                action=key,
                pipeline=current_link(),
            )
            rid = store.record_object(stored, record)
            results.append(RunOutput(path=out, object=stored.id, record_id=rid))
    return RunResult(
        action=key, status="ran", exit_code=0, duration_ms=duration_ms, outputs=results
    )


def _materialise(store: Store, named: list[tuple[str, str]], work: Path) -> dict[str, str]:
    """Read-only copies of the inputs in ``work``; returns name -> path."""
    paths = {}
    for name, oid in named:
        dest = work / name
        with store.objects.open(oid) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        dest.chmod(0o444)
        paths[name] = str(dest)
    return paths


def _restore(store: Store, key: str, outputs: list[str], cwd: str) -> RunResult | None:
    """Put a memoised action's outputs back at their paths, or None on a miss."""
    found: dict[str, tuple[str, str, Any]] = {}
    for oid, rid in store.index.by_recipe(key):
        if not store.objects.exists(oid):
            continue
        for r_id, record in valid_records(store.objects.dir, oid):
            if r_id == rid and record.type == "run" and record.output not in found:
                found[record.output] = (oid, rid, record)
    if not outputs or any(out not in found for out in outputs):
        return None
    results = []
    for out in outputs:
        oid, rid, _ = found[out]
        target = Path(cwd, out)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.cas-{os.getpid()}")
        with open(tmp, "wb") as f:
            store.objects.copy_to(oid, f)
        os.replace(tmp, target)
        results.append(RunOutput(path=out, object=oid, record_id=rid))
    first = found[outputs[0]][2]
    return RunResult(
        action=key, status="restored", exit_code=0, duration_ms=first.duration_ms, outputs=results
    )


class Derivation:
    """The handle ``Store.derive`` yields: write the output at :attr:`path` or via :meth:`open`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.result: AddResult | None = None

    def open(self, mode: str = "wb") -> Any:
        """The output file, opened for writing."""
        return open(self.path, mode)


@contextlib.contextmanager
def derive(
    store: Store,
    inputs: list[str],
    transform: str,
    params: Mapping[str, Any] | None = None,
    *,
    ref: str | None = None,
) -> Iterator[Derivation]:
    """Record a derived file only if the block succeeds (see ``Store.derive``)."""
    from casstore.store import AddResult

    if not inputs:
        raise UsageError("derive needs at least one input")
    parent_ids = list(dict.fromkeys(store.resolve(i) for i in inputs))
    params_s = {k: str(v) for k, v in (params or {}).items()}
    if ref is not None:
        check_ref_name(ref)  # before the block runs: a bad name must not cost the work
        store.refs.check_free(ref)
    fd, name = tempfile.mkstemp(prefix="derive-", dir=store.tmp)
    os.close(fd)
    handle = Derivation(Path(name))
    try:
        yield handle
        with store.writing():  # a death in here is noticed: the index gets rebuilt
            with open(handle.path, "rb") as f:
                stored = store.objects.write(f, durable=True)
            user, host = whoami()
            record = DeriveRecord(
                object=stored.id,
                size=stored.size,
                blake3=stored.blake3,
                parents=tuple(parent_ids),
                user=user,
                host=host,
                transform=transform,
                params=params_s,
                pipeline=current_link(),
            )
            rid = store.record_object(stored, record)
        if ref is not None:
            with store.lock.hold():
                store._move_ref(ref, stored.id, message=f"derive {transform}")
        handle.result = AddResult(
            id=stored.id,
            path="",
            size=stored.size,
            stored_size=stored.stored_size,
            compression=stored.compression,
            record_id=rid,
            new_object=stored.new,
            new_record=True,
        )
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.path)
