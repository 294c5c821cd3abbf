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
        # Several waiters may share an id: a streaming client may retry a request (same event
        # id) while its first attempt still waits.
        self._waiting: dict[str, list[asyncio.Future[Verdict]]] = {}

    def expect(self, event_id: str) -> asyncio.Future[Verdict]:
        fut: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(event_id, []).append(fut)
        return fut

    def forget(self, event_id: str, fut: asyncio.Future[Verdict] | None = None) -> None:
        """Stop waiting with `fut` (every waiter of `event_id` if None)."""
        waiting = self._waiting.get(event_id, [])
        for f in [fut] if fut is not None else list(waiting):
            if f in waiting:
                waiting.remove(f)
            if not f.done():
                f.cancel()
        if not waiting:
            self._waiting.pop(event_id, None)

    def resolve(self, verdicts: dict[str, Verdict]) -> None:
        if not self._waiting:
            return
        for event_id, verdict in verdicts.items():
            for fut in self._waiting.pop(event_id, ()):
                if not fut.done():
                    fut.set_result(verdict)

    def __len__(self) -> int:
        return len(self._waiting)
