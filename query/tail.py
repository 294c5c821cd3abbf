"""The live tail: a run's or an experiment's trail entries pushed as Server-Sent Events.

The projector's store calls `TailHub.committed` with each batch right after its DuckDB
transaction commits (Store.apply_listeners), so an entry is sent only once it is queryable.
Each stream keeps a cursor (partition -> last offset sent) and sends it as the SSE `id`: a
client that reconnects with `Last-Event-ID` gets what it missed from `event_log`, then the
live entries, none twice. A stream whose client reads too slowly is not allowed to hold memory
without bound: past `QUEUE_MAX` pending entries it drops them and catches up from `event_log`.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import orjson

from runledger.ingest.errors import InvalidParameterValue
from runledger.projector.fold import BatchChanges, LogEntry
from runledger.query.audit_trail import entry_of, format_position, parse_position

QUEUE_MAX = 10_000
CATCH_UP_PAGE = 10_000   # entries read from event_log per query while catching up


def parse_cursor(value: str) -> dict[int, int]:
    """A Last-Event-ID: comma-separated positions '<partition>:<offset>'."""
    cursor: dict[int, int] = {}
    for part in value.split(","):
        if part.strip():
            p, o = parse_position(part, "Last-Event-ID")
            cursor[p] = max(o, cursor.get(p, -1))
    return cursor


def format_cursor(cursor: dict[int, int]) -> str:
    return ",".join(format_position(p, o) for p, o in sorted(cursor.items()))


@dataclass(frozen=True, slots=True)
class Message:
    """A committed entry, serialised once for every stream that wants it."""

    partition: int
    offset: int
    data: bytes


@dataclass(eq=False)
class Subscription:
    run_id: str | None
    experiment_id: str | None
    pending: collections.deque[Message] = field(default_factory=collections.deque)
    overflowed: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, e: LogEntry) -> bool:
        if self.run_id is not None:
            return e.run_id == self.run_id
        return e.experiment_id == self.experiment_id


class TailHub:
    """Fans committed log entries out to the open tails. `committed` is called on the
    projector's commit thread; the rest runs on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.subscriptions: set[Subscription] = set()

    def committed(self, changes: BatchChanges) -> None:
        if self.subscriptions and changes.log:
            try:
                self.loop.call_soon_threadsafe(self._publish, list(changes.log))
            except RuntimeError:
                pass  # the loop is closed (shutting down): nobody is listening any more

    def _publish(self, entries: list[LogEntry]) -> None:
        serialised: dict[int, Message] = {}

        def message(i: int, e: LogEntry) -> Message:
            found = serialised.get(i)
            if found is None:
                found = serialised[i] = Message(e.partition, e.offset, orjson.dumps(entry_of(e)))
            return found

        for sub in self.subscriptions:
            mine = [message(i, e) for i, e in enumerate(entries) if sub.wants(e)]
            if not mine:
                continue
            if len(sub.pending) + len(mine) > QUEUE_MAX:
                sub.pending.clear()
                sub.overflowed = True
            else:
                sub.pending.extend(mine)
            sub.wake.set()

    def subscribe(self, run_id: str | None, experiment_id: str | None) -> Subscription:
        sub = Subscription(run_id, experiment_id)
        self.subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscriptions.discard(sub)


def sse_message(data: bytes, cursor: dict[int, int]) -> bytes:
    return b"id: " + format_cursor(cursor).encode() + b"\ndata: " + data + b"\n\n"


async def stream(hub: TailHub, read_after: Callable[[dict[int, int]], Any], *, run_id: str | None,
                 experiment_id: str | None, last_event_id: str | None, ping_seconds: float) -> AsyncIterator[bytes]:
    """The SSE body: the missed entries (with `last_event_id`), then live ones, with a
    comment line every `ping_seconds` of silence so proxies and clients keep the stream open.
    `read_after(cursor)` reads entries past a cursor from event_log (in a thread)."""
    if ping_seconds <= 0:
        raise InvalidParameterValue("ping must be positive")
    cursor = parse_cursor(last_event_id) if last_event_id else {}
    sub = hub.subscribe(run_id, experiment_id)
    try:
        yield b"retry: 1000\n\n"
        catch_up = last_event_id is not None
        while True:
            if catch_up or sub.overflowed:
                # Subscribed first, read second: whatever commits meanwhile is both read and
                # pending, and the cursor drops the second copy.
                sub.overflowed = False
                sub.pending.clear()
                while True:
                    missed = await asyncio.to_thread(read_after, dict(cursor))
                    for item in missed:
                        cursor[item["partition"]] = item["offset"]
                        yield sse_message(orjson.dumps(item), cursor)
                    if len(missed) < CATCH_UP_PAGE:
                        break
                catch_up = False
            # Whatever is pending goes out as one chunk (one socket write for a whole batch).
            chunk = []
            while sub.pending and not sub.overflowed:
                m = sub.pending.popleft()
                if m.offset <= cursor.get(m.partition, -1):
                    continue
                cursor[m.partition] = m.offset
                chunk.append(sse_message(m.data, cursor))
            if chunk:
                yield b"".join(chunk)
            if sub.overflowed:
                continue
            sub.wake.clear()
            if not sub.pending:
                try:
                    await asyncio.wait_for(sub.wake.wait(), ping_seconds)
                except asyncio.TimeoutError:
                    yield b": ping\n\n"
    finally:
        hub.unsubscribe(sub)
