"""Keep secrets out of records, reflogs, logs and error messages.

A URL loses its ``user:password@`` and the values of secret query parameters (names from
config; by default token, key, signature, sig, password, secret, and a few common
spellings); headers lose Authorization, Cookie and friends. Redaction is applied to
everything a fetch writes or prints, so a secret can only live in memory for the request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

REDACTED = "REDACTED"
DEFAULT_SECRET_PARAMS = (
    "token",
    "key",
    "signature",
    "sig",
    "password",
    "secret",
    "access_token",
    "api_key",
    "apikey",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
)
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"}
)


def has_credentials(url: str, secret_params: Iterable[str] = DEFAULT_SECRET_PARAMS) -> bool:
    """True when the URL carries a user/password or a secret query parameter."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        return True
    names = {p.lower() for p in secret_params}
    return any(k.lower() in names for k, _ in parse_qsl(parts.query, keep_blank_values=True))


def redact_url(url: str, secret_params: Iterable[str] = DEFAULT_SECRET_PARAMS) -> str:
    """The URL with credentials and secret query values replaced by ``REDACTED``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if parts.username is not None or parts.password is not None:
        port = f":{parts.port}" if parts.port else ""
        netloc = f"{REDACTED}@{host}{port}" if ":" not in host else f"{REDACTED}@[{host}]{port}"
    names = {p.lower() for p in secret_params}
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in names for k, _ in pairs):
            query = urlencode(
                [(k, REDACTED if k.lower() in names else v) for k, v in pairs],
                quote_via=quote,
                safe="",
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` with secret values replaced."""
    return {k: (REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Remove known secret strings from free text (an exception message, say)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return text
