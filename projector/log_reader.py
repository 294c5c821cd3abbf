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
        if not wanted:
            return []
        async with self._lock:
            if self._consumer is None:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=self._bootstrap_servers, group_id=None, enable_auto_commit=False,
                    auto_offset_reset="earliest", fetch_max_wait_ms=50,
                    max_partition_fetch_bytes=16 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
                await consumer.start()
                self._consumer = consumer
            consumer = self._consumer
            await self._read_partitions(consumer, {p: sorted(o) for p, o in by_partition.items()}, found)
        return [(p, o, *found[(p, o)]) for p, o in wanted]

    async def _read_partitions(self, consumer: AIOKafkaConsumer, wanted: dict[int, list[int]],
                               found: dict[tuple[int, int], tuple[bytes | None, int | None]]) -> None:
        """Every partition at once (one fetch round trip serves them all: an as-of read wants
        its run's partition and its experiment's)."""
        tps = {p: TopicPartition(self.topic, p) for p in wanted}
        consumer.assign(list(tps.values()))
        deadline = time.monotonic() + self.timeout
        next_i = {p: 0 for p in wanted}           # index of the next wanted offset
        position: dict[int, int] = {}
        for p, offsets in wanted.items():
            consumer.seek(tps[p], offsets[0])
            position[p] = offsets[0]
        open_tps = {p for p, offsets in wanted.items() if offsets}
        while open_tps:
            # Only as many records as the spans still wanted hold: unpacking records costs.
            span = sum(wanted[p][-1] - position[p] + 1 for p in open_tps)
            batch = await consumer.getmany(*(tps[p] for p in open_tps), timeout_ms=500,
                                           max_records=max(1, min(span, 5000)))
            if not batch and time.monotonic() > deadline:
                p = min(open_tps)
                raise LogUnavailable(f"partition {p} of {self.topic} did not return offset "
                                     f"{wanted[p][next_i[p]]} within {self.timeout:.0f}s")
            for tp, records in batch.items():
                p = tp.partition
                if p not in open_tps:
                    continue
                offsets, i = wanted[p], next_i[p]
                for msg in records:
                    if msg.offset < position[p]:
                        continue   # fetched before a seek
                    position[p] = msg.offset + 1
                    if offsets[i] < msg.offset:
                        # Not in the log any more: the topic lost records (retention or compaction,
                        # which ingest.topic refuses); an as-of read cannot be answered exactly.
                        raise LogUnavailable(f"offset {offsets[i]} of partition {p} is no longer in the log")
                    if offsets[i] == msg.offset:
                        # With the broker's append time, as the projector folds it (late-event check).
                        found[(p, msg.offset)] = (msg.value, append_time(msg))
                        i += 1
                        if i == len(offsets):
                            break
                next_i[p] = i
                if i == len(offsets):
                    open_tps.discard(p)
                    consumer.pause(tp)
                elif offsets[i] - position[p] > _SEEK_GAP:
                    # Far ahead: a seek costs a round trip, reading a few hundred records less.
                    consumer.seek(tp, offsets[i])
                    position[p] = offsets[i]
