"""Direct access to a test topic, for tests that act on the log itself (real Kafka)."""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

import duckdb
from aiokafka import AIOKafkaConsumer, TopicPartition

from runledger.ingest.contract.events import Envelope
from runledger.ingest.producer import EventLog
from runledger.ingest.topic import ensure_topic
from runledger.projector.consumer import append_time, decode_records, fold_and_apply
from runledger.projector.fold import BatchChanges, FoldState, fold_batch
from runledger.projector.fold_cache import FoldCache
from runledger.projector.store import Store


def read_topic(bootstrap: str, topic: str, with_time: bool = False) -> dict[int, list[tuple[Any, ...]]]:
    """Every record of every partition, as {partition: [(offset, value), ...]}; with `with_time`,
    (offset, value, broker append time or None), the form the projector folds."""

    async def read() -> dict[int, list[tuple[Any, ...]]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    max_partition_fetch_bytes=16 * 1024 * 1024)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in await ensure_topic(bootstrap, topic, 1)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            out: dict[int, list[tuple[Any, ...]]] = {tp.partition: [] for tp in tps}
            while any((out[tp.partition][-1][0] + 1 if out[tp.partition] else 0) < ends[tp] for tp in tps):
                batch = await consumer.getmany(timeout_ms=1000)
                for tp, msgs in batch.items():
                    out[tp.partition].extend((m.offset, m.value, append_time(m)) if with_time else (m.offset, m.value)
                                             for m in msgs)
            return out
        finally:
            await consumer.stop()

    return asyncio.run(read())


def append_events(bootstrap: str, topic: str, events: list[Envelope]) -> None:
    async def send() -> None:
        log = EventLog(bootstrap, topic)
        await log.start()
        try:
            for i in range(0, len(events), 500):
                await log.append(events[i:i + 500])
        finally:
            await log.stop()

    asyncio.run(send())


def dump_tables(path: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every read-model table, rows sorted, for equality checks between two DuckDB files."""
    con = duckdb.connect(path, read_only=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1").fetchall()]
        out = {}
        for t in tables:
            rows = [tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in row)
                    for row in con.execute(f'SELECT * FROM "{t}"').fetchall()]  # NaN != NaN in Python
            out[t] = sorted(rows, key=repr)
        return out
    finally:
        con.close()


def interleaved_batches(log: dict[int, list[tuple[int, bytes]]], rng: random.Random,
                        max_batch: int) -> list[list[tuple[int, int, bytes]]]:
    """Merge the partitions in a random order that keeps each partition's own order, then cut
    the result into random-sized batches of (partition, offset, value)."""
    queues = {p: [(p, *rec) for rec in recs] for p, recs in log.items()}
    merged = []
    while any(queues.values()):
        p = rng.choice([p for p, q in queues.items() if q])
        merged.append(queues[p].pop(0))
    batches, i = [], 0
    while i < len(merged):
        n = rng.randint(1, max_batch)
        batches.append(merged[i:i + n])
        i += n
    return batches


def fold_into(path: str, topic: str, batches: list[list[tuple[int, int, bytes]]]) -> None:
    """Fold raw log records into a fresh DuckDB file, one transaction per given batch, through
    the projector's own batch step."""
    store = Store(path)
    try:
        for batch in batches:
            next_offsets: dict[int, int] = {}
            for partition, offset, *_ in batch:
                next_offsets[partition] = offset + 1
            fold_and_apply(store, topic, batch, next_offsets)
    finally:
        store.close()


def fold_into_cached(path: str, topic: str, batches: list[list[tuple[int, int, bytes]]],
                     rng: random.Random, max_runs: int = 3) -> None:
    """Like `fold_into`, but the way the running projector folds: state from a FoldCache (small,
    so entries get evicted and reloaded), verdicts before commits, and commits queued and
    merged in random groups (BatchChanges.merge), a load waiting for queued commits first."""
    store = Store(path)
    cache = FoldCache(max_runs=max_runs)
    queued: list[tuple[BatchChanges, dict[int, int]]] = []

    def commit_queued() -> None:
        if not queued:
            return
        changes, offsets = queued[0][0], dict(queued[0][1])
        for later, later_offsets in queued[1:]:
            changes.merge(later)
            offsets.update(later_offsets)
        store.apply(changes, topic, offsets)
        queued.clear()

    try:
        for batch in batches:
            next_offsets: dict[int, int] = {}
            for partition, offset, *_ in batch:
                next_offsets[partition] = offset + 1
            records = decode_records(batch)
            request = cache.plan(records)
            loaded = FoldState()
            if request:
                commit_queued()
                loaded = store.load(request)
                cache.add_loaded(request, loaded)
            result = fold_batch(cache.state_for(records, loaded), records)
            cache.absorb(result)
            queued.append((result.changes, next_offsets))
            if rng.random() < 0.4:
                commit_queued()
        commit_queued()
    finally:
        store.close()


def without_offsets(tables: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in tables.items() if k != "consumer_offsets"}
