"""Reading chosen records back from the log: the raw material of as-of reads, diffs and replay
(docs/design.md, invariant 10: the past is folded again from the log, never kept on the side).

A `LogReader` has its own consumer with no group: it assigns one partition at a time and seeks,
so it never moves the projector's position or any consumer group's offsets.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from runledger.projector.consumer import RawRecord, append_time

# Wanted offsets closer than this are reached by reading on rather than by a seek (a seek
# costs a fetch round trip; reading a few hundred small records costs less).
_SEEK_GAP = 256


class LogUnavailable(RuntimeError):
    """The log did not hand over the records asked for in time."""


class LogReader:
    def __init__(self, bootstrap_servers: str, topic: str, timeout: float = 30.0) -> None:
        self.topic = topic
        self.timeout = timeout
        self._bootstrap_servers = bootstrap_servers
        # Made on the first read: a consumer made but never started and so never stopped is
        # reported as "Unclosed AIOKafkaConsumer" when the server shuts down.
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def read(self, positions: Iterable[tuple[int, int]]) -> list[RawRecord]:
        """The records at `positions` ((partition, offset) pairs), in the order given."""
        wanted = list(positions)
        by_partition: dict[int, set[int]] = defaultdict(set)
        for partition, offset in wanted:
            by_partition[partition].add(offset)
        found: dict[tuple[int, int], tuple[bytes | None, int | None]] = {}
        async with self._lock:
            if self._consumer is None:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=self._bootstrap_servers, group_id=None, enable_auto_commit=False,
                    auto_offset_reset="earliest", fetch_max_wait_ms=50,
                    max_partition_fetch_bytes=16 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
                await consumer.start()
                self._consumer = consumer
            consumer = self._consumer
            for partition, offsets in sorted(by_partition.items()):
                await self._read_partition(consumer, partition, sorted(offsets), found)
        return [(p, o, *found[(p, o)]) for p, o in wanted]

    async def _read_partition(self, consumer: AIOKafkaConsumer, partition: int, offsets: list[int],
                              found: dict[tuple[int, int], tuple[bytes | None, int | None]]) -> None:
        tp = TopicPartition(self.topic, partition)
        consumer.assign([tp])
        deadline = time.monotonic() + self.timeout
        i, position = 0, None
        while i < len(offsets):
            if position is None or offsets[i] < position or offsets[i] - position > _SEEK_GAP:
                consumer.seek(tp, offsets[i])
                position = offsets[i]
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=2000)
            records = batch.get(tp, [])
            if not records and time.monotonic() > deadline:
                raise LogUnavailable(f"partition {partition} of {self.topic} did not return offset {offsets[i]} "
                                     f"within {self.timeout:.0f}s")
            for msg in records:
                position = msg.offset + 1
                while i < len(offsets) and offsets[i] < msg.offset:
                    # Not in the log any more: the topic lost records (retention or compaction,
                    # which ingest.topic refuses); an as-of read cannot be answered exactly.
                    raise LogUnavailable(f"offset {offsets[i]} of partition {partition} is no longer in the log")
                if i < len(offsets) and offsets[i] == msg.offset:
                    # With the broker's append time, as the projector folds it (late-event check).
                    found[(partition, msg.offset)] = (msg.value, append_time(msg))
                    i += 1
                if i == len(offsets):
                    break
