"""The synchronous write path: append an event, wait for the projector's verdict, report it."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from runledger.ingest.catalog import Catalog, RunRef
from runledger.ingest.errors import InvalidParameterValue, ProjectionTimeout, RunledgerError, ResourceDoesNotExist
from runledger.ingest.contract.events import Envelope, Verdict
from runledger.ingest.outcomes import VerdictBoard
from runledger.ingest.producer import EventLog
from runledger.ingest.contract import entities


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_event(type_: str, payload: dict[str, Any], *, user: str, run_id: str | None = None,
              experiment_id: str | None = None, event_id: str | None = None) -> Envelope:
    return Envelope(event_id=event_id or uuid.uuid4().hex, type=type_, experiment_id=experiment_id,
                    run_id=run_id, ingest_time=now_ms(), user=user, payload=payload)


class Writer:
    def __init__(self, log: EventLog, board: VerdictBoard, catalog: Catalog, wait_timeout: float = 30.0) -> None:
        self.log = log
        self.board = board
        self.catalog = catalog
        self.wait_timeout = wait_timeout

    async def commit(self, event: Envelope) -> Verdict:
        """Append `event`, wait until the projector has applied it; raise its rejection as a RunledgerError."""
        fut = self.board.expect(event.event_id)
        try:
            await self.log.append([event])
            verdict = await asyncio.wait_for(asyncio.shield(fut), self.wait_timeout)
        except asyncio.TimeoutError:
            raise ProjectionTimeout(
                f"Event {event.event_id} is in the log but was not applied within {self.wait_timeout:.0f}s; "
                "it will be applied, check before retrying.") from None
        finally:
            self.board.forget(event.event_id)
        if not verdict.applied:
            code = verdict.error_code if verdict.error_code != "MALFORMED_EVENT" else "INTERNAL_ERROR"
            raise RunledgerError(verdict.message, code)
        return verdict

    async def commit_many(self, events: list[Envelope]) -> list[Verdict]:
        """Append `events` together and wait for all verdicts; raise the first rejection."""
        if not events:
            return []
        futures = [self.board.expect(e.event_id) for e in events]
        try:
            await self.log.append(events)
            verdicts = await asyncio.wait_for(asyncio.gather(*(asyncio.shield(f) for f in futures)),
                                              self.wait_timeout)
        except asyncio.TimeoutError:
            raise ProjectionTimeout(
                f"{len(events)} events are in the log but were not all applied within {self.wait_timeout:.0f}s; "
                "they will be applied, check before retrying.") from None
        finally:
            for e in events:
                self.board.forget(e.event_id)
        for verdict in verdicts:
            if not verdict.applied:
                code = verdict.error_code if verdict.error_code != "MALFORMED_EVENT" else "INTERNAL_ERROR"
                raise RunledgerError(verdict.message, code)
        return list(verdicts)

    async def append(self, events: list[Envelope]) -> list[tuple[int, int]]:
        """Append without waiting for the projector (the streaming path); (partition, offset) of each."""
        return await self.log.append(events)

    def writable_run(self, run_id: str) -> RunRef:
        """Fail early, with MLflow's error, for writes the projector would reject anyway."""
        run = self.catalog.run(run_id)
        if run is None:
            raise ResourceDoesNotExist(entities.run_not_found(run_id))
        for stage in (run.lifecycle_stage, run.experiment_lifecycle_stage):
            if stage != "active":
                raise InvalidParameterValue(entities.run_not_active(run_id, stage))
        return run
