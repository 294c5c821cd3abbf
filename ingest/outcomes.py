"""Waiting for the projector's verdict on events this process appended (docs/design.md, invariant 5)."""

from __future__ import annotations

import asyncio

from runledger.ingest.contract.events import Verdict


class VerdictBoard:
    """Futures keyed by event id, resolved by the projector after it commits a batch.

    Must be used from the event loop thread. Register with `expect` *before* appending, so
    a verdict that arrives quickly is not missed.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[Verdict]] = {}

    def expect(self, event_id: str) -> asyncio.Future[Verdict]:
        fut: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._waiting[event_id] = fut
        return fut

    def forget(self, event_id: str) -> None:
        fut = self._waiting.pop(event_id, None)
        if fut is not None and not fut.done():
            fut.cancel()

    def resolve(self, verdicts: dict[str, Verdict]) -> None:
        if not self._waiting:
            return
        for event_id, verdict in verdicts.items():
            fut = self._waiting.pop(event_id, None)
            if fut is not None and not fut.done():
                fut.set_result(verdict)

    def __len__(self) -> int:
        return len(self._waiting)
