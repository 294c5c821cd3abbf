"""Readiness: is Kafka reachable, and has the read model caught up with the log it found at start?

`/health` is liveness (the process answers). `/health/ready` is this: 503 while the projector is
still folding the log that was there when the server started (a rebuild after the DuckDB file
was removed, or a restart after a long stop), or while Kafka does not answer; 200 otherwise.
During start-up catch-up a progress line is logged every few seconds (events and points per
second, position, ETA).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Protocol

from aiokafka.errors import KafkaError

from runledger.progress import eta

log = logging.getLogger(__name__)

# How long the readiness probe waits for Kafka's answer before calling it unreachable.
KAFKA_PROBE_TIMEOUT_S = 3.0
REPORT_EVERY_S = 3.0


class LagSource(Protocol):
    applied_offsets: dict[int, int]
    points_folded: int

    async def lag(self) -> dict[int, tuple[int, int]]: ...


def behind(target: dict[int, int], applied: dict[int, int]) -> dict[int, int]:
    """Per partition, how many events of `target` (end offsets) are not applied yet."""
    return {p: max(0, end - applied.get(p, 0)) for p, end in sorted(target.items())}


class CatchUp:
    """The start-up catch-up: the log's end offsets when the server started, and progress towards them."""

    def __init__(self, projector: LagSource, lag: dict[int, tuple[int, int]]) -> None:
        self.projector = projector
        self.target = {p: end for p, (end, _) in lag.items()}
        self.start = {p: applied for p, (_, applied) in lag.items()}
        self.total = sum(behind(self.target, self.start).values())
        self.started = time.monotonic()
        self.points_at_start = projector.points_folded
        self.finished_at: float | None = None if self.total else self.started

    def remaining(self) -> dict[int, int]:
        applied = {p: self.projector.applied_offsets.get(p, self.start[p]) for p in self.target}
        return behind(self.target, applied)

    @property
    def done(self) -> bool:
        if self.finished_at is None and not any(self.remaining().values()):
            self.finished_at = time.monotonic()
        return self.finished_at is not None

    def line(self) -> str:
        left = sum(self.remaining().values())
        applied = self.total - left
        seconds = time.monotonic() - self.started
        points = self.projector.points_folded - self.points_at_start
        rate = applied / seconds if seconds else 0.0
        prate = points / seconds if seconds else 0.0
        position = " ".join(f"{p}:{o}" for p, o in sorted(self.projector.applied_offsets.items()))
        share = 100 * applied / self.total if self.total else 100
        return (f"rebuilding the read model from the log: {applied:,} of {self.total:,} events ({share:.0f}%), "
                f"{rate:,.0f} events/s, {prate:,.0f} points/s, position {position or 'start'}; "
                f"{eta(applied, self.total, seconds)}").rstrip("; ")

    def state(self) -> dict[str, Any]:
        remaining = self.remaining()
        return {"events_behind": sum(remaining.values()),
                "partitions_behind": {str(p): n for p, n in remaining.items() if n},
                "progress": None if self.done else self.line()}

    async def report(self, then: Callable[[], Awaitable[None]] | None = None) -> None:
        """Log progress until caught up; then run `then` (work that needs the caught-up read model)."""
        if self.total:
            log.info("the read model is %s events behind the log: rebuilding it (reads are stale and "
                     "/health/ready answers 503 until it has caught up)", f"{self.total:,}")
        while not self.done:
            await asyncio.sleep(REPORT_EVERY_S)
            if not self.done:
                log.info(self.line())
        if self.total:
            seconds = (self.finished_at or time.monotonic()) - self.started
            log.info("read model caught up: %s events, %s points in %.1fs", f"{self.total:,}",
                     f"{self.projector.points_folded - self.points_at_start:,}", seconds)
        if then is not None:
            await then()


class Readiness:
    def __init__(self, projector: LagSource, catch_up: CatchUp) -> None:
        self.projector = projector
        self.catch_up = catch_up
        self.started_work_done = catch_up.total == 0   # set once start-up work after catch-up is done

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details) for the readiness endpoint."""
        try:
            lag = await asyncio.wait_for(self.projector.lag(), KAFKA_PROBE_TIMEOUT_S)
        except (KafkaError, asyncio.TimeoutError, OSError) as e:
            return False, {"status": "kafka_unreachable",
                           "message": f"Kafka did not answer within {KAFKA_PROBE_TIMEOUT_S:.0f}s "
                                      f"({type(e).__name__}); writes fail with 503 until it does",
                           "events_behind": None}
        now_behind = sum(max(0, end - applied) for end, applied in lag.values())
        if not self.catch_up.done or not self.started_work_done:
            state = self.catch_up.state()
            return False, {"status": "catching_up",
                           "message": "the read model is rebuilding from the log; reads would be stale",
                           **state}
        return True, {"status": "ready", "message": "Kafka answers and the read model has caught up",
                      "events_behind": now_behind}
