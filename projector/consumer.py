"""The projector loop: read the log from Kafka, fold it, apply it to DuckDB.

Each replica reads every partition of the topic (no consumer group: each folds the full log
into its own file, DESIGN.md invariant 6) and starts from the offsets stored in DuckDB.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from ingest.codec import MalformedEvent, decode
from ingest.events import Verdict
from projector.fold import FoldResult, LogRecord, fold_batch
from projector.store import Store

log = logging.getLogger(__name__)

VerdictSink = Callable[[dict[str, Verdict]], None]
RawRecord = tuple[int, int, "bytes | None"]  # (partition, offset, value) as read from Kafka


class Projector:
    """Folds `topic` into `store`, reporting each batch's verdicts to `on_verdicts`.

    `run()` returns only when `stop()` is called or on an infrastructure failure (Kafka or
    DuckDB); a bad event never stops it.
    """

    def __init__(self, store: Store, bootstrap_servers: str, topic: str,
                 on_verdicts: VerdictSink, max_records: int = 5000) -> None:
        self.store = store
        self.topic = topic
        self.on_verdicts = on_verdicts
        self.max_records = max_records
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Synchronous MLflow calls wait for the projector, so a fetch must come back as soon
            # as one record is there rather than after a long poll.
            fetch_max_wait_ms=25,
            max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        self._stopping = asyncio.Event()
        self.applied_offsets: dict[int, int] = {}
        self.partitions: list[TopicPartition] = []

    async def start(self, partitions: list[int]) -> None:
        """Assign every partition of the topic and seek each to the offset stored in DuckDB."""
        await self._consumer.start()
        self.partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(self.partitions)
        stored = await asyncio.to_thread(self.store.offsets, self.topic)
        self.applied_offsets = dict(stored)
        for tp in self.partitions:
            if tp.partition in stored:
                self._consumer.seek(tp, stored[tp.partition])
            else:
                await self._consumer.seek_to_beginning(tp)
        log.info("projector assigned %s, resuming at %s", [tp.partition for tp in self.partitions], stored)

    async def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        await self._consumer.stop()

    async def lag(self) -> dict[int, tuple[int, int]]:
        """Per partition: (log end offset, next offset to apply). The applied offsets are read
        first, so an append racing with this call can only make the lag look larger, never
        negative. A partition with nothing applied yet counts from its first offset."""
        applied = dict(self.applied_offsets)
        fresh = [tp for tp in self.partitions if tp.partition not in applied]
        if fresh:
            for tp, offset in (await self._consumer.beginning_offsets(fresh)).items():
                applied[tp.partition] = offset
        ends = await self._consumer.end_offsets(self.partitions)
        return {tp.partition: (ends[tp], applied[tp.partition]) for tp in self.partitions}

    async def run(self) -> None:
        while not self._stopping.is_set():
            batch = await self._consumer.getmany(timeout_ms=200, max_records=self.max_records)
            if not batch:
                continue
            await self.process(batch)

    async def process(self, batch: dict[TopicPartition, list]) -> FoldResult:
        raw = [(tp.partition, msg.offset, msg.value) for tp in sorted(batch, key=lambda t: t.partition)
               for msg in batch[tp]]
        next_offsets: dict[int, int] = {}
        for partition, offset, _ in raw:
            next_offsets[partition] = offset + 1
        # Decoding runs in the worker thread too, so large batches don't stall HTTP handling.
        result = await asyncio.to_thread(fold_and_apply, self.store, self.topic, raw, next_offsets)
        self.applied_offsets.update(next_offsets)
        self.on_verdicts(result.verdicts)
        return result


def decode_records(raw: list[RawRecord]) -> list[LogRecord]:
    """Decode log records; one that cannot be decoded becomes a record carrying the reason."""
    records = []
    for partition, offset, value in raw:
        try:
            records.append(LogRecord(partition, offset, decode(value)))
        except MalformedEvent as e:
            records.append(LogRecord(partition, offset, None, str(e)))
    return records


def fold_and_apply(store: Store, topic: str, raw: list[RawRecord], next_offsets: dict[int, int]) -> FoldResult:
    """One batch: decode, load its state, fold, and apply it with the offsets in one transaction."""
    records = decode_records(raw)
    result = fold_batch(store.load_state(records), records)
    store.apply(result.changes, topic, next_offsets)
    return result
