"""The streaming path's backpressure (ingest.backlog), on its own: it holds senders back only
while this process's appends are not applied within the bound."""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

from runledger.ingest.backlog import AppendBacklog


def _seconds_to_admit(backlog: AppendBacklog, settle_s: float = 0.0) -> float:
    """How long one sender waits at the gate, after the backlog has aged `settle_s`."""
    async def main() -> float:
        await asyncio.sleep(settle_s)
        t = time.monotonic()
        await backlog.admit()
        return time.monotonic() - t
    return asyncio.run(main())


async def _seconds_to_admit_while(backlog: AppendBacklog, projector: Callable[[], Awaitable[None]]) -> float:
    """How long one sender waits at the gate while `projector` applies appends beside it."""
    t = time.monotonic()
    task = asyncio.create_task(projector())
    await backlog.admit()
    waited = time.monotonic() - t
    await task
    return waited


def test_nothing_pending_admits_at_once() -> None:
    assert _seconds_to_admit(AppendBacklog(lambda: {}, max_age_s=0.05)) < 0.05


def test_a_young_backlog_admits_at_once() -> None:
    backlog = AppendBacklog(lambda: {0: 0}, max_age_s=5)
    backlog.appended([(0, 10)])
    assert _seconds_to_admit(backlog) < 0.05


def test_an_old_unapplied_append_holds_senders_until_the_projector_applies_it() -> None:
    async def main() -> tuple[float, float]:
        applied = {0: 0, 1: 0}
        backlog = AppendBacklog(lambda: applied, max_age_s=0.05)
        backlog.appended([(0, 3), (1, 7), (0, 5)])
        await asyncio.sleep(0.1)

        async def projector() -> None:
            await asyncio.sleep(0.2)
            applied[0] = 6          # partition 0 done, partition 1 not yet
            backlog.progressed()
            await asyncio.sleep(0.2)
            applied[1] = 8
            backlog.progressed()

        waited = await _seconds_to_admit_while(backlog, projector)
        return waited, backlog.oldest_unapplied_age()
    waited, age = asyncio.run(main())
    assert 0.35 < waited < 1.0
    assert age == 0.0


def test_a_stuck_projector_delays_senders_only_up_to_the_limit() -> None:
    backlog = AppendBacklog(lambda: {}, max_age_s=0.01, max_wait_s=0.2)
    backlog.appended([(0, 1)])
    assert 0.15 < _seconds_to_admit(backlog, settle_s=0.05) < 0.6


def test_an_old_backlog_smaller_than_one_commit_admits_at_once() -> None:
    # Less than `min_points` unapplied is one commit's worth that the projector is still
    # gathering: holding senders back then would only starve that commit.
    backlog = AppendBacklog(lambda: {0: 0}, max_age_s=0.01, min_points=100)
    backlog.appended([(0, 3)], points=60)
    assert _seconds_to_admit(backlog, settle_s=0.05) < 0.05


def test_an_old_backlog_of_a_commit_or_more_holds_senders_until_applied() -> None:
    async def main() -> float:
        applied = {0: 0}
        backlog = AppendBacklog(lambda: applied, max_age_s=0.01, min_points=100)
        backlog.appended([(0, 3)], points=60)
        backlog.appended([(0, 5)], points=60)
        await asyncio.sleep(0.05)

        async def projector() -> None:
            await asyncio.sleep(0.2)
            applied[0] = 4          # the first append applied: 60 points left, under min_points
            backlog.progressed()

        return await _seconds_to_admit_while(backlog, projector)
    assert 0.15 < asyncio.run(main()) < 0.8


def test_unapplied_points_count_only_appends_not_applied_on_every_partition() -> None:
    applied = {0: 4, 1: 0}
    backlog = AppendBacklog(lambda: applied, min_points=1)
    backlog.appended([(0, 3)], points=10)           # applied
    backlog.appended([(0, 2), (1, 6)], points=20)   # partition 1 not yet
    backlog.appended([(1, 9)], points=30)
    assert backlog.unapplied_points() == 50
