"""The one exception tree of casstore.

Every error the library raises on purpose derives from :class:`CasError`, so callers
(and the CLI, which turns it into a single ``cas: error: ...`` line) need one ``except``.
Where a built-in base fits, it is added too, so ``except KeyError`` keeps working::

    CasError
    ├── StoreNotFound
    ├── StoreFormatError
    ├── UsageError(ValueError)            bad arguments to an API call or command
    ├── InvalidObjectId(ValueError)
    ├── ObjectNotFound(KeyError)
    ├── AmbiguousPrefix                   .prefix .candidates
    ├── IntegrityError                    .what .expected .actual
    │   ├── BadRecord                     a sidecar record that fails its checks
    │   └── SampleFormatError             malformed input to cas sample (.record .offset)
    ├── RefError
    │   ├── InvalidRefName(ValueError)
    │   ├── RefNotFound(KeyError)
    │   └── RefConflict                   compare-and-swap lost, or a name clash
    ├── LockError                         .path .holder
    ├── InputError(OSError)               a file to import cannot be read
    ├── SourceNotFound(KeyError)          no registered source by that id
    ├── CommandFailed                     cas run: the command exited non-zero (.exit_code)
    ├── UnsupportedFormat                 data cas sample cannot read (binary, zip, …)
    ├── FetchError                        .url (redacted) .status
    └── MetadataError                     the metadata repository, run logs, manifests
        ├── PayloadError(ValueError)      a payload that fails its kind's schema (.kind)
        ├── RunNotFound(KeyError)         no pipeline run or step by that id
        └── ManifestError                 a manifest that cannot be read or is refused

    A download whose bytes fail a check raises IntegrityError (``what`` names the tier),
    not FetchError.
"""

from __future__ import annotations


class CasError(Exception):
    """Root of every error casstore raises on purpose."""

    exit_code = 1

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else self.__class__.__name__


class StoreNotFound(CasError):
    """No store at the given path, or none found upwards from the working directory."""


class StoreFormatError(CasError):
    """The store exists but its layout or config is not one this version can read."""


class UsageError(CasError, ValueError):
    """Arguments that cannot work together; the CLI exits 2 for these."""

    exit_code = 2


class InvalidObjectId(CasError, ValueError):
    """A string that is not a 64-digit lowercase hex SHA-256 (or a valid prefix)."""


class ObjectNotFound(CasError, KeyError):
    """No object with that id, prefix or ref name."""


class AmbiguousPrefix(CasError):
    """A short id that matches more than one object."""

    def __init__(self, prefix: str, candidates: list[str]) -> None:
        shown = ", ".join(c[:12] for c in candidates[:10])
        more = f" and {len(candidates) - 10} more" if len(candidates) > 10 else ""
        super().__init__(f"prefix {prefix!r} is ambiguous: {shown}{more}")
        self.prefix = prefix
        self.candidates = candidates


class IntegrityError(CasError):
    """Bytes on disk (or received) do not match what they must be."""

    def __init__(
        self, message: str, *, what: str = "", expected: str = "", actual: str = ""
    ) -> None:
        super().__init__(message)
        self.what = what
        self.expected = expected
        self.actual = actual


class BadRecord(IntegrityError):
    """A sidecar record whose bytes do not match its name, or that fails validation."""


class RefError(CasError):
    """Base of ref problems."""


class InvalidRefName(RefError, ValueError):
    """A ref name or source id that breaks the naming rules (a usage error: exit 2)."""

    exit_code = 2


class RefNotFound(RefError, KeyError):
    """No ref by that name."""


class RefConflict(RefError):
    """A compare-and-swap that lost a race, or a name that clashes with another ref."""


class LockError(CasError):
    """A lock could not be taken in time."""

    def __init__(self, message: str, *, path: str = "", holder: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.holder = holder


class InputError(CasError, OSError):
    """A file given to import is missing or unreadable."""


class SourceNotFound(CasError, KeyError):
    """No registered source by that id."""


class WorkerDied(CasError):
    """A worker process of ``cas add`` ended without reporting what it stored.

    Its files may be on disk but not in the index: the index is rebuilt on the store's
    next open.
    """


class FetchError(CasError):
    """A download that could not be completed (network, HTTP status, size limits).

    ``url`` is always redacted. The underlying httpx error, when there is one, is chained
    as ``__cause__``.
    """

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class CommandFailed(CasError):
    """``cas run``: the command exited non-zero and nothing was stored.

    ``exit_code`` is the command's own, so ``cas run`` exits as the command did.
    """

    def __init__(self, code: int, command: list[str]) -> None:
        shown = " ".join(command)
        how = f"was killed by signal {-code}" if code < 0 else f"failed with exit code {code}"
        super().__init__(f"command {how}: {shown}; nothing stored")
        # As a shell reports it: 128 + the signal for a killed command.
        self.exit_code = 128 - code if code < 0 else (code if code < 256 else 1)


class SampleFormatError(IntegrityError):
    """Input to ``cas sample`` that is malformed: a bad record, an unterminated array.

    ``record`` is the 1-based number of the record where the problem is (or that was
    expected next), ``offset`` the byte offset of the problem in the decompressed data.
    """

    def __init__(self, message: str, *, record: int, offset: int, format: str = "") -> None:
        super().__init__(message, what="sample-input")
        self.record = record
        self.offset = offset
        self.format = format


class UnsupportedFormat(CasError):
    """Data that cannot be sampled: binary content, or a container such as zip or parquet."""


class MetadataError(CasError):
    """The metadata repository, pipeline run logs or manifests refused an operation."""


class PayloadError(MetadataError, ValueError):
    """A metadata record whose payload fails the JSON schema of its kind."""

    def __init__(self, message: str, *, kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind


class RunNotFound(MetadataError, KeyError):
    """No pipeline run (or step) by that id, for this tenant."""


class ManifestError(MetadataError):
    """A manifest file that is malformed, or a record in it that is refused (named)."""
