"""The Comet API key a request carries, read in ONE place: authentication takes it as the user's
API token (registered for the Comet prefixes in runledger/app.py; docs/auth.md, docs/comet.md).

comet_ml sends the key bare, `Authorization: <key>` (no scheme). A key may also embed the
server URL (`<key>*<base64 JSON>`); only the part before `*` is the key proper. Basic and Bearer
headers are read as everywhere else."""

from __future__ import annotations

from starlette.datastructures import Headers

from runledger.auth.authenticator import Credential, basic_or_bearer

_SCHEMES = ("basic ", "bearer ")


def comet_key(headers: Headers) -> str | None:
    """The bare key of a Comet request, or None (no header, or a Basic/Bearer one)."""
    raw = (headers.get("authorization") or "").strip()
    if not raw or raw.lower().startswith(_SCHEMES) or " " in raw:
        return None
    return raw.split("*", 1)[0] or None


def comet_credential(headers: Headers) -> Credential | None:
    """The authenticator's key reader for the Comet routes: the key is an API token."""
    key = comet_key(headers)
    return Credential(None, key) if key is not None else basic_or_bearer(headers)
