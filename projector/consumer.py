"""The projector loop: read the log from Kafka, fold it, apply it to DuckDB.

Each replica reads every partition of the topic (no consumer group: each folds the full log
into its own file, docs/design.md, invariant 6) and starts from the offsets stored in DuckDB.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import queue
import shutil
import threading
import time
from time import perf_counter
from typing import Any, Callable

import duckdb
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from runledger.ingest.contract.codec import MalformedEvent, decode
from runledger.ingest.contract.events import Verdict
from runledger.projector.fold import BatchChanges, FoldResult, FoldState, LogEntry, LogRecord, fold_batch
from runledger.projector.fold_cache import FoldCache, StateRequest
from runledger.projector.integrity import is_out_of_space
from runledger.projector.pending import COMMITTED, HotRun, PendingRuns, Uncommitted
from runledger.projector.store import ReadModelCorrupt, RowsRefused, Store
from runledger.projector import activity

log = logging.getLogger(__name__)

# Kafka's record timestamp types: 0 = CreateTime (set by the producer), 1 = LogAppendTime.
LOG_APPEND_TIME = 1

VerdictSink = Callable[[dict[str, Verdict]], None]
# (partition, offset, value[, broker append time]) as read from Kafka; without the fourth item
# (tools, older tests) the fold cannot tell late events (fold.py) and applies them.
RawRecord = tuple[Any, ...]


class Projector:
    """Folds `topic` into `store`, reporting each batch's verdicts to `on_verdicts`.

    `run()` returns only when `stop()` is called or on an infrastructure failure (Kafka or
    DuckDB); a bad event never stops it.
    """

    def __init__(self, store: Store, bootstrap_servers: str, topic: str,
                 on_verdicts: VerdictSink, max_records: int = 5000, fold_cache_runs: int = 5000) -> None:
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
            # What one fetch may bring (and the consumer prefetch while the last one folds): a
            # replay or catch-up held a whole 64 MB fetch of raw records, then their decoded
            # points, at once. A record larger than these still comes (the broker returns the
            # first batch of a partition whole). Issue 22, docs/memory.md.
            max_partition_fetch_bytes=_FETCH_PARTITION_BYTES,
            fetch_max_bytes=_FETCH_BYTES,
        )
        self._stopping = asyncio.Event()
        self.applied_offsets: dict[int, int] = {}
        # Next offset per partition whose verdict is out, from the stored offsets on (caught_up).
        self.folded_offsets: dict[int, int] = {}
        self.partitions: list[TopicPartition] = []
        # Its runs are also what a runs/search page renders without a DuckDB read
        # (query.read_service.folded_json): RUNLEDGER_FOLD_CACHE_RUNS, docs/search.md.
        self.cache = FoldCache(max_runs=fold_cache_runs)
        self._seq = 0            # batches folded (and their verdicts handed out)
        self._committed = 0      # batches committed to DuckDB
        self._queued_points = 0
        self._progress = asyncio.Event()
        self._committer: Committer | None = None
        self._failure: Exception | None = None
        self._folded_offsets: dict[int, int] = {}   # next offset per partition, of all folded so far
        self.commit_listeners: list[Callable[[], None]] = []   # called on the loop after each commit
        self.points_folded = 0   # metric points accepted so far (progress reports)
        self.slice_bytes = _SLICE_BYTES   # a large fetch is folded and committed in slices of this size
        # What folded-but-uncommitted batches changed, so a read of such a run can answer from
        # `cache` instead of waiting for the commit (projector.pending; query.read_service).
        self.pending = PendingRuns()
        self.commit_listeners.append(lambda: self.pending.committed(self._committed))
        # Per folded batch not committed yet: (seq, {partition: (offset, Kafka timestamp) of its
        # first record there}). GET /lag reads the oldest unapplied record's timestamp from here
        # instead of fetching it from Kafka (`unapplied_timestamp`).
        self._heads: collections.deque[tuple[int, dict[int, tuple[int, int]]]] = collections.deque()
        self._next_commit: asyncio.Future[None] | None = None   # next_commit()

    async def start(self, partitions: list[int]) -> None:
        """Assign every partition of the topic and seek each to the offset stored in DuckDB."""
        loop = asyncio.get_running_loop()
        # A reader that finds the file damaged wakes the loop, which then rebuilds (`_rebuild`).
        self.store.corruption_listeners.append(lambda: loop.call_soon_threadsafe(self._progress.set))
        await self._consumer.start()
        self.partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(self.partitions)
        stored = await asyncio.to_thread(self.store.offsets, self.topic)
        await asyncio.to_thread(self._prime_cache)
        self.applied_offsets = dict(stored)
        self.folded_offsets = dict(stored)
        for tp in self.partitions:
            if tp.partition in stored:
                self._consumer.seek(tp, stored[tp.partition])
            else:
                await self._consumer.seek_to_beginning(tp)
        log.info("projector assigned %s, resuming at %s", [tp.partition for tp in self.partitions], stored)

    def _prime_cache(self) -> None:
        """Every event id and run id so far into the cache's filters, and all experiments (few,
        and needed by every create-run check) into the cache."""
        for event_id in self.store.event_ids():
            self.cache.seen.add(event_id)
        for run_id in self.store.run_ids():
            self.cache.created_runs.add(run_id)
        request = StateRequest(experiments=True)
        self.cache.add_loaded(request, self.store.load(request))

    @property
    def _normal(self) -> bool:
        """No failed commit, no rebuild, no damage: the folded state may answer reads."""
        return self._failure is None and self._committer is not None and self.store.corruption is None

    def hot_run(self, run_id: str, rule: str) -> HotRun | str | None:
        """The run's folded state, if a batch whose verdicts are out changed it and that batch is
        not committed yet (so a reader would otherwise wait for the commit); `pending.COMMITTED`
        if DuckDB already has every change to it; None otherwise, and whenever the projector is
        not in its normal state (a failed commit, a rebuild)."""
        return self._between_release_and_commit(
            COMMITTED, lambda released, committed: self.pending.hot_run(run_id, self.cache, rule, released, committed))

    def folded_runs(self, run_ids: list[str], rule: str) -> dict[str, HotRun]:
        """The folded state of those of `run_ids` that the fold cache holds (projector.pending),
        each as DuckDB has it or newer; empty when the projector is not in its normal state."""
        if not self._normal:
            return {}
        with self.pending.lock:
            return self.pending.folded_runs(run_ids, self.cache, rule, self.store.visibility.committed)

    def uncommitted(self) -> Uncommitted | None:
        """What the batches whose verdicts are out but which are not committed yet changed;
        None when nothing is waiting for a commit, or it is not all known (then wait)."""
        return self._between_release_and_commit(None, self.pending.uncommitted)

    def _between_release_and_commit(self, when_all_committed: Any, read: Callable[[int, int], Any]) -> Any:
        """`read(released, committed)` under the pending lock while answered batches wait for their
        commit; `when_all_committed` when none does; None outside the normal state."""
        if not self._normal:
            return None
        visibility = self.store.visibility
        with self.pending.lock:
            committed, released = visibility.committed, visibility.released
            if committed >= released:
                return when_all_committed
            return read(released, committed)

    def next_commit(self) -> "asyncio.Future[None]":
        """Done when the next commit lands and `applied_offsets` moved on (on the loop, after
        the commit listeners): what a read waiting for a log position awaits rather than
        polling on a timer (runledger.log_position). Other moves of `applied_offsets` (a
        rebuild, isolating a refused event) do not resolve it: such a waiter polls too."""
        if self._next_commit is None or self._next_commit.done():
            self._next_commit = asyncio.get_running_loop().create_future()
        return self._next_commit

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

    def unapplied_timestamp(self, next_offsets: dict[int, int]) -> int | None:
        """The smallest Kafka timestamp among the records at `next_offsets` (partition -> the
        next offset to apply, as `lag` said), if the projector has folded every one of them and
        is waiting for their commit: then it read them already and knows. None otherwise (the
        caller asks Kafka): not fetched yet, or committed meanwhile (the offsets are stale)."""
        found: dict[int, int] = {}
        for _, heads in self._heads:
            for partition, (offset, stamp) in heads.items():
                if partition in next_offsets and partition not in found:
                    if offset != next_offsets[partition]:
                        return None
                    found[partition] = stamp
            if len(found) == len(next_offsets):
                break
        if not next_offsets or len(found) != len(next_offsets):
            return None
        return min(found.values())

    async def run(self) -> None:
        self._start_committer()
        try:
            while not self._stopping.is_set():
                try:
                    if self.store.corruption is not None:
                        raise ReadModelCorrupt(str(self.store.corruption))
                    try:
                        batch = await self._consumer.getmany(timeout_ms=200, max_records=self.max_records)
                    except KafkaError as e:
                        # The broker is away (restart, network): the consumer reconnects by itself;
                        # the projector must outlive the outage rather than end with it.
                        log.warning("projector fetch failed, retrying: %r", e)
                        await asyncio.sleep(0.5)
                        continue
                    if self._failure is not None:
                        raise self._failure
                    if batch:
                        await self._fold_and_submit(batch)
                except RowsRefused as e:
                    await self._isolate_refused(e)
                except ReadModelCorrupt:
                    await self._rebuild()
                except Exception as e:
                    if not is_out_of_space(e):
                        raise
                    await self._resume_when_space_returns(e)
            await self.drain()
        finally:
            self._stop_committer()

    async def _rebuild(self) -> None:
        """The file is damaged: move it aside, start an empty one and replay from offset 0.

        What was folded but not committed is dropped with the old file; the replay folds it
        again, to the same verdicts. Readers get 503 until the failed commit is cleared, then
        see the new file fill up, as after deleting the file."""
        self._stop_committer()
        self.applied_offsets, self._folded_offsets = {}, {}
        aside = await asyncio.to_thread(self.store.rebuild)
        self._failure = None  # set by the failed commit, if one found the damage
        self.cache.reset()
        self._queued_points = 0
        self._committed = self._seq
        self._heads.clear()
        self.store.visibility.commit(self._seq)
        for tp in self.partitions:
            await self._consumer.seek_to_beginning(tp)
        await asyncio.to_thread(self._prime_cache)
        self._start_committer()
        log.error("read model replaced by an empty one (the damaged file is %s): replaying %s from offset 0",
                  aside, self.topic)

    async def _resume_when_space_returns(self, failure: BaseException) -> None:
        """A commit failed because the data folder's disk is full. The file is intact (the
        commit landed whole or not at all) and the log holds every acknowledged write, so:
        wait for space, open the file again and fold on from the offsets it stored. Writes are
        refused meanwhile (Store.unwritable); what was folded but not committed is folded again,
        to the same verdicts (the fold is deterministic)."""
        self._stop_committer()
        self.store.out_of_space = failure
        log.error("the data folder is full; writes are refused until %d MiB are free: %s",
                  _MIN_FREE_BYTES >> 20, str(failure).splitlines()[0])
        folder = os.path.dirname(os.path.abspath(self.store.path))
        while not self._stopping.is_set():
            await asyncio.sleep(_SPACE_POLL_S)
            if shutil.disk_usage(folder).free < _MIN_FREE_BYTES:
                continue
            try:
                await asyncio.to_thread(self.store.reopen)
                break
            except duckdb.Error as e:
                if not is_out_of_space(e):
                    raise
        if self._stopping.is_set():
            return
        stored = await asyncio.to_thread(self.store.offsets, self.topic)
        self.applied_offsets, self.folded_offsets, self._folded_offsets = dict(stored), dict(stored), dict(stored)
        self._failure = None
        self.cache.reset()
        self._queued_points = 0
        self._committed = self._seq
        self._heads.clear()
        self.store.visibility.commit(self._seq)
        for tp in self.partitions:
            if tp.partition in stored:
                self._consumer.seek(tp, stored[tp.partition])
            else:
                await self._consumer.seek_to_beginning(tp)
        await asyncio.to_thread(self._prime_cache)
        self._start_committer()
        log.warning("space is back; folding on from %s", stored)

    async def _isolate_refused(self, refused: RowsRefused) -> None:
        """DuckDB refused a commit: find the events it refused and reject them, commit the rest.

        The fold checks every field, so this is the net under it (docs/design.md, invariant 7). What
        was folded since the last commit is folded again from the offsets in DuckDB, in groups
        halved until each refusal is one event (projector.consumer.apply_isolating), on a fresh
        cache (the old one absorbed the refused changes). Verdicts already handed out for those
        events are sent again; they differ only for a refused event, which only a record written
        around ingest can be, since ingest checks the same ranges.
        """
        log.warning("the read model refused a commit (%s): finding the event responsible", refused)
        self._stop_committer()
        self._failure = None
        target = dict(self._folded_offsets)
        stored = await asyncio.to_thread(self.store.offsets, self.topic)
        for tp in self.partitions:
            if tp.partition in stored:
                self._consumer.seek(tp, stored[tp.partition])
            else:
                await self._consumer.seek_to_beginning(tp)
        position = {tp.partition: stored.get(tp.partition, 0) for tp in self.partitions}
        while any(position.get(p, 0) < o for p, o in target.items()) and not self._stopping.is_set():
            batch = await self._consumer.getmany(timeout_ms=200, max_records=self.max_records)
            raw = [(tp.partition, msg.offset, msg.value, append_time(msg))
                   for tp in sorted(batch, key=lambda t: t.partition) for msg in batch[tp]]
            if not raw:
                continue
            verdicts = await asyncio.to_thread(apply_isolating, self.store, self.topic, raw)
            for partition, offset, *_ in raw:
                position[partition] = offset + 1
            self.applied_offsets.update(position)
            self.on_verdicts(verdicts)
        self._folded_offsets.update(position)
        self.cache.reset()
        await asyncio.to_thread(self._prime_cache)
        self._queued_points = 0
        self._committed = self._seq
        self._heads.clear()
        self.store.visibility.commit(self._seq)
        self._progress.set()
        self._start_committer()
        log.warning("resumed after isolating refused events, at %s", position)

    async def process(self, batch: dict[TopicPartition, list]) -> None:
        """Fold `batch` and return once it is committed to DuckDB (tests and tools)."""
        own = self._committer is None
        if own:
            self._start_committer()
        try:
            await self._fold_and_submit(batch)
            await self.drain()
        finally:
            if own:
                self._stop_committer()

    async def feed(self, batch: dict[TopicPartition, list]) -> None:
        """Fold `batch`, read by the caller rather than this projector's consumer (a replay),
        and queue its commit; `finish` waits for every commit."""
        if self._committer is None:
            self._start_committer()
        await self._fold_and_submit(batch)

    async def finish(self) -> None:
        try:
            await self.drain()
        finally:
            self._stop_committer()

    async def caught_up(self, timeout: float) -> bool:
        """Wait until every record the log held when called has been folded (its verdict
        handed out); False if the broker could not say where the log ends, or the fold did not
        get there, within `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            ends = await asyncio.wait_for(self._consumer.end_offsets(self.partitions), timeout)
        except (KafkaError, asyncio.TimeoutError) as e:
            log.info("cannot learn the log's end offsets: %r", e)
            return False
        while any(self.folded_offsets.get(tp.partition, 0) < ends[tp] for tp in self.partitions):
            if loop.time() >= deadline or self._failure is not None:
                return False
            await asyncio.sleep(0.02)
        return True

    async def drain(self) -> None:
        """Wait until every folded batch is committed (raises if a commit failed)."""
        if self._committer is not None and self._committed < self._seq:
            self._committer.hurry()
        await self._wait_until(lambda: self._committed >= self._seq)

    async def _wait_until(self, done: Callable[[], bool]) -> None:
        while not (done() or self._failure is not None or self.store.corruption is not None):
            self._progress.clear()
            await self._progress.wait()
        if self._failure is not None:
            raise self._failure
        if self.store.corruption is not None:
            raise ReadModelCorrupt(str(self.store.corruption))

    async def _fold_and_submit(self, batch: dict[TopicPartition, list]) -> None:
        """Fold a batch against the cached state, hand out its verdicts, and queue its commit.

        Folding runs ahead of committing: while one transaction is being written, the next
        batches are folded and queued, and are then written together in one transaction
        (fewer statements per event when writes are many and small). Verdicts go out before
        the commit because they are already final: the events are in the log and the fold is
        deterministic, so a crash before the commit replays to the same verdicts. Readers wait
        for the commit (Store.visibility), so nobody reads older state than they were told.
        """
        raw = [(tp.partition, msg.offset, msg.value, append_time(msg))
               for tp in sorted(batch, key=lambda t: t.partition) for msg in batch[tp]]
        stamps = {(tp.partition, msg.offset): msg.timestamp for tp, msgs in batch.items() for msg in msgs
                  if isinstance(getattr(msg, "timestamp", None), int)}
        for part in _slices(raw, self.slice_bytes):
            await self._fold_slice(part, stamps)

    async def _fold_slice(self, raw: list[RawRecord], stamps: dict[tuple[int, int], int] | None = None
                          ) -> FoldResult:
        next_offsets: dict[int, int] = {}
        heads: dict[int, tuple[int, int]] = {}
        for partition, offset, *_ in raw:
            next_offsets[partition] = offset + 1
            if partition not in heads and stamps is not None and (partition, offset) in stamps:
                heads[partition] = (offset, stamps[partition, offset])
        big = sum(len(r[2] or b"") for r in raw) > _INLINE_BYTES
        started = perf_counter()
        # Large batches (replay, streaming) decode and fold in a worker thread so HTTP stays
        # responsive; a small one is cheaper inline than a thread hop.
        records = await asyncio.to_thread(decode_records, raw) if big else decode_records(raw)
        request = self.cache.plan(records)
        loaded = FoldState()
        if request:
            await self.drain()  # a miss must not read rows a queued commit is about to change
            loaded = await asyncio.to_thread(self.store.load, request)
            with self.pending.lock:  # readers never see a run's entry half filled (projector.pending)
                self.cache.add_loaded(request, loaded)
        state = self.cache.state_for(records, loaded)
        result = await asyncio.to_thread(fold_batch, state, records) if big else fold_batch(state, records)
        with self.pending.lock:  # readers of `cache` see it whole batches at a time (projector.pending)
            self.cache.absorb(result)
            self._seq += 1
            self.pending.note(self._seq, result.changes)
            self._heads.append((self._seq, heads))
            self.store.visibility.release(self._seq)
        self._folded_offsets.update(next_offsets)
        self.on_verdicts(result.verdicts)
        self.folded_offsets.update(next_offsets)
        points = len(result.changes.metrics)
        self.points_folded += points
        self._queued_points += points
        assert self._committer is not None
        self._committer.submit(result.changes, next_offsets, self._seq, points)
        activity.event("fold", started, perf_counter())   # on the loop, its awaits included
        # Backpressure: folding may run ahead of DuckDB only by a bounded amount.
        await self._wait_until(lambda: self._queued_points <= _MAX_QUEUED_POINTS)
        return result

    def _start_committer(self) -> None:
        loop = asyncio.get_running_loop()
        self._committer = Committer(
            self.store, self.topic,
            on_committed=lambda *a: loop.call_soon_threadsafe(self._committed_batch, *a),
            on_failed=lambda e: loop.call_soon_threadsafe(self._failed, e))

    def _stop_committer(self) -> None:
        if self._committer is not None:
            self._committer.stop()
            self._committer = None

    def _committed_batch(self, seq: int, offsets: dict[int, int], points: int) -> None:
        started = perf_counter()
        self._committed = seq
        while self._heads and self._heads[0][0] <= seq:
            self._heads.popleft()
        self.store.out_of_space = None  # a commit landed: there is room again
        self.applied_offsets.update(offsets)
        self._queued_points -= points
        self._progress.set()
        for listener in self.commit_listeners:
            listener()
        if self._next_commit is not None and not self._next_commit.done():
            self._next_commit.set_result(None)
        activity.event("commit_listeners", started, perf_counter())

    def _failed(self, exc: BaseException) -> None:
        self._failure = exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
        self._progress.set()


class Committer:
    """Writes folded batches to DuckDB in order, on its own thread, merging whatever queued
    up while the previous transaction was being written into one transaction.

    A thread rather than a task on the event loop: a reader on the event loop thread may
    block waiting for a commit (Store.visibility), and the commit must not need that thread.
    """

    def __init__(self, store: Store, topic: str, on_committed: Callable[[int, dict[int, int], int], None],
                 on_failed: Callable[[BaseException], None]) -> None:
        self.store, self.topic = store, topic
        self._on_committed, self._on_failed = on_committed, on_failed
        self._queue: queue.SimpleQueue[tuple[BatchChanges, dict[int, int], int, int] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="projector-commits", daemon=True)
        self._thread.start()
        store.visibility.on_wait = self.hurry

    def submit(self, changes: BatchChanges, next_offsets: dict[int, int], seq: int, points: int) -> None:
        self._queue.put((changes, next_offsets, seq, points))

    def stop(self) -> None:
        """Commit what is queued, then end the thread."""
        if self.store.visibility.on_wait == self.hurry:
            self.store.visibility.on_wait = None
        self._queue.put(None)
        self._thread.join()

    def hurry(self) -> None:
        """Commit what is queued now rather than gather more (a reader or the fold waits for it)."""
        self._queue.put(_HURRY)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                return
            if item is _HURRY:
                continue
            items = [item]
            stopping = self._gather(items)
            changes, offsets = items[0][0], dict(items[0][1])
            for later in items[1:]:
                changes.merge(later[0])
                offsets.update(later[1])
            seq, points = items[-1][2], sum(i[3] for i in items)
            began, started, wal = perf_counter(), time.monotonic(), _wal_bytes(self.store.path)
            try:
                self.store.apply(changes, self.topic, offsets)
            except RowsRefused as e:
                # Not the end: the projector isolates the refused event and goes on, so readers
                # keep waiting rather than fail (Projector._isolate_refused).
                self._on_failed(e)
                return
            except BaseException as e:
                if is_out_of_space(e):
                    # Refuse writes at once, before the projector's loop has noticed.
                    self.store.out_of_space = e
                    log.error("commit to the read model failed: %s", str(e).splitlines()[0])
                else:
                    log.error("commit to the read model failed", exc_info=e)
                self.store.visibility.fail(e)
                self._on_failed(e)
                return
            self.store.visibility.commit(seq)
            self._on_committed(seq, offsets, points)
            activity.event("commit", began, perf_counter())
            # Let go of the batch now: held by these locals while the thread waits for the next
            # one, the last commit of a replay (up to _MAX_QUEUED_POINTS points of Arrow columns,
            # ~60 MB measured) stayed alive for as long as the server then idled (issue 22).
            item = items = changes = later = None  # type: ignore[assignment]
            took = time.monotonic() - started
            if took >= _SLOW_COMMIT_S:
                # Lag peaks are slow commits; say whether DuckDB checkpointed its WAL in this one
                # (it does so inside the commit that crosses RUNLEDGER_DUCKDB_CHECKPOINT_MB).
                after = _wal_bytes(self.store.path)
                rows_s, commit_s = self.store.last_apply_s
                log.info("slow commit: %d points, %.2fs (rows %.2fs, COMMIT %.2fs)%s", points, took, rows_s, commit_s,
                         f" (DuckDB checkpointed: WAL {wal >> 10} KiB -> {after >> 10} KiB)" if after < wal else "")


    def _gather(self, items: list[Any]) -> bool:
        """Add to `items` whatever else is queued; True if told to stop.

        Streamed points are gathered into commits of at least one DuckDB row group
        (GROUP_COMMIT_POINTS): a commit that large is written straight to the file's blocks,
        compressed once, while a smaller one goes through the WAL and is compressed again when
        the WAL is checkpointed (about 0.22 against 0.64 s of CPU per million points measured,
        docs/streaming.md). So once a commit holds streaming volume (STREAM_COMMIT_POINTS) but
        less than a row group, the committer waits up to GROUP_COMMIT_WAIT_S for more. A reader
        waiting for visibility, or the fold needing the file, ends the wait at once (`hurry`),
        so read-your-writes and synchronous writes never wait for the gathering; small commits
        never wait at all."""
        started: float | None = None
        while True:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                points = sum(i[3] for i in items)
                if not STREAM_COMMIT_POINTS <= points < GROUP_COMMIT_POINTS:
                    return False
                now = time.monotonic()
                started = now if started is None else started
                # A commit just short of a row group (streamed requests come in fixed sizes:
                # six of 20,000 points are 120,000) would go through the WAL and feed the next
                # checkpoint, which stalls every commit behind it for far longer than the few
                # milliseconds the next request takes to arrive; so it may wait a little longer.
                wait = GROUP_COMMIT_WAIT_S if points < GROUP_COMMIT_NEAR_POINTS else \
                    max(GROUP_COMMIT_WAIT_S, GROUP_COMMIT_NEAR_WAIT_S)
                deadline = started + wait
                if now >= deadline:
                    return False
                try:
                    nxt = self._queue.get(timeout=deadline - now)
                except queue.Empty:
                    return False
            if nxt is None:
                return True
            if nxt is _HURRY:
                # Take what else is already queued, then commit.
                while True:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        return False
                    if more is None:
                        return True
                    if more is not _HURRY:
                        items.append(more)
            items.append(nxt)


# A commit taking this long (wall time) is logged, with whether DuckDB checkpointed in it.
_SLOW_COMMIT_S = 0.5


def _wal_bytes(path: str) -> int:
    try:
        return os.path.getsize(path + ".wal")
    except OSError:
        return 0


# After a commit failed for lack of space, the folder is checked this often and the file is
# opened again once this much is free.
_SPACE_POLL_S = 1.0
_MIN_FREE_BYTES = 16 << 20

# Group commits of streamed points (Committer._gather): a DuckDB row group is 122,880 rows.
GROUP_COMMIT_POINTS = 122_880
STREAM_COMMIT_POINTS = 10_000
GROUP_COMMIT_WAIT_S = 0.15
# A commit holding at least this many points may wait up to GROUP_COMMIT_NEAR_WAIT_S for the rest
# of its row group.
GROUP_COMMIT_NEAR_POINTS = GROUP_COMMIT_POINTS * 3 // 4
GROUP_COMMIT_NEAR_WAIT_S = 0.35
_HURRY = object()

# Metric points folded but not yet committed, at most (about 50 MB of Arrow columns; was 2M,
# ~100 MB, the largest part of a replay's peak besides DuckDB: issue 22). A million points is
# still eight DuckDB row groups of work queued ahead of the committer.
_MAX_QUEUED_POINTS = 1_000_000
# Kafka fetch sizes (see the consumer): was 16 MiB per partition and 64 MiB per fetch.
_FETCH_PARTITION_BYTES = 4 * 1024 * 1024
_FETCH_BYTES = 16 * 1024 * 1024

# Batches smaller than this (encoded bytes) are decoded and folded on the event loop.
_INLINE_BYTES = 256 * 1024
# A large fetch (catching up, replay) is folded in slices of about this many bytes, so that
# committing one slice overlaps with folding the next instead of waiting for the whole fetch.
_SLICE_BYTES = 8 * 1024 * 1024


def _slices(raw: list[RawRecord], max_bytes: int) -> list[list[RawRecord]]:
    """Cut `raw` into consecutive runs of about `max_bytes` (each partition keeps its order)."""
    out: list[list[RawRecord]] = [[]]
    size = 0
    for record in raw:
        n = len(record[2] or b"")
        if out[-1] and size + n > max_bytes:
            out.append([])
            size = 0
        out[-1].append(record)
        size += n
    return out


def append_time(msg: ConsumerRecord) -> int | None:
    """The record's broker-stamped append time (Unix ms), or None when the topic keeps the
    producer's create time instead: only a broker stamp can say when a record reached the log."""
    return msg.timestamp if msg.timestamp_type == LOG_APPEND_TIME else None


def decode_records(raw: list[RawRecord]) -> list[LogRecord]:
    """Decode log records; one that cannot be decoded becomes a record carrying the reason."""
    records = []
    for partition, offset, value, *rest in raw:
        appended = rest[0] if rest else None
        try:
            records.append(LogRecord(partition, offset, decode(value), append_time=appended))
        except MalformedEvent as e:
            records.append(LogRecord(partition, offset, None, str(e), appended))
    return records


def fold_and_apply(store: Store, topic: str, raw: list[RawRecord], next_offsets: dict[int, int]) -> FoldResult:
    """One batch: decode, load its state, fold, and apply it with the offsets in one transaction
    (if DuckDB refuses it, event by event as `apply_isolating` does)."""
    records = decode_records(raw)
    result = fold_batch(store.load_state(records), records)
    try:
        store.apply(result.changes, topic, next_offsets)
    except RowsRefused:
        result.verdicts.clear()
        result.verdicts.update(apply_isolating(store, topic, raw))  # commits the offsets part by part
    return result


def apply_isolating(store: Store, topic: str, raw: list[RawRecord]) -> dict[str, Verdict]:
    """Fold and commit `raw` (in log order) in groups halved until DuckDB accepts each; an
    event it refuses even alone is recorded as a MALFORMED_EVENT rejection saying why.

    The verdicts equal those of folding the records one at a time, each committed before the
    next, which depends only on the log: a replay isolates the same events the same way.
    """
    verdicts: dict[str, Verdict] = {}

    def attempt(part: list[RawRecord]) -> None:
        records = decode_records(part)
        result = fold_batch(store.load_state(records), records)
        try:
            store.apply(result.changes, topic, _next_offsets(part))
            verdicts.update(result.verdicts)
            return
        except RowsRefused as e:
            if len(part) > 1:
                attempt(part[:len(part) // 2])
                attempt(part[len(part) // 2:])
                return
            refused = e
        record = records[0]
        log.warning("the read model refused the event at partition %s offset %s: %s",
                    record.partition, record.offset, refused)
        verdict = Verdict("MALFORMED_EVENT", f"the read model cannot store this event: {refused}")
        _reject_unstorable(store, topic, record, verdict, _next_offsets(part))
        if record.event is not None:
            verdicts[record.event.event_id] = verdict

    attempt(raw)
    return verdicts


def _reject_unstorable(store: Store, topic: str, record: LogRecord, verdict: Verdict,
                       next_offsets: dict[int, int]) -> None:
    """Log the refused event as a rejection, keeping only fields DuckDB cannot refuse (its id,
    type and position, as an undecodable record has) if the full entry is refused too."""
    ev = record.event
    fallback = LogEntry(record.partition, record.offset, f"undecodable:{record.partition}:{record.offset}", "?",
                        None, None, None, "", verdict.error_code, verdict.message, None)
    entries = [fallback] if ev is None else [
        LogEntry(record.partition, record.offset, ev.event_id, ev.type, ev.experiment_id, ev.run_id,
                 ev.ingest_time, ev.user, verdict.error_code, verdict.message, None), fallback]
    for entry in entries:
        changes = BatchChanges()
        changes.log.append(entry)
        try:
            store.apply(changes, topic, next_offsets)
            return
        except RowsRefused:
            continue
    raise RuntimeError(f"the read model refused even the rejection of partition {record.partition} "
                       f"offset {record.offset}")


def _next_offsets(raw: list[RawRecord]) -> dict[int, int]:
    out: dict[int, int] = {}
    for partition, offset, *_ in raw:
        out[partition] = offset + 1
    return out
