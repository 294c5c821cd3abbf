"""Backpressure for the streaming path: the read model may not fall further behind than a
bound, so "accepted" stays close to "queryable" (issue: projector lag p99 < 1 s).

The streaming endpoint answers once Kafka has acknowledged, without waiting for the projector.
When this process's appends are not applied within `max_age_s`, new streaming requests are
held back before appending until the projector catches up: senders slow down to the rate the
read model can absorb instead of a backlog growing without bound. Synchronous endpoints wait
for their own verdicts already and are not gated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Callable, Mapping

log = logging.getLogger(__name__)


class AppendBacklog:
    def __init__(self, applied_offsets: Callable[[], Mapping[int, int]], max_age_s: float = 0.1,
                 max_wait_s: float = 30.0, min_points: int = 0) -> None:
        self._applied = applied_offsets
        # Requests are held back only while at least this many appended points are unapplied:
        # less than that is one commit's worth, which the projector commits within its own
        # short wait (projector.consumer.Committer gathers streamed points into commits of a
        # DuckDB row group). Holding them back sooner starves that commit: it then goes through
        # DuckDB's WAL, costs about twice the CPU, and the checkpoint that follows stalls every
        # commit behind it, which is what made the lag peak.
        self.min_points = min_points
        self.max_age_s = max_age_s
        self.max_wait_s = max_wait_s
        # (append time, {partition: last offset appended}, points) in append order
        self._pending: deque[tuple[float, dict[int, int], int]] = deque()
        self._progress = asyncio.Event()

    def appended(self, positions: list[tuple[int, int]], points: int = 0) -> None:
        last: dict[int, int] = {}
        for partition, offset in positions:
            last[partition] = max(offset, last.get(partition, -1))
        if last:
            self._pending.append((time.monotonic(), last, points))

    def progressed(self) -> None:
        """The projector committed something (called on the event loop)."""
        self._progress.set()

    def oldest_unapplied_age(self) -> float:
        applied = self._applied()
        while self._pending and all(applied.get(p, 0) > o for p, o in self._pending[0][1].items()):
            self._pending.popleft()
        return time.monotonic() - self._pending[0][0] if self._pending else 0.0

    def unapplied_points(self) -> int:
        """Points of this process's appends the projector has not applied yet."""
        applied = self._applied()
        return sum(points for _, last, points in self._pending
                   if not all(applied.get(p, 0) > o for p, o in last.items()))

    def _must_hold(self) -> bool:
        return self.oldest_unapplied_age() > self.max_age_s and (
            self.min_points <= 0 or self.unapplied_points() >= self.min_points)

    async def admit(self) -> None:
        """Return when this process's oldest unapplied append is younger than `max_age_s`, or
        fewer than `min_points` of its points are unapplied (or after `max_wait_s`: a stuck
        projector must not turn into stuck senders forever)."""
        deadline = time.monotonic() + self.max_wait_s
        while self._must_hold():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("projector is %.1fs behind this process's appends; admitting anyway",
                            self.oldest_unapplied_age())
                return
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), min(remaining, 0.05))
            except asyncio.TimeoutError:
                pass
