"""Who, how and when: the request context every event records (docs/design.md, invariant 11).

The HTTP layer binds a `Provenance` for each request (runledger.http_guards.RequestContext
middleware); `writer.new_event` stamps it onto every event the request appends, so no route
has to pass it along. Events appended outside any request (the built-in experiment at start)
carry api "internal".

With authentication on (docs/auth.md), the acting principal is the authenticated user and events
say `actor_verified: true`; what a client claims (MLflow's `user_id`, the `mlflow.user` tag)
stays in the payload as data. With it off, the actor is only what the client claims (a
basic-auth user name, the X-Runledger-User header, or on runs/create MLflow's `user_id`), so
the event says `actor_verified: false`.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar, Token
from dataclasses import dataclass

REQUEST_ID_HEADER = "X-Request-Id"
# An incoming request id is kept when it is short and plain (it is echoed in a header and
# stored in the log); anything else is replaced by a fresh one.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

API_MLFLOW = "mlflow"
API_STREAM = "stream"
API_RUNLEDGER = "runledger"
API_INTERNAL = "internal"
API_COMET = "comet"   # Comet's REST v2 (runledger.dialects.comet)
API_WANDB = "wandb"  # W&B's public API (POST /graphql)


@dataclass(frozen=True, slots=True)
class Provenance:
    request_id: str | None
    api: str
    principal: str | None = None   # the authenticated user (runledger.auth.gate); None: not authenticated


_current: ContextVar[Provenance | None] = ContextVar("runledger_provenance", default=None)


def current() -> Provenance | None:
    return _current.get()


def bind(p: Provenance) -> Token[Provenance | None]:
    return _current.set(p)


def unbind(token: Token[Provenance | None]) -> None:
    _current.reset(token)


def request_id(incoming: str | None) -> str:
    """The caller's request id if it is sane, else a fresh one."""
    if incoming and _SANE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex
