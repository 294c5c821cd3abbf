"""Who a request says it comes from, for every dialect: the basic-auth user, else the
X-Runledger-User header, else ''. With authentication on (docs/auth.md) it is the authenticated
user; otherwise a claim, recorded in each event as unverified (docs/design.md, invariant 11)."""

from __future__ import annotations

import base64

from starlette.requests import HTTPConnection


def acting_user(conn: HTTPConnection) -> str:
    found = conn.scope.get("state", {}).get("runledger.access")
    if found is not None and found.username is not None:
        return str(found.username)      # authenticated (runledger.auth): no claim can override it
    auth = conn.headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            return base64.b64decode(auth[6:]).decode().split(":", 1)[0]
        except (ValueError, UnicodeDecodeError):
            pass
    return conn.headers.get("x-runledger-user", "")
