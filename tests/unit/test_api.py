"""The public surface: casstore/__init__.py and the exception tree in errors.py."""

import subprocess
import sys

import pytest

import casstore
from casstore import errors


def test_all_is_sorted_and_every_name_resolves():
    assert casstore.__all__ == sorted(casstore.__all__)
    for name in casstore.__all__:
        assert getattr(casstore, name) is not None
    assert dir(casstore) == sorted(casstore.__all__)


def test_unknown_attribute():
    with pytest.raises(AttributeError):
        casstore.NoSuchThing  # noqa: B018


def test_py_typed_is_shipped():
    from importlib.resources import files

    assert files("casstore").joinpath("py.typed").is_file()


def test_importing_the_package_stays_light():
    """`cas --help` must be fast: importing casstore must not pull in pydantic."""
    code = "import sys, casstore, casstore.cli; print('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (errors.StoreNotFound, (errors.CasError,)),
        (errors.StoreFormatError, (errors.CasError,)),
        (errors.UsageError, (errors.CasError, ValueError)),
        (errors.InvalidObjectId, (errors.CasError, ValueError)),
        (errors.ObjectNotFound, (errors.CasError, KeyError)),
        (errors.AmbiguousPrefix, (errors.CasError,)),
        (errors.IntegrityError, (errors.CasError,)),
        (errors.BadRecord, (errors.IntegrityError,)),
        (errors.InvalidRefName, (errors.RefError, ValueError)),
        (errors.RefNotFound, (errors.RefError, KeyError)),
        (errors.RefConflict, (errors.RefError,)),
        (errors.RefError, (errors.CasError,)),
        (errors.LockError, (errors.CasError,)),
        (errors.InputError, (errors.CasError, OSError)),
    ],
)
def test_exception_tree(cls, bases):
    for base in bases:
        assert issubclass(cls, base)


def test_key_error_subclasses_do_not_quote_their_message():
    assert str(errors.ObjectNotFound("object x not found")) == "object x not found"
    assert str(errors.RefNotFound("no ref named 'x'")) == "no ref named 'x'"


def test_exit_codes():
    assert errors.CasError("x").exit_code == 1
    assert errors.UsageError("x").exit_code == 2


def test_ambiguous_prefix_message_is_bounded():
    cands = [f"{i:064x}" for i in range(15)]
    err = errors.AmbiguousPrefix("0000", cands)
    assert err.candidates == cands
    assert "and 5 more" in str(err)
    assert cands[0][:12] in str(err)
