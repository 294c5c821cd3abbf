"""A bounded timeline of server work that may hold requests up: the projector's folds on the
event loop, DuckDB commits on their thread, commit listeners, garbage collection, memory
housekeeping. `runledger.request_timing` reads it beside each request's phases.

It lives here, below the rooms that record into it (the projector, the query room's memory
housekeeping), so that recording needs no import upwards (docs/design.md, "Rooms").
"""

from __future__ import annotations

import contextlib
from collections import deque
from time import perf_counter
from typing import Iterator

__all__ = ["event", "recent", "span"]

_MAX_EVENTS = 16384

# (kind, start, end), perf_counter seconds
_events: deque[tuple[str, float, float]] = deque(maxlen=_MAX_EVENTS)


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


def recent() -> list[tuple[str, float, float]]:
    """A copy of the kept timeline, oldest first as recorded."""
    return list(_events)
