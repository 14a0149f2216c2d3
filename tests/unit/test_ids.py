from pathlib import Path

import pytest

from casstore.errors import CasError, InvalidObjectId
from casstore.ids import (
    check_object_id,
    fanout,
    is_object_id,
    is_prefix,
    object_path,
    short,
)
from tests._helpers import sha256

GOOD = sha256(b"hello\n")


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        (GOOD, True),
        ("0" * 64, True),
        (GOOD.upper(), False),
        (GOOD[:63], False),
        (GOOD + "0", False),
        (GOOD[:63] + "g", False),
        (GOOD + "\n", False),
        (" " + GOOD[1:], False),
        ("", False),
    ],
)
def test_is_object_id(text, ok):
    assert is_object_id(text) is ok


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("abcd", True),
        ("0123456789", True),
        (GOOD, True),
        ("abc", False),
        ("ABCD", False),
        ("abcg", False),
        (GOOD + "a", False),
        ("abcd\n", False),
    ],
)
def test_is_prefix(text, ok):
    assert is_prefix(text) is ok


def test_check_object_id_returns_a_valid_id():
    assert check_object_id(GOOD) == GOOD


@pytest.mark.parametrize("bad", ["../../etc/passwd", GOOD.upper(), "abcd", ""])
def test_check_object_id_rejects_with_an_error_in_the_tree(bad):
    with pytest.raises(InvalidObjectId) as info:
        check_object_id(bad)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, CasError)
    assert repr(bad) in str(info.value)


def test_fanout_and_object_path():
    assert fanout(GOOD) == (GOOD[:2], GOOD[2:])
    assert object_path(Path("/s/objects"), GOOD) == Path("/s/objects") / GOOD[:2] / GOOD[2:]


@pytest.mark.parametrize("bad", ["../" + "a" * 61, "/" * 64, "ab/cd"])
def test_object_path_never_builds_a_path_from_a_bad_id(bad):
    with pytest.raises(InvalidObjectId):
        object_path(Path("/s/objects"), bad)


def test_short():
    assert short(GOOD) == GOOD[:12]
    assert short(GOOD, 4) == GOOD[:4]
