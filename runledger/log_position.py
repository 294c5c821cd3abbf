"""Read-your-writes across replicas behind a load balancer (docs/replicas.md).

Every write answer carries `X-Runledger-Log-Position`: per partition, the offset after the last
record the request appended. A request that sends that header back waits, before it runs, until
this server's read model has applied the log up to there, so it sees the write whichever
replica wrote it. A replica that does not get there within the sync timeout answers 504
(the write is in the log; this replica is behind), never older data than the caller asked for.

Pure ASGI (see runledger.http_guards for why): the header is added to the response start.
With authentication on it runs inside the auth gate, so a 401/403 comes at once, before any
wait; and a request the gate let through without credentials (health, version, API docs) does
not wait either. A route whose handler checks the permission itself declares that check on its
rule (`Rule.refused_now`); a caller it refuses skips the wait and gets the handler's refusal.
A route whose check needs the request body (streaming ingest, Comet's experiment create) waits
in its handler instead (`Rule.waits_in_handler`, `reach_position`), after that check.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Mapping

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runledger import request_timing
from runledger.auth.access import SCOPE_KEY
from runledger.auth.rules import SCOPE_RULE_KEY
from runledger.http_guards import _send_json
from runledger.ingest.errors import InvalidParameterValue, RunledgerError
from runledger.ingest.positions import LOG_POSITION_HEADER, begin_request, format_log_position, parse_log_position

_HEADER = LOG_POSITION_HEADER.lower().encode()
# A waiting read wakes when a commit lands (Projector.next_commit); it also looks this often, for
# the offsets that move otherwise (a rebuild, an isolated refusal) and before the projector exists.
_POLL_S = 0.05
# Where the middleware leaves a parsed position for a handler that waits itself (reach_position).
_DEFERRED_KEY = "runledger.log_position"


class LogPositionMiddleware:
    def __init__(self, app: ASGIApp, timeout: float, authorised_only: bool = False) -> None:
        self.app = app
        self.timeout = timeout
        # With authentication on: wait only for requests the gate authorised (it leaves their
        # Access in the scope); public routes read nothing a position could be about.
        self.authorised_only = authorised_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wanted = Headers(scope=scope).get(LOG_POSITION_HEADER)
        if wanted is not None and self.authorised_only and SCOPE_KEY not in scope.get("state", {}):
            wanted = None
        if wanted is not None and self.authorised_only and await _refused_by_handler_check(scope):
            wanted = None        # the handler refuses it at once, as it would have after the wait
        if wanted is not None and self.authorised_only and _handler_waits(scope):
            # The handler checks the caller first, then waits (reach_position); a malformed
            # header is still refused here, at once.
            try:
                target = parse_log_position(wanted)
            except InvalidParameterValue as e:
                await _send_json(send, 400, {"error_code": e.error_code, "message": e.message}, scope)
                return
            scope["state"][_DEFERRED_KEY] = (target, self.timeout)
            wanted = None
        if wanted is not None and not await self._reached(scope, send, wanted):
            return
        written = begin_request()

        async def send_with_position(message: Message) -> None:
            if message["type"] == "http.response.start" and written:
                headers = [h for h in message.get("headers", []) if h[0].lower() != _HEADER]
                message = {**message, "headers": [*headers, (_HEADER, format_log_position(written).encode())]}
            await send(message)

        request_timing.mark("routing")   # the middleware chain is behind; routing and the route ahead
        await self.app(scope, receive, send_with_position)

    async def _reached(self, scope: Scope, send: Send, value: str) -> bool:
        """Wait until the projector applied `value`'s position; answer the error and return
        False if the header is malformed or the position is not reached in time."""
        try:
            target = parse_log_position(value)
        except InvalidParameterValue as e:
            await _send_json(send, 400, {"error_code": e.error_code, "message": e.message}, scope)
            return False
        behind = await _wait_for(scope["app"], target, self.timeout)
        if behind is None:
            return True
        await _send_json(send, 504, {"error_code": "DEADLINE_EXCEEDED",
                                     "message": _behind_message(behind, self.timeout)}, scope)
        return False


class LogPositionNotReached(RunledgerError):
    """This replica did not apply the log up to the position the caller passed in time."""

    error_code = "DEADLINE_EXCEEDED"


async def reach_position(request: Request, check: Callable[[], None] | None = None) -> None:
    """The log-position wait of a route whose rule has `waits_in_handler`: its handler calls
    this after its own permission check (or passes that check as `check`, run only when there
    is a wait to skip; it raises the refusal), so a caller it refuses is not held for the wait.
    Returns at once when there is nothing to wait for (no header, or authentication off, where
    the middleware waited already); raises LogPositionNotReached (504) after the sync timeout."""
    deferred = request.scope.get("state", {}).pop(_DEFERRED_KEY, None)
    if deferred is None:
        return
    if check is not None:
        check()
    target, timeout = deferred
    behind = await _wait_for(request.scope["app"], target, timeout)
    if behind is not None:
        raise LogPositionNotReached(_behind_message(behind, timeout))


async def _wait_for(app: Any, target: Mapping[int, int], timeout: float) -> dict[int, int] | None:
    """Wait until the projector applied `target`; None once it has, else what is still behind
    when `timeout` runs out."""
    projector = getattr(app.state, "projector", None)
    deadline = time.monotonic() + timeout
    while projector is None or any(projector.applied_offsets.get(p, 0) < o for p, o in target.items()):
        if time.monotonic() >= deadline:
            return {p: o for p, o in target.items() if projector is None or projector.applied_offsets.get(p, 0) < o}
        if projector is None:
            await asyncio.sleep(_POLL_S)
        else:
            # not a fixed-interval poll: a 5 ms one added up to 5 ms to every read that waited
            await asyncio.wait([projector.next_commit()],
                               timeout=min(_POLL_S, max(0.0, deadline - time.monotonic())))
    return None


def _behind_message(behind: Mapping[int, int], timeout: float) -> str:
    return (f"This server has not applied the log up to {format_log_position(dict(behind))} within {timeout:.0f}s "
            "(the write is in the log; this replica is behind). Retry, or read from the server that took the write.")


def _handler_waits(scope: Scope) -> bool:
    found = scope.get("state", {}).get(SCOPE_RULE_KEY)
    return found is not None and found[0].waits_in_handler


async def _refused_by_handler_check(scope: Scope) -> bool:
    """Whether the route's own permission check (a handler-checked rule's `refused_now`) already
    refuses this caller. The gate checked every rule that locates its experiment in the request;
    a handler that checks for itself would otherwise refuse only after the wait, so a caller
    without the permission could hold the request for the whole sync timeout."""
    found = scope.get("state", {}).get(SCOPE_RULE_KEY)
    if found is None:
        return False
    rule, params = found
    if rule.refused_now is None:
        return False
    try:
        # the check reads the read model (DuckDB): off the event loop, as the handlers run it
        return bool(await asyncio.to_thread(rule.refused_now, Request(scope), params))
    except RunledgerError:
        return False          # e.g. nothing found yet: the write the position names may bring it


def ruled_offsets(projector: Any) -> Mapping[int, int]:
    """Per partition, the next offset `projector` has ruled on: folded (verdicts handed out) or
    applied, whichever is further (a restart or an isolating resume updates the latter first)."""
    applied, folded = dict(projector.applied_offsets), dict(projector.folded_offsets)
    return {p: max(applied.get(p, 0), folded.get(p, 0)) for p in applied.keys() | folded.keys()}
