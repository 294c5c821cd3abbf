"""Rebuilding a read model from the log into a new file, and proving the live one equal to it.

`replay` reads the topic with its own consumer (no group: nothing of a running server moves)
and feeds the records to a `Projector` over a new `Store`, so the rebuilt file is made by
exactly the code that made the live one (docs/design.md, invariants 1 and 10). `checksums` sums
every table's rows in an order-independent way, so two files can be compared table by table.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import duckdb
from aiokafka import AIOKafkaConsumer, TopicPartition

from runledger.ingest.contract.codec import peek_ingest_time
from runledger.ingest.topic import partitions_of
from runledger.projector.consumer import Projector
from runledger.projector.store import Store


@dataclass
class Progress:
    records: int = 0
    points: int = 0
    total: int = 0                     # records the replay will read, at most
    seconds: float = 0.0
    position: dict[int, int] = field(default_factory=dict)   # partition -> next offset
    connect: float = 0.0               # seconds to reach the broker and learn the offsets (not in `seconds`)
    waited: float = 0.0                # of `connect`: then waiting for a callable `store` or `ends`
    last_commit: float = 0.0           # of `seconds`: waiting for the last commits once all was folded

    @property
    def fraction(self) -> float:
        return 1.0 if not self.total else min(1.0, self.records / self.total)

    def line(self) -> str:
        rate = self.records / self.seconds if self.seconds else 0.0
        points_rate = self.points / self.seconds if self.seconds else 0.0
        left = (self.total - self.records) / rate if rate else float("nan")
        where = ",".join(f"{p}:{o}" for p, o in sorted(self.position.items()))
        eta = f"{left:.0f}s" if left == left else "?"
        return (f"{self.fraction:6.1%}  events {self.records:,} ({rate:,.0f}/s)  points {self.points:,} "
                f"({points_rate:,.0f}/s)  position {where}  ETA {eta}")


REPLAY_SLICE_BYTES = 2 * 1024 * 1024


class TopicMissing(RuntimeError):
    pass


async def replay(bootstrap_servers: str, topic: str, store: Store | Callable[[], Store], *,
                 ends: dict[int, int] | Callable[[], dict[int, int]] | None = None, until_time: int | None = None,
                 on_progress: Callable[[Progress], None] | None = None, every: float = 0.5) -> Progress:
    """Fold `topic` into `store` (a new file) up to `ends` (partition -> exclusive end offset;
    default: the end of each partition when the replay starts) and, with `until_time`, only up
    to each partition's first event ingested after it.

    `store` and `ends` may be callables that return them (they block, e.g. while another thread
    creates the file or asks the live server where it is): they are called on worker threads
    while this connects to the broker, so those waits overlap rather than add up."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=16 * 1024 * 1024,
                                fetch_max_bytes=64 * 1024 * 1024)
    connecting = time.monotonic()
    ready = asyncio.ensure_future(asyncio.to_thread(store) if callable(store) else _ready(store))
    projector: Projector | None = None
    try:
        await consumer.start()
        partitions = await partitions_of(consumer, topic)
        if not partitions:
            raise TopicMissing(f"topic {topic!r} does not exist on {bootstrap_servers}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        begins = await consumer.beginning_offsets(tps)
        log_ends = await consumer.end_offsets(tps)
        waiting = time.monotonic()
        if callable(ends):
            ends = await asyncio.to_thread(ends)
        stop = {tp: log_ends[tp] if ends is None else min(log_ends[tp], ends.get(tp.partition, 0)) for tp in tps}
        progress = Progress(total=sum(max(0, stop[tp] - begins[tp]) for tp in tps))
        projector = Projector(await ready, bootstrap_servers, topic, on_verdicts=lambda verdicts: None)
        progress.waited = time.monotonic() - waiting
        # What a server's projector loads on start (Projector.start), from the new file: nothing
        # yet, but known to be nothing. Unprimed, the first experiment event made the fold wait
        # for every queued commit and read the experiments back from DuckDB (a stall of one whole
        # commit, ~0.2-0.5 s of a 1M-point verify, while one core sat idle).
        await asyncio.to_thread(projector._prime_cache)  # noqa: SLF001 - same package; start() is for its own consumer
        # Smaller slices than a server's catch-up: the fold (Python) of one slice overlaps the
        # DuckDB commit of the one before, and with 8 MiB slices a 1M-point log made only three,
        # so DuckDB idled while the first was folded and the fold idled during the last commit
        # (~20% of a replay's wall time under load, same CPU). 2 MiB of columnar points is about
        # one DuckDB row group, the smallest commit that is written straight to the file's blocks.
        projector.slice_bytes = REPLAY_SLICE_BYTES
        started = last_report = time.monotonic()
        progress.connect = started - connecting
        open_tps = {tp for tp in tps if begins[tp] < stop[tp]}
        consumer.pause(*(set(tps) - open_tps))
        while open_tps:
            fetched = await consumer.getmany(*open_tps, timeout_ms=500, max_records=20_000)
            batch: dict[TopicPartition, list[Any]] = {}
            for tp, msgs in fetched.items():
                keep = []
                for msg in msgs:
                    if msg.offset >= stop[tp] or (until_time is not None and (
                            (t := peek_ingest_time(msg.value)) is not None and t > until_time)):
                        open_tps.discard(tp)
                        consumer.pause(tp)
                        break
                    keep.append(msg)
                if keep:
                    batch[tp] = keep
                    progress.position[tp.partition] = keep[-1].offset + 1
                    progress.records += len(keep)
                    if keep[-1].offset + 1 >= stop[tp]:
                        open_tps.discard(tp)
                        consumer.pause(tp)
            if batch:
                await projector.feed(batch)
            now = time.monotonic()
            if on_progress is not None and now - last_report >= every:
                progress.points, progress.seconds = projector.points_folded, now - started
                on_progress(progress)
                last_report = now
        folded = time.monotonic()
        await projector.finish()
        ended = time.monotonic()
        progress.points, progress.seconds, progress.last_commit = projector.points_folded, ended - started, ended - folded
        if until_time is None:
            progress.total = progress.records
        return progress
    finally:
        await consumer.stop()
        if projector is not None:
            await projector.close()  # its own consumer never started: nothing of the log was read by it
        elif not ready.done():
            ready.cancel()


async def _ready(store: Store) -> Store:
    return store


def table_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_type = 'BASE TABLE' "
        "ORDER BY table_name").fetchall()]


def checksums(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, int]]:
    """Per table: (rows, the sum of the rows' hashes). Equal multisets of rows give equal sums
    whatever their order; DuckDB hashes NaN and NULL consistently."""
    names = table_names(con)
    if not names:
        return {}
    # One statement for every table: one round of planning and scheduling rather than one per
    # table (most tables of a replay's file are small or empty, so that overhead was the bulk).
    query = " UNION ALL ".join(f"SELECT {i}, count(*), coalesce(sum(hash(t)::HUGEINT), 0) FROM \"{name}\" t"
                               for i, name in enumerate(names))
    return {names[i]: (int(rows), int(total)) for i, rows, total in con.execute(query).fetchall()}


def offsets(con: duckdb.DuckDBPyConnection, topic: str) -> dict[int, int]:
    return {p: o for p, o in con.execute(
        'SELECT "partition", next_offset FROM consumer_offsets WHERE topic = ?', [topic]).fetchall()}


def snapshot(con: duckdb.DuckDBPyConnection, topic: str) -> dict[str, Any]:
    """The read model's checksums and the log offsets it reflects, from one consistent snapshot."""
    con.execute("BEGIN TRANSACTION")
    try:
        return {"topic": topic, "offsets": offsets(con, topic),
                "tables": {k: {"rows": r, "checksum": str(c)} for k, (r, c) in checksums(con).items()}}
    finally:
        con.execute("ROLLBACK")


def compare(live: dict[str, Any], rebuilt: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(table, live, rebuilt, equal) for every table either side has."""
    report = []
    for name in sorted(set(live["tables"]) | set(rebuilt["tables"])):
        a, b = live["tables"].get(name), rebuilt["tables"].get(name)
        show = lambda t: "missing" if t is None else f"{t['rows']:,} rows, sum {t['checksum']}"  # noqa: E731
        report.append((name, show(a), show(b), a == b))
    return report
