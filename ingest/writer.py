"""The synchronous write path: append an event, wait for the projector's verdict, report it."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from typing import Any, Awaitable, Callable, Mapping

from runledger.ingest.catalog import Catalog, RunRef
from runledger.ingest.contract.events import LATE_EVENT, Envelope, Verdict
from runledger.ingest.errors import (InvalidParameterValue, LogUnavailable, LogUnreachable, OutcomeUnknown,
                                     ProjectionTimeout, ResourceDoesNotExist, RunledgerError, StorageFull)
from runledger.ingest.outcomes import VerdictBoard
from runledger.ingest.positions import note_written
from runledger.ingest.producer import EventLog
from runledger.ingest.contract import entities
from runledger.ingest.provenance import API_INTERNAL, current


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_event(type_: str, payload: dict[str, Any], *, user: str, run_id: str | None = None,
              experiment_id: str | None = None, event_id: str | None = None) -> Envelope:
    """An event stamped with the provenance of the request appending it (ingest.provenance).
    An authenticated principal is the actor, verified; otherwise `user` is the client's claim."""
    context = current()
    verified = context is not None and context.principal is not None
    return Envelope(event_id=event_id or uuid.uuid4().hex, type=type_, experiment_id=experiment_id,
                    run_id=run_id, ingest_time=now_ms(), user=context.principal if verified else user,  # type: ignore[union-attr]
                    payload=payload, actor_verified=verified, request_id=context.request_id if context else None,
                    api=context.api if context else API_INTERNAL)


# Asks the projector to fold everything the log holds now, within a time limit in seconds;
# False if that could not be established (the broker is away).
Settle = Callable[[float], Awaitable[bool]]


class Writer:
    """Appends events and reports their fate. An error answer is final (docs/design.md, invariant 14):

    every event gets a deadline (now + the send timeout) and the fold refuses a record the
    broker appended after it. Without an acknowledgement by the deadline (plus `clock_margin`
    seconds for the broker's clock running behind ours), the writer waits for the projector to
    fold the log as it stands: an event not found there can never take effect, so the answer is
    a 503 (retrying is safe); one found there is answered by its verdict; if the log cannot be
    read, the outcome is unknown and the answer says so (504, not a claim of failure).
    """

    def __init__(self, log: EventLog, board: VerdictBoard, catalog: Catalog, wait_timeout: float = 30.0,
                 settle: Settle | None = None, clock_margin: float = 1.0,
                 unwritable: Callable[[], str | None] | None = None,
                 ruled: Callable[[], Mapping[int, int]] | None = None) -> None:
        self.log = log
        self.board = board
        self.catalog = catalog
        self.wait_timeout = wait_timeout
        self.settle = settle
        self.clock_margin = clock_margin
        # Why writes must be refused before they reach the log (the data folder is full), or None.
        self.unwritable = unwritable
        # Per partition, the next offset the projector has ruled on (folded): where a write
        # confirmed from the log, without the producer's ack, is known to lie below.
        self.ruled = ruled

    async def commit(self, event: Envelope) -> Verdict:
        """Append `event`, wait until the projector has applied it; raise its rejection as a RunledgerError."""
        return (await self._commit([event]))[0]

    async def commit_many(self, events: list[Envelope]) -> list[Verdict]:
        """Append `events` together and wait for all verdicts; raise the first rejection."""
        if not events:
            return []
        return await self._commit(events)

    def _refuse_if_unwritable(self) -> None:
        """Refused before appending, so the 503 is certain: the read model cannot take more
        (its disk is full), and an appended write would only wait for a verdict that cannot come."""
        why = self.unwritable() if self.unwritable is not None else None
        if why is not None:
            raise StorageFull(why)

    async def _commit(self, events: list[Envelope]) -> list[Verdict]:
        self._refuse_if_unwritable()
        events = self._with_deadline(events)
        futures = [self.board.expect(e.event_id) for e in events]
        try:
            await self._append(events, futures)
            verdicts = await asyncio.wait_for(asyncio.gather(*(asyncio.shield(f) for f in futures)),
                                              self.wait_timeout)
        except asyncio.TimeoutError:
            what = f"Event {events[0].event_id} is" if len(events) == 1 else f"{len(events)} events are"
            raise ProjectionTimeout(
                f"{what} in the log, but the projector had not decided within {self.wait_timeout:.0f}s "
                "whether to apply it. This is not a failure: the write may well take effect. "
                "Check its outcome before retrying.") from None
        finally:
            for e, f in zip(events, futures):
                self.board.forget(e.event_id, f)
        for verdict in verdicts:
            if verdict.error_code == LATE_EVENT:
                raise LogUnavailable(f"The event log (Kafka) did not take the write in time: {verdict.message}")
            if not verdict.applied:
                code = verdict.error_code if verdict.error_code != "MALFORMED_EVENT" else "INTERNAL_ERROR"
                raise RunledgerError(verdict.message, code)
        return list(verdicts)

    async def append(self, events: list[Envelope]) -> list[tuple[int, int]]:
        """Append without waiting for the projector (the streaming path); (partition, offset) of
        each event acknowledged by Kafka, or [] when they were found in the log another way."""
        self._refuse_if_unwritable()
        events = self._with_deadline(events)
        futures = [self.board.expect(e.event_id) for e in events]
        try:
            positions = await self._append(events, futures)
        finally:
            for e, f in zip(events, futures):
                self.board.forget(e.event_id, f)
        late = (any(f.result().error_code == LATE_EVENT for f in futures) if positions is None else
                any(t is not None and t > e.deadline for e, (_, _, t) in zip(events, positions)))  # type: ignore[operator]
        if late:
            # The fold refuses a record appended after its deadline, so it must not count as accepted.
            raise LogUnavailable("The event log (Kafka) did not take the whole write in time; "
                                 "retrying with the same event id is safe.")
        return [(p, o) for p, o, _ in positions or []]

    def _with_deadline(self, events: list[Envelope]) -> list[Envelope]:
        deadline = now_ms() + int(self.log.send_timeout * 1000)
        return [replace(e, deadline=deadline) for e in events]

    async def _append(self, events: list[Envelope], futures: list[asyncio.Future[Verdict]]
                      ) -> list[tuple[int, int, int | None]] | None:
        """Kafka's positions (and append times) once it acknowledged `events` by their deadline; None when they
        were not acknowledged but the projector has ruled on every one (`futures` hold the
        verdicts). Raises LogUnavailable when none of them can ever take effect, OutcomeUnknown
        when that cannot be established."""
        give_up = events[0].deadline + self.clock_margin * 1000  # type: ignore[operator]
        handed_over = False
        while (left := (give_up - now_ms()) / 1000) > 0:
            try:
                stamped = await self.log.append_stamped(events, timeout=left)
                note_written((p, o) for p, o, _ in stamped)
                return stamped
            except LogUnreachable:
                pass
            except LogUnavailable:
                handed_over = True
            # The producer that failed is retired; another try (same event ids, so a copy that
            # did get through is applied once) with a fresh one, while time is left.
            await asyncio.sleep(min(0.5, max(left, 0)))
        if not handed_over:
            raise LogUnavailable("The event log (Kafka) could not be reached: the write was never sent, "
                                 "nothing was applied. Retrying is safe.")
        settled = await self.settle(self.wait_timeout) if self.settle is not None else False
        if all(f.done() for f in futures):
            self._note_ruled()
            return None
        if settled and not any(f.done() for f in futures):
            raise LogUnavailable(
                "The event log (Kafka) did not acknowledge the write in time, and the write is not in the "
                "log: nothing was applied, and it never will be. Retrying is safe.")
        raise OutcomeUnknown(
            "The event log (Kafka) did not acknowledge the write in time and cannot be read to tell whether "
            "it got there before its deadline. It may or may not take effect: check before retrying.")

    def _note_ruled(self) -> None:
        """The answer's log position when the events were confirmed from the log, not by an
        ack: no offsets of their own, but the projector has ruled on them, so they lie below
        what it has folded. A read passing that back waits for them (docs/replicas.md); at
        worst it waits for a few records more than it needed."""
        if self.ruled is not None:
            note_written((p, o - 1) for p, o in self.ruled().items() if o > 0)

    def writable_run(self, run_id: str) -> RunRef:
        """Fail early, with MLflow's error, for writes the projector would reject anyway."""
        run = self.catalog.run(run_id)
        if run is None:
            raise ResourceDoesNotExist(entities.run_not_found(run_id))
        for stage in (run.lifecycle_stage, run.experiment_lifecycle_stage):
            if stage != "active":
                raise InvalidParameterValue(entities.run_not_active(run_id, stage))
        return run
