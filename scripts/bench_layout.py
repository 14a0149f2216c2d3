"""The floor of the store's layout: its files and directories made with bare system calls.

A benchmark helper, not a test. For every file under SRC it does what ``cas add`` must do
on disk and nothing else: read the file, take its SHA-256, write it into ``tmp/`` and
rename it to ``objects/ab/cdef…``, make ``objects/ab/cdef….meta/``, write a fixed record of
360 bytes into ``tmp/`` and rename it into that directory; then one ``syncfs`` barrier, as
``cas add`` ends with. No compression, no record to build, no index, no output. The files
are shared out over one forked process per core, as ``cas add`` shares them over its
workers.

``scripts/bench.py small`` runs it beside ``cas add`` and ``git add``: what it takes is
what the layout in docs/format.md costs on this machine before any of casstore's own work.

    python scripts/bench_layout.py SRC DEST
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import os
import sys

RECORD = b"{" + b"x" * 358 + b"}"  # about the size of an import record


def store_part(paths: list[str], dest: str) -> None:
    """Lay out ``paths`` under ``dest`` as the store does (see the module docstring)."""
    objects, tmp, pid = f"{dest}/objects", f"{dest}/tmp", os.getpid()
    for n, path in enumerate(paths):
        fd = os.open(path, os.O_RDONLY)
        try:
            data = os.read(fd, 1 << 20)
        finally:
            os.close(fd)
        oid = hashlib.sha256(data).hexdigest()
        final = f"{objects}/{oid[:2]}/{oid[2:]}"
        write_then_rename(f"{tmp}/o-{pid}-{n}", final, data, 0o444)
        with contextlib.suppress(FileExistsError):  # the same bytes twice in SRC
            os.mkdir(final + ".meta")
        rid = hashlib.sha256(RECORD + oid.encode()).hexdigest()
        write_then_rename(f"{tmp}/r-{pid}-{n}", f"{final}.meta/{rid}.json", RECORD, 0o644)


def write_then_rename(tmp: str, final: str, data: bytes, mode: int) -> None:
    """Create ``tmp``, write ``data``, rename it to ``final``: the store's atomic write."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, final)


def main() -> None:
    """Lay out every file under ``argv[1]`` in a new directory ``argv[2]``."""
    src, dest = sys.argv[1], sys.argv[2]
    paths = sorted(os.path.join(root, n) for root, _, names in os.walk(src) for n in names)
    os.makedirs(f"{dest}/tmp")
    for a in range(256):
        os.makedirs(f"{dest}/objects/{a:02x}")
    procs = max(1, len(os.sched_getaffinity(0)))
    kids = []
    for k in range(procs):
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                store_part(paths[k::procs], dest)
                status = 0
            finally:
                os._exit(status)
        kids.append(pid)
    failed = [pid for pid in kids if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0]
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)
    if failed:
        sys.exit(f"bench_layout: {len(failed)} of {procs} processes failed")


if __name__ == "__main__":
    main()
