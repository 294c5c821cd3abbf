"""GET /api/runledger/v1/lag's `oldest_unapplied_age_ms` is the age of the oldest unapplied
record at the moment the applied offsets were read, whatever the endpoint then takes to
fetch that record's timestamp from Kafka (the fetch's latency is not the read model's lag)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request

from runledger.dialects.native import ops


class _Reader:
    """One partition, ten records behind."""

    async def lag(self) -> dict[int, tuple[int, int]]:
        return {0: (10, 0)}


def _request() -> Request:
    app = SimpleNamespace(state=SimpleNamespace(
        settings=SimpleNamespace(bootstrap_servers="unused:9092", topic="t"),
        services=SimpleNamespace(reader=_Reader())))
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
