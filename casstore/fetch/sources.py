"""Registered sources: ``sources.toml``, one table per source id.

A source is a URL with an id and a dataset name. It never holds a credential: a URL with
``user:password@`` or a secret query parameter is refused, and secrets come at fetch time
from ``--header``, from environment variables the source names (``headers_env``,
``params_env``), or from netrc. Edits happen under the file's lock and replace the file
atomically.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from casstore import _fs
from casstore.errors import SourceNotFound, StoreFormatError, UsageError
from casstore.fetch.redact import has_credentials
from casstore.refs import check_ref_name


class Source(BaseModel):
    """One registered source."""

    model_config = ConfigDict(extra="forbid")
    id: str
    url: str
    dataset: str | None = None
    headers_env: dict[str, str] = Field(default_factory=dict)  # header -> env variable
    params_env: dict[str, str] = Field(default_factory=dict)  # query parameter -> env var


def check_url(url: str) -> str:
    """Accept only absolute http(s) URLs."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UsageError(f"invalid URL {url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"not an http(s) URL: {url!r}")
    return url


def slug_for(url: str) -> str:
    """A default source id from the URL's file name: ``…/systems.json.gz`` -> ``systems``.

    Always a valid source id: percent-encoding is decoded, other characters become ``-``,
    and a long name is cut to 80 characters plus a short hash of the whole.
    """
    name = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    for ext in (".gz", ".bz2", ".xz", ".zst", ".zip"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    for ext in (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".txt"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name)
    slug = re.sub(r"\.{2,}", ".", slug).strip("-.")
    if len(slug) > 80:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        slug = f"{slug[:80].rstrip('-.')}-{digest}"
    slug = re.sub(r"\.lock$", "-lock", slug)
    if not slug:
        slug = re.sub(r"[^A-Za-z0-9.-]+", "-", urlsplit(url).hostname or "source").strip("-.")
    return slug or "source"


def _toml_str(value: str) -> str:
    # JSON strings are TOML basic strings, except that TOML also forbids a raw DEL.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _render(sources: dict[str, Source]) -> str:
    out = ["# registered sources (cas source add); no credentials here, see docs/cli.md\n"]
    for sid in sorted(sources):
        s = sources[sid]
        out.append(f"\n[sources.{_toml_str(sid)}]\n")
        out.append(f"url = {_toml_str(s.url)}\n")
        if s.dataset is not None:
            out.append(f"dataset = {_toml_str(s.dataset)}\n")
        for table in ("headers_env", "params_env"):
            mapping = getattr(s, table)
            if mapping:
                items = ", ".join(f"{_toml_str(k)} = {_toml_str(v)}" for k, v in mapping.items())
                out.append(f"{table} = {{ {items} }}\n")
    return "".join(out)


class SourceRegistry:
    """The ``sources.toml`` of a store."""

    def __init__(self, path: Path, *, lock_timeout: float = 30.0) -> None:
        self.path = path
        self.lock_timeout = lock_timeout

    def load(self) -> dict[str, Source]:
        """Every registered source by id."""
        try:
            raw = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise StoreFormatError(f"{self.path}: not valid TOML: {exc}") from exc
        out = {}
        for sid, table in raw.get("sources", {}).items():
            try:
                out[sid] = Source(id=sid, **table)
            except (ValidationError, TypeError) as exc:
                raise StoreFormatError(f"{self.path}: source {sid!r} is invalid: {exc}") from exc
        return out

    def get(self, source_id: str) -> Source | None:
        """One source, or None."""
        return self.load().get(source_id)

    def add(self, source: Source, *, replace: bool = False) -> Source:
        """Register a source; refuses credentials in its URL and an id already taken."""
        check_ref_name(source.id, what="source id")
        check_url(source.url)
        if has_credentials(source.url):
            raise UsageError(
                "refusing to store credentials in sources.toml: remove them from the URL and"
                " pass them at fetch time (--header 'Authorization: …', an environment"
                " variable named with --header-env/--param-env, or ~/.netrc)"
            )
        with _fs.LockFile(self.path, timeout=self.lock_timeout) as lock:
            current = self.load()
            if source.id in current and not replace:
                raise UsageError(f"source {source.id!r} exists (url {current[source.id].url})")
            current[source.id] = source
            text = _render(current)
            tomllib.loads(text)  # never write a file that would not read back
            lock.write(text.encode())
            lock.commit()
        return source

    def remove(self, source_id: str) -> Source:
        """Unregister a source (its ref and objects stay)."""
        with _fs.LockFile(self.path, timeout=self.lock_timeout) as lock:
            current = self.load()
            if source_id not in current:
                raise SourceNotFound(f"no source {source_id!r}")
            gone = current.pop(source_id)
            lock.write(_render(current).encode())
            lock.commit()
        return gone
