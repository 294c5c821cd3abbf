"""The W&B API key, read in one place. W&B's client sends `Authorization: Basic
base64("api:" + key)`; its keys are at least 40 characters of [A-Za-z0-9_], optionally after a
`prefix-` (docs/wandb.md).

With authentication off (RUNLEDGER_AUTH, the default) any well-formed key is accepted and none is
recorded. With it on, the gate (runledger.auth) has already verified the key as a Runledger API
token (`rl_...`, 60 characters of [A-Za-z0-9_], which W&B's client accepts) before the handler
runs; this check then only repeats the format rule (docs/auth.md, docs/wandb.md)."""

from __future__ import annotations

import base64
import binascii
import re

from starlette.requests import HTTPConnection

_KEY = re.compile(r"(?:[A-Za-z0-9_]+-)?[A-Za-z0-9_]{40,}")


class BadCredentials(Exception):
    """No key, or not one W&B's client could have sent; the message says which."""


def api_key(conn: HTTPConnection) -> str:
    """The key of a request, or BadCredentials."""
    header = conn.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        key = token.strip()
    elif scheme.lower() == "basic" and token:
        try:
            user, sep, key = base64.b64decode(token.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise BadCredentials("The Authorization header is not valid basic authentication") from None
        if not sep:
            raise BadCredentials("Basic authentication must be 'api:<key>'")
    else:
        raise BadCredentials("An API key is required: Authorization: Basic base64('api:<key>')")
    if not _KEY.fullmatch(key):
        raise BadCredentials("The API key is malformed: expected at least 40 characters of [A-Za-z0-9_], "
                             "optionally after 'prefix-'")
    return key


def claimed_user(conn: HTTPConnection) -> str:
    """Who the request says it comes from, recorded (unverified) in the events it appends. W&B's
    basic-auth user is always "api", so the client's X-WANDB-USERNAME header names the user."""
    return conn.headers.get("x-wandb-username", "") or conn.headers.get("x-runledger-user", "")
