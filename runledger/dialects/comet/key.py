"""The Comet API key a request carries, read in ONE place so authentication can use it as the
user's API token when it exists (not wired yet: see docs/comet.md).

comet_ml sends the key bare, `Authorization: <key>` (no scheme). A key may also embed the
server URL (`<key>*<base64 JSON>`); only the part before `*` is the key proper."""

from __future__ import annotations

from starlette.requests import HTTPConnection

_SCHEMES = ("basic ", "bearer ")


def comet_key(conn: HTTPConnection) -> str | None:
    """The bare key of a Comet request, or None (no header, or a Basic/Bearer one, which is not
    Comet's)."""
    raw = conn.headers.get("authorization", "").strip()
    if not raw or raw.lower().startswith(_SCHEMES):
        return None
    return raw.split("*", 1)[0] or None
