"""GET /api/runledger/v1/lag's `oldest_unapplied_age_ms` is the age of the oldest unapplied
record at the moment the applied offsets were read, whatever the endpoint then takes to
fetch that record's timestamp from Kafka (the fetch's latency is not the read model's lag)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from starlette.requests import Request

from runledger.dialects.native import ops
from runledger.ingest.contract.codec import encode
from runledger.projector.consumer import Projector
from runledger.projector.store import Store
from tests.test_fold import create_experiment


class _Reader:
    """One partition, ten records behind; the projector has not read the oldest of them yet
    unless `folded_ms` says its timestamp."""

    def __init__(self, folded_ms: int | None = None) -> None:
        self.folded_ms = folded_ms

    async def lag(self) -> dict[int, tuple[int, int]]:
        return {0: (10, 0)}

    def unapplied_timestamp(self, next_offsets: dict[int, int]) -> int | None:
        assert next_offsets == {0: 0}
        return self.folded_ms


def _request(reader: _Reader | None = None) -> Request:
    app = SimpleNamespace(state=SimpleNamespace(
        settings=SimpleNamespace(bootstrap_servers="unused:9092", topic="t"),
        services=SimpleNamespace(reader=reader or _Reader())))
    return Request({"type": "http", "method": "GET", "path": "/lag", "headers": [], "query_string": b"", "app": app})


def test_the_age_does_not_include_the_time_taken_to_fetch_the_oldest_timestamp(monkeypatch: pytest.MonkeyPatch
                                                                                ) -> None:
    appended_ms = time.time_ns() // 1_000_000 - 200   # the oldest unapplied record: 200 ms old

    async def slow_fetch(bootstrap: str, topic: str, next_offsets: dict[int, int]) -> int:
        await asyncio.sleep(1.0)   # a busy broker
        return appended_ms

    monkeypatch.setattr(ops, "_oldest_timestamp", slow_fetch)
    body: dict[str, Any] = asyncio.run(ops.lag(_request()))
    assert body["total_lag"] == 10
    assert 200 <= body["oldest_unapplied_age_ms"] < 1000


def test_the_age_comes_from_the_projector_without_a_fetch_when_it_has_folded_the_oldest_record(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_fetch(bootstrap: str, topic: str, next_offsets: dict[int, int]) -> int:
        raise AssertionError("fetched from Kafka although the projector knew the timestamp")

    monkeypatch.setattr(ops, "_oldest_timestamp", no_fetch)
    folded_ms = time.time_ns() // 1_000_000 - 300
    body: dict[str, Any] = asyncio.run(ops.lag(_request(_Reader(folded_ms))))
    assert 300 <= body["oldest_unapplied_age_ms"] < 1000


# ----- Projector.unapplied_timestamp, on a real projector and DuckDB file (commits held at a gate)

def _projector_with_held_commits(tmp_path: Path) -> tuple[Projector, threading.Event]:
    gate = threading.Event()

    class HeldStore(Store):
        def apply(self, *args: Any, **kw: Any) -> None:
            assert gate.wait(30)
            super().apply(*args, **kw)

    return Projector(HeldStore(tmp_path / "rl.duckdb"), "127.0.0.1:1", "t", lambda verdicts: None), gate


def _records(first_offset: int, stamps: list[int]) -> list[SimpleNamespace]:
    return [SimpleNamespace(offset=first_offset + i, value=encode(create_experiment(f"e{first_offset + i}")),
                            timestamp=stamp, timestamp_type=0) for i, stamp in enumerate(stamps)]


def test_the_projector_knows_the_timestamp_of_the_first_record_it_folded_but_has_not_committed(
        tmp_path: Path) -> None:
    async def scenario() -> tuple[int | None, int | None, int | None, int | None]:
        projector, gate = _projector_with_held_commits(tmp_path)
        await projector.feed({TopicPartition("t", 0): _records(0, [1_000, 1_001])})
        await projector.feed({TopicPartition("t", 0): _records(2, [1_005])})
        first = projector.unapplied_timestamp({0: 0})
        stale = projector.unapplied_timestamp({0: 1})        # not where a batch begins: ask Kafka
        unread = projector.unapplied_timestamp({0: 0, 1: 0})  # partition 1 not read yet: ask Kafka
        gate.set()
        await projector.finish()
        after = projector.unapplied_timestamp({0: 3})
        projector.store.close()
        return first, stale, unread, after

    first, stale, unread, after = asyncio.run(scenario())
    assert first == 1_000
    assert (stale, unread, after) == (None, None, None)
