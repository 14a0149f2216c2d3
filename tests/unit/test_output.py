"""The CLI's rendering helpers (casstore/cli/_output.py)."""

import io
import sys
import threading

import pytest

from casstore.cli._output import (
    byte_progress,
    clean,
    human_size,
    sha256sum_line,
    short_time,
    table,
)
from tests._helpers import sha256

D = sha256(b"x")


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("file.txt", f"{D}  file.txt"),
        ("-", f"{D}  -"),
        ("dir/with space", f"{D}  dir/with space"),
        ("a\nb", f"\\{D}  a\\nb"),
        ("c\\d", f"\\{D}  c\\\\d"),
        ("e\rf", f"\\{D}  e\\rf"),
        ("ünï", f"{D}  ünï"),
    ],
)
def test_sha256sum_line_escapes_like_coreutils(path, line):
    assert sha256sum_line(D, path) == line


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (5, "5 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
     (5 * 1024**2, "5.0 MiB"), (3 * 1024**3, "3.0 GiB"), (2 * 1024**5, "2048.0 TiB")],
)  # fmt: skip
def test_human_size(n, text):
    assert human_size(n) == text


def test_short_time():
    assert short_time("2026-11-22T16:05:01.123456Z") == "2026-11-22 16:05:01"
    assert short_time(None) == "-"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("threadless", [True, False])
def test_a_threadless_bar_starts_no_thread_and_still_draws(monkeypatch, threadless):
    # cas add forks worker processes under its bar: that needs a process with one thread.
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    before = threading.active_count()
    with byte_progress(64 << 20, "adding", threadless=threadless) as advance:
        assert advance is not None
        during = threading.active_count()
        advance(32 << 20)
    assert (during == before) is threadless
    assert "adding" in tty.getvalue()


def test_clean_makes_control_characters_visible():
    assert clean("plain ünï text") == "plain ünï text"
    assert clean("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert clean("\x1b[2Jx\x00\x7f\x85") == "\\x1b[2Jx\\x00\\x7f\\x85"


def test_table_cells_are_cleaned_and_aligned(capsys):
    table([["a\nb", "x"], ["c", "y"]])
    assert capsys.readouterr().out == "a\\nb  x\nc     y\n"
