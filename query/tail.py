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
import threading
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import orjson

from runledger.ingest.errors import InvalidParameterValue
from runledger.projector.fold import BatchChanges, LogEntry
from runledger.query.audit_trail import entry_of, format_position, parse_position

QUEUE_MAX = 10_000
# Batches committed within this many seconds of the last fan-out wait for the end of that
# window and go out together: a burst of small commits wakes each stream (and writes to its
# socket) once per window instead of once per commit. A commit after a quiet spell goes out at once.
# The cost of a fan-out is mostly one socket write per stream (the syscall, with the GIL held, is
# most of it), so under sustained writes this window bounds it: 50 streams cost at most 1,000
# writes a second. 50 ms (was 20) halved the hub's CPU per commit with 50 tails at 100 commits/s
# and stays well inside the tail's latency goal (p99 <= 100 ms, docs/audit.md).
COALESCE_S = 0.05
CATCH_UP_PAGE = 10_000   # entries read from event_log per query while catching up
CHUNK_BYTES = 256 * 1024  # at most this much (and one more message) per socket write


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


@dataclass(slots=True, eq=False)
class Message:
    """A committed entry, serialised once for every stream that wants it.

    A stream's SSE id is its whole cursor (every partition it has seen), so the frame
    `id: ...\ndata: ...` depends on the stream. Most streams have the same cursor, though:
    `after` maps the id a stream had before this entry to the id it has after it and the frame
    to send, so the frame is built once per distinct cursor and shared, not formatted again
    for each of 50 streams (that formatting was most of the per-stream cost per entry)."""

    partition: int
    offset: int
    data: bytes
    after: dict[bytes, tuple[bytes, bytes]] = field(default_factory=dict)

    def frame(self, cursor: dict[int, int], sse_id: bytes) -> tuple[bytes, bytes]:
        """(the new SSE id, the frame) for a stream whose `cursor` (already advanced past this
        entry) was formatted as `sse_id` before it."""
        known = self.after.get(sse_id)
        if known is None:
            new_id = format_cursor(cursor).encode()
            known = self.after[sse_id] = (new_id, b"id: " + new_id + b"\ndata: " + self.data + b"\n\n")
        return known


@dataclass(eq=False)
class Subscription:
    run_id: str | None
    experiment_id: str | None
    ping_seconds: float = 15.0
    pending: collections.deque[Message] = field(default_factory=collections.deque)
    overflowed: bool = False
    ping_due: bool = False
    # What the stream awaits when it has nothing to send: a plain future, set by the hub
    # (cheaper than an Event waited on with a timeout, which makes a task and a timer per wait).
    waiter: asyncio.Future[None] | None = None
    last_sent: float = 0.0                          # loop time of the last bytes sent
    after_batch: int = 0                            # TailHub's batch number when it subscribed
    _ping_timer: asyncio.TimerHandle | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class TailHub:
    """Fans committed log entries out to the open tails. `committed` is called on the
    projector's commit thread and only hands the batch to the event loop; there each entry is
    serialised once and queued for the streams that want it (found by run and experiment id,
    not by asking every stream), and each stream is woken once per batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.subscriptions: set[Subscription] = set()
        self._by_run: dict[str, set[Subscription]] = collections.defaultdict(set)
        self._by_experiment: dict[str, set[Subscription]] = collections.defaultdict(set)
        # Shared with the projector's thread, under `_lock`: batches committed and not yet fanned
        # out (numbered in commit order), and whether a fan-out is already on its way (queued on
        # the loop or timed).
        self._lock = threading.Lock()
        self._held: list[tuple[int, list[LogEntry]]] = []
        self._batches = 0
        self._due = False
        self._last_fan_out = -1.0

    def committed(self, changes: BatchChanges) -> None:
        if not (self.subscriptions and changes.log):
            return
        with self._lock:
            self._batches += 1
            self._held.append((self._batches, list(changes.log)))
            if self._due:
                # The fan-out already on its way takes these too: no wake-up of the event loop
                # per commit (under sustained writes, one per window instead of one per batch;
                # each wake-up has the loop's thread wait for the GIL the projector holds).
                return
            self._due = True
        try:
            self.loop.call_soon_threadsafe(self._arm)
        except RuntimeError:
            pass  # the loop is closed (shutting down): nobody is listening any more

    def _arm(self) -> None:
        wait = self._last_fan_out + COALESCE_S - self.loop.time()
        if wait <= 0:
            self._fan_out()
        else:
            self.loop.call_later(wait, self._fan_out)

    def _fan_out(self) -> None:
        self._last_fan_out = self.loop.time()
        with self._lock:
            held, self._held = self._held, []
            self._due = False
        self._publish(held)

    def _publish(self, batches: list[tuple[int, list[LogEntry]]]) -> None:
        by_run, by_experiment = self._by_run, self._by_experiment
        woken: dict[Subscription, list[Message]] = {}
        for number, entries in batches:
            for e in entries:
                subs = by_run.get(e.run_id) if e.run_id is not None else None
                exp_subs = by_experiment.get(e.experiment_id) if e.experiment_id is not None else None
                if not subs and not exp_subs:
                    continue
                message = Message(e.partition, e.offset, orjson.dumps(entry_of(e)))
                for group in (subs, exp_subs):
                    for sub in group or ():
                        if number <= sub.after_batch:
                            continue  # committed before the stream subscribed (held for the window)
                        mine = woken.get(sub)
                        if mine is None:
                            woken[sub] = [message]
                        else:
                            mine.append(message)
        for sub, mine in woken.items():
            if len(sub.pending) + len(mine) > QUEUE_MAX:
                sub.pending.clear()
                sub.overflowed = True
            else:
                sub.pending.extend(mine)
            sub.wake()

    def subscribe(self, run_id: str | None, experiment_id: str | None, ping_seconds: float = 15.0) -> Subscription:
        sub = Subscription(run_id, experiment_id, ping_seconds, last_sent=self.loop.time())
        with self._lock:
            # A stream starts with the first batch committed after it subscribed (what it missed
            # before comes from event_log with Last-Event-ID), not with batches still held.
            sub.after_batch = self._batches
        self.subscriptions.add(sub)
        if run_id is not None:
            self._by_run[run_id].add(sub)
        else:
            self._by_experiment[experiment_id or ""].add(sub)
        self._arm_ping(sub, ping_seconds)
        return sub

    def _arm_ping(self, sub: Subscription, delay: float) -> None:
        # One timer per stream, re-armed when it fires rather than at every message.
        sub._ping_timer = self.loop.call_later(delay, self._ping, sub)

    def _ping(self, sub: Subscription) -> None:
        if sub not in self.subscriptions:
            return
        idle = self.loop.time() - sub.last_sent
        if idle >= sub.ping_seconds:
            sub.ping_due = True
            sub.wake()
            self._arm_ping(sub, sub.ping_seconds)
        else:
            self._arm_ping(sub, sub.ping_seconds - idle)

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscriptions.discard(sub)
        for index, key in ((self._by_run, sub.run_id), (self._by_experiment, sub.experiment_id or "")):
            group = index.get(key) if key is not None else None
            if group is not None:
                group.discard(sub)
                if not group:
                    del index[key]
        if sub._ping_timer is not None:
            sub._ping_timer.cancel()


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
    sse_id = format_cursor(cursor).encode()      # the cursor as last sent (the key of Message.after)
    loop = hub.loop
    sub = hub.subscribe(run_id, experiment_id, ping_seconds)
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
                    sub.last_sent = loop.time()
                    if len(missed) < CATCH_UP_PAGE:
                        break
                catch_up = False
                sse_id = format_cursor(cursor).encode()
            # What is pending goes out as one chunk (one socket write for a whole batch), up to
            # CHUNK_BYTES: a client that stalls holds at most that much in the socket's buffer
            # (plus QUEUE_MAX shared entries pending), however long the backlog.
            chunk, size = [], 0
            while sub.pending and not sub.overflowed and size < CHUNK_BYTES:
                m = sub.pending.popleft()
                if m.offset <= cursor.get(m.partition, -1):
                    continue
                cursor[m.partition] = m.offset
                sse_id, frame = m.frame(cursor, sse_id)
                chunk.append(frame)
                size += len(frame)
            if chunk:
                sub.last_sent = loop.time()
                sub.ping_due = False
                yield b"".join(chunk)
            if sub.overflowed:
                continue
            if sub.ping_due:
                sub.ping_due = False
                sub.last_sent = loop.time()
                yield b": ping\n\n"
            if not sub.pending and not sub.overflowed:
                sub.waiter = loop.create_future()
                try:
                    await sub.waiter
                finally:
                    sub.waiter = None
    finally:
        hub.unsubscribe(sub)
