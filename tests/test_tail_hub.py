"""The live tail's fan-out (runledger.query.tail) in one process: streams fed by a real DuckDB
read model (projector.store.Store, whose commits call the hub as the server's projector does),
read as the SSE bytes they yield. The HTTP side is in tests/test_tail.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, AsyncIterator

import orjson
import pytest

from runledger.projector.fold import BatchChanges, LogEntry
from runledger.projector.store import Store
from runledger.query import audit_trail, tail

RUN = "run-1"
EXPERIMENT = "exp-1"


def _entry(partition: int, offset: int, ingest_time: int) -> LogEntry:
    return LogEntry(partition, offset, f"ev-{partition}-{offset}", "TagsSet", EXPERIMENT, RUN, ingest_time,
                    "alice", None, "", {"keys": ["k"]})


class _Log:
    """A real read model the hub hears from, with the trail reader a resumed stream uses."""

    def __init__(self, path: Path, hub: tail.TailHub) -> None:
        self.store = Store(path)
        self.store.apply_listeners.append(hub.committed)
        self.next: dict[int, int] = {}
        self.time = 1_000

    async def commit(self, *positions: tuple[int, int]) -> None:
        """One batch of entries at `positions`, applied on another thread (as the projector's)."""
        changes = BatchChanges()
        for p, o in positions:
            self.time += 1
            changes.log.append(_entry(p, o, self.time))
            self.next[p] = max(self.next.get(p, 0), o + 1)
        await asyncio.to_thread(self.store.apply, changes, "topic", dict(self.next))

    def read_after(self, cursor: dict[int, int], experiment: bool = False) -> list[dict[str, Any]]:
        with self.store.cursor() as cur:
            return audit_trail.entries_after(cur, cursor, run_id=None if experiment else RUN,
                                             experiment_id=EXPERIMENT if experiment else None,
                                             limit=tail.CATCH_UP_PAGE)


class _Reader:
    """The SSE messages one stream yields, as (id, entry position) pairs."""

    def __init__(self, body: AsyncIterator[bytes]) -> None:
        self.body = body
        self.buffer = b""
        self.chunks: list[bytes] = []

    async def subscribed(self) -> None:
        assert await self.body.__anext__() == b"retry: 1000\n\n"

    async def messages(self, n: int) -> list[tuple[str, str]]:
        got: list[tuple[str, str]] = []
        while len(got) < n:
            while b"\n\n" not in self.buffer:
                chunk = await asyncio.wait_for(self.body.__anext__(), 10)
                self.chunks.append(chunk)
                self.buffer += chunk
            frame, self.buffer = self.buffer.split(b"\n\n", 1)
            fields = dict(line.split(b": ", 1) for line in frame.split(b"\n"))
            if b"data" in fields:
                got.append((fields[b"id"].decode(), orjson.loads(fields[b"data"])["position"]))
        return got


def _stream(hub: tail.TailHub, log: _Log, last_event_id: str | None = None) -> _Reader:
    return _Reader(tail.stream(hub, log.read_after, run_id=RUN, experiment_id=None, last_event_id=last_event_id,
                               ping_seconds=60))


def _experiment_stream(hub: tail.TailHub, log: _Log, last_event_id: str | None = None) -> _Reader:
    """An experiment's tail: its runs' events come from several partitions."""
    return _Reader(tail.stream(hub, lambda cursor: log.read_after(cursor, experiment=True), run_id=None,
                               experiment_id=EXPERIMENT, last_event_id=last_event_id, ping_seconds=60))


def test_each_stream_gets_the_id_of_its_own_cursor(tmp_path: Path) -> None:
    async def main() -> None:
        hub = tail.TailHub(asyncio.get_running_loop())
        log = _Log(tmp_path / "rm.duckdb", hub)
        fresh, resumed = _experiment_stream(hub, log), _experiment_stream(hub, log, last_event_id="1:3")
        await fresh.subscribed()
        (fresh_sub,) = hub.subscriptions
        await resumed.subscribed()
        (resumed_sub,) = hub.subscriptions - {fresh_sub}
        # Both streams wait for live entries (the resumed one found nothing to catch up on).
        reading = asyncio.create_task(resumed.messages(3))
        while resumed_sub.waiter is None:
            await asyncio.sleep(0.01)
        await log.commit((0, 10), (1, 4), (0, 11))
        assert await fresh.messages(3) == [("0:10", "0:10"), ("0:10,1:4", "1:4"), ("0:11,1:4", "0:11")]
        assert await reading == [("0:10,1:3", "0:10"), ("0:10,1:4", "1:4"), ("0:11,1:4", "0:11")]
        log.store.close()
    asyncio.run(main())


def test_a_stream_starts_with_what_is_committed_after_it_subscribed(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # A long window: the second batch is still held (not yet sent) when the late stream subscribes.
    monkeypatch.setattr(tail, "COALESCE_S", 1.0)

    async def main() -> None:
        hub = tail.TailHub(asyncio.get_running_loop())
        log = _Log(tmp_path / "rm.duckdb", hub)
        early = _stream(hub, log)
        await early.subscribed()
        await log.commit((0, 1))
        assert await early.messages(1) == [("0:1", "0:1")]
        await log.commit((0, 2))
        late = _stream(hub, log)
        await late.subscribed()
        await log.commit((0, 3))
        assert await early.messages(2) == [("0:2", "0:2"), ("0:3", "0:3")]
        assert await late.messages(1) == [("0:3", "0:3")]
        log.store.close()
    asyncio.run(main())


def test_a_stream_that_stops_reading_keeps_a_bounded_backlog_then_catches_up_from_the_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail, "QUEUE_MAX", 5)

    async def main() -> None:
        hub = tail.TailHub(asyncio.get_running_loop())
        log = _Log(tmp_path / "rm.duckdb", hub)
        stalled, reading = _stream(hub, log), _stream(hub, log)
        await stalled.subscribed()
        (sub_stalled,) = hub.subscriptions
        await reading.subscribed()
        for offset in range(1, 9):
            await log.commit((0, offset))
            # The other stream is served meanwhile; the stalled one holds at most QUEUE_MAX entries.
            assert await reading.messages(1) == [(f"0:{offset}", f"0:{offset}")]
            assert len(sub_stalled.pending) <= tail.QUEUE_MAX
        assert sub_stalled.overflowed
        # When it reads again, it gets everything from the log, in order, once.
        assert await stalled.messages(8) == [(f"0:{o}", f"0:{o}") for o in range(1, 9)]
        await log.commit((0, 9))
        assert await stalled.messages(1) == [("0:9", "0:9")]   # the next one is new: none came twice
        log.store.close()
    asyncio.run(main())


def test_a_long_backlog_goes_out_in_bounded_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail, "CHUNK_BYTES", 1000)

    async def main() -> None:
        hub = tail.TailHub(asyncio.get_running_loop())
        log = _Log(tmp_path / "rm.duckdb", hub)
        reader = _stream(hub, log)
        await reader.subscribed()
        await log.commit(*[(0, o) for o in range(1, 21)])
        assert [p for _, p in await reader.messages(20)] == [f"0:{o}" for o in range(1, 21)]
        frame = max(len(f) + 2 for f in b"".join(reader.chunks).split(b"\n\n"))
        assert len(reader.chunks) > 1
        assert all(len(c) < 1000 + frame for c in reader.chunks)
        log.store.close()
    asyncio.run(main())
