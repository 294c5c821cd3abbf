"""Where a request's time goes: server-side timestamps of recent requests, phase by phase, and
what else the server was doing meanwhile (the projector folding on the event loop, DuckDB
commits on their thread, commit listeners, garbage collection, memory housekeeping).

A request's time as its client sees it is the sum of: reaching the server (the client, loopback,
the event loop getting round to reading the socket), the ASGI task starting (`queued`), the
middleware chain and routing down to the handler, with a hop to the thread pool for a plain
function route (`to_handler`), the handler itself, the way back up and the response's bytes
handed to the socket (`from_handler`), and the bytes reaching the client. A slow request's
phases say which part held it, and its overlaps which activity ran at the same time; comparing
the distributions of a few hundred requests before and after a change stays meaningful on a
loaded machine where client wall-clock figures do not.

Timestamps are `time.perf_counter()`, CLOCK_MONOTONIC on Linux: the same clock in every process
of the machine, so a benchmark client can set its own send and receive times beside the
server's (bench/workloads/latency.py does, matching requests by their X-Request-Id).

`GET /api/runledger/v1/request-timings` lists them (runledger.dialects.native.ops). Cost: a few
clock reads and one tuple per request, one tuple per fold, commit or collection; bounded.
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import gc
import threading
from collections import deque
from time import perf_counter
from typing import Any, Iterator

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ARRIVED_KEY", "TimingMiddleware", "event", "install_gc_callback", "mark", "snapshot", "span"]

# Set in the scope by the HTTP protocol when a request's first byte is parsed
# (runledger.header_deadline), before the ASGI task for it exists.
ARRIVED_KEY = "runledger.arrived"

_MAX_REQUESTS = 4096
_MAX_EVENTS = 16384
_MAX_TEXT = 256   # of a kept path or request id: the memory kept stays bounded whatever callers send

# (request id, method, path, arrived, entered, marks, response started, done)
_requests: deque[tuple[str, str, str, float, float, dict[str, float], float, float]] = deque(maxlen=_MAX_REQUESTS)
# (kind, start, end)
_events: deque[tuple[str, float, float]] = deque(maxlen=_MAX_EVENTS)
_marks: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar("runledger_request_marks",
                                                                                 default=None)


def mark(name: str) -> None:
    """Note when the current request reached `name` (e.g. "handler", "handler_end"); nothing
    outside a request. The marks are shared with the thread a plain-function route runs in
    (the thread pool runs it in a copy of the request's context, holding the same dict)."""
    marks = _marks.get()
    if marks is not None:
        marks[name] = perf_counter()


def event(kind: str, start: float, end: float) -> None:
    """Something that ran from `start` to `end` (perf_counter) and may have held requests up."""
    _events.append((kind, start, end))


@contextlib.contextmanager
def span(kind: str) -> Iterator[None]:
    start = perf_counter()
    try:
        yield
    finally:
        _events.append((kind, start, perf_counter()))


_gc_started = threading.local()
_gc_installed = False


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_started.t = perf_counter()
    else:
        start = getattr(_gc_started, "t", None)
        if start is not None:
            _events.append((f"gc{info.get('generation', '')}", start, perf_counter()))


def install_gc_callback() -> None:
    """Record every garbage collection as an event (once per process)."""
    global _gc_installed
    if not _gc_installed:
        gc.callbacks.append(_on_gc)
        _gc_installed = True


class TimingMiddleware:
    """Pure ASGI, outermost: stamps entry, the response's start and its last byte handed on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        entered = perf_counter()
        marks: dict[str, float] = {}
        token = _marks.set(marks)
        started = 0.0

        async def timed_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            _marks.reset(token)
            rid = str(scope.get("state", {}).get("request_id", ""))
            _requests.append((rid[:_MAX_TEXT], scope.get("method", ""), scope.get("path", "")[:_MAX_TEXT],
                              scope.get(ARRIVED_KEY, entered), entered, marks, started, perf_counter()))


def _phases(arrived: float, entered: float, marks: dict[str, float], started: float, done: float) -> dict[str, float]:
    ms = 1000.0
    out = {"queued": (entered - arrived) * ms}
    h0, h1 = marks.get("handler"), marks.get("handler_end")
    if h0 is not None and h1 is not None:
        routing = marks.get("routing")
        if routing is not None:   # split: the middleware chain, then routing and the hop to the handler
            out["middleware"] = (routing - entered) * ms
            out["dispatch"] = (h0 - routing) * ms
        out["to_handler"] = (h0 - entered) * ms
        out["handler"] = (h1 - h0) * ms
        out["from_handler"] = (done - h1) * ms
    else:
        out["app"] = (done - entered) * ms
    out["total"] = (done - arrived) * ms
    if started:
        out["send"] = (done - started) * ms
    return {k: round(v, 4) for k, v in out.items()}


def snapshot(path: str | None = None, since: float | None = None, limit: int = _MAX_REQUESTS) -> dict[str, Any]:
    """The newest `limit` recorded requests (to `path` only, and arrived after `since` when
    given), each with its timestamps, phases (ms) and the milliseconds each kind of event
    overlapped it; plus the server's clock now, to ask `since` next time."""
    requests = [r for r in list(_requests) if (path is None or r[2] == path) and (since is None or r[3] > since)]
    requests = requests[-limit:] if limit > 0 else []
    events = sorted(list(_events), key=lambda e: e[2])
    ends = [e[2] for e in events]
    longest = max((e[2] - e[1] for e in events), default=0.0)
    out = []
    for rid, method, p, arrived, entered, marks, started, done in requests:
        overlap: dict[str, float] = {}
        i = bisect.bisect_left(ends, arrived)
        while i < len(events) and events[i][2] <= done + longest:
            kind, start, end = events[i]
            o = min(end, done) - max(start, arrived)
            if o > 0:
                overlap[kind] = overlap.get(kind, 0.0) + o * 1000
            i += 1
        out.append({"request_id": rid, "method": method, "path": p, "arrived": arrived, "entered": entered,
                    "marks": marks, "response_started": started, "done": done,
                    "phases_ms": _phases(arrived, entered, marks, started, done),
                    "overlap_ms": {k: round(v, 4) for k, v in overlap.items()}})
    # what the server did over the same span, whether or not a request overlapped it
    first = requests[0][3] if requests else perf_counter()
    activity: dict[str, dict[str, float]] = {}
    for kind, start, end in events:
        if end >= first:
            a = activity.setdefault(kind, {"count": 0, "total_ms": 0.0, "max_ms": 0.0})
            a["count"] += 1
            a["total_ms"] += (end - start) * 1000
            a["max_ms"] = max(a["max_ms"], (end - start) * 1000)
    activity = {k: {n: round(v, 3) for n, v in a.items()} for k, a in activity.items()}
    return {"now": perf_counter(), "requests": out, "activity": activity}
