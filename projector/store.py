"""DuckDB adapter for the projector: load the state a batch needs, apply a batch atomically.

`apply` writes the batch's rows, the event log, the rejections and the consumer offsets in
ONE transaction, so a crash at any instant leaves either all of a batch or none of it, and
the offsets say exactly where to resume (docs/design.md, invariant 3).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import duckdb
import orjson
import pyarrow as pa

from runledger.ingest.contract.events import Verdict
from runledger.ingest.errors import TemporarilyUnavailable
from runledger.projector.fold import ArtifactOp, BatchChanges, FoldState, LogRecord, MetricRows, Rewind
from runledger.projector.fold_cache import StateRequest
from runledger.projector.integrity import is_corruption, is_out_of_space, move_aside, open_verified
from runledger.projector.rows import ExperimentRow, LatestPoint, LoggedModelRow, RunRow
from runledger.projector.schema import LATEST_COLUMNS, SCHEMA_VERSION, create_schema, stored_version

log = logging.getLogger(__name__)


class ReadModelUnavailable(TemporarilyUnavailable):
    """Writes that were acknowledged are not in DuckDB yet and cannot be waited for."""


# The first words of every answer given while the data folder's disk is full.
OUT_OF_SPACE = "The server's data folder is full (no space left on device)"


class ReadModelCorrupt(RuntimeError):
    """The DuckDB file is damaged; the projector moves it aside and rebuilds it from the log."""


class ReadModelDamaged(TemporarilyUnavailable):
    """A read found the file damaged; it is being rebuilt from the log (retry shortly)."""


class RowsRefused(Exception):
    """DuckDB refused a batch's values (out of a column's range, an encoding it cannot hold):
    the batch's data is at fault, not the database, and the transaction was rolled back. The
    projector then finds the event responsible and rejects it (projector.consumer)."""


# What DuckDB (or building its input) raises for a value it cannot store. Key violations stay
# out: the fold never emits a duplicate key, so one is a bug that must fail loudly.
_VALUE_ERRORS = (duckdb.DataError, duckdb.InvalidInputException, pa.ArrowInvalid, pa.ArrowTypeError, OverflowError)


class Visibility:
    """Read-your-writes across the projector's pipeline.

    The projector hands out a batch's verdicts as soon as the batch is folded and commits it
    to DuckDB right after (projector.consumer). A reader that starts after a verdict was given
    out waits until that batch is committed, so a client never reads older state than what it
    was told; readers that start when nothing is pending do not wait at all.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.released = 0    # batches whose verdicts were handed out
        self.committed = 0   # batches committed to DuckDB
        self.failure: BaseException | None = None
        # Called when a reader starts waiting: the committer then commits at once instead of
        # gathering more points into the commit (projector.consumer.Committer).
        self.on_wait: Callable[[], None] | None = None

    def release(self, seq: int) -> None:
        self.released = seq

    def commit(self, seq: int) -> None:
        with self._cond:
            self.committed = seq
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self._cond:
            self.failure = exc
            self._cond.notify_all()

    def wait(self, timeout: float) -> None:
        target = self.released
        if self.committed >= target:
            return
        hurry = self.on_wait
        if hurry is not None:
            hurry()
        with self._cond:
            if not self._cond.wait_for(lambda: self.committed >= target or self.failure is not None, timeout):
                raise ReadModelUnavailable(f"acknowledged writes were not committed to the read model within {timeout:.0f}s")
            if self.committed < target and self.failure is not None and is_out_of_space(self.failure):
                raise ReadModelUnavailable(f"{OUT_OF_SPACE}: acknowledged writes are in the log but cannot be "
                                           "committed to the read model until space is freed")
            if self.committed < target:
                raise ReadModelUnavailable("the projector stopped before committing acknowledged writes; see the server log")


# DuckDB's max_vacuum_tasks for the read model (Store._prepare says why not DuckDB's 100).
DEFAULT_VACUUM_TASKS = 0


class Store:
    """Owns the process's only read-write DuckDB connection (docs/design.md, invariant 6).

    Readers get their own cursors via `cursor()`; the projector's writes go through one
    cursor guarded by a lock so that `load_state`/`apply` never interleave.
    """

    def __init__(self, path: Path | str, threads: int | None = None, memory_limit: str | None = None,
                 allocator_flush_mb: int = 16, checkpoint_mb: int | None = None,
                 vacuum_tasks: int | None = DEFAULT_VACUUM_TASKS) -> None:
        self.path = str(path)
        self.con = open_verified(self.path)
        version = stored_version(self.con)
        if version is not None and version != SCHEMA_VERSION:
            # The read model is disposable: a file from another schema version is rebuilt
            # by replaying the log from offset 0 (the offsets go with the file).
            log.warning("read model %s has schema version %s, this build uses %s: rebuilding from the log",
                        self.path, version, SCHEMA_VERSION)
            self.con.close()
            for suffix in ("", ".wal"):
                Path(self.path + suffix).unlink(missing_ok=True)
            self.con = duckdb.connect(self.path)
        self._threads = threads
        self._memory_limit = memory_limit
        self._allocator_flush_mb = allocator_flush_mb
        self._checkpoint_mb = checkpoint_mb
        self._vacuum_tasks = vacuum_tasks
        self._prepare()
        self._lock = threading.Lock()
        self.visibility = Visibility()
        # Set when a query finds the file damaged (`report_if_corrupt`); the projector then
        # calls `rebuild`. `corruption_listeners` are told at once, from the thread that found it.
        self.corruption: BaseException | None = None
        self.corruption_listeners: list[Callable[[], None]] = []
        # Set when a commit failed for lack of disk space, cleared by the next commit that
        # lands; meanwhile writes are refused before they reach the log (Writer.unwritable).
        self.out_of_space: BaseException | None = None
        # Called with each batch right after its transaction commits, before `apply` returns
        # (so before readers waiting on `visibility` for this batch's writes go on): caches of
        # read results drop what the batch changed here.
        self.apply_listeners: list[Callable[[BatchChanges], None]] = []
        # Commits of `apply` begun and ended, and the consumer offsets the committed state holds
        # (per topic; learnt from `offsets`, then kept by `apply`). A reader that sees no commit
        # begin between reading these and taking its snapshot knows the snapshot's offsets
        # without a query (query.sql.engine: a SQL answer's log position).
        self._commits_begun = 0
        self._commits_done = 0
        self._known_offsets: dict[str, dict[int, int]] = {}
        # Seconds the last `apply` spent writing its rows, and in COMMIT (a checkpoint happens there).
        self.last_apply_s = (0.0, 0.0)

    def _prepare(self) -> None:
        create_schema(self.con)
        if self._threads is not None:
            self.con.execute(f"SET threads = {int(self._threads)}")
        if self._memory_limit is not None:
            # Unset, DuckDB takes 80% of RAM for its buffers and keeps what a big sort grew to.
            self.con.execute("SET memory_limit = ?", [self._memory_limit])
        # DuckDB's own allocator (jemalloc on Linux) returns freed pages to the OS only from its
        # background threads: without them a sorted read of 8.8M points left RSS 380 MB up for
        # good; with them it fell back within ~10 s (bench/memory_probe.py, docs/memory.md).
        self.con.execute("SET allocator_background_threads = true")
        # After a task whose allocations peaked above this, DuckDB flushes its allocator's
        # caches to the OS (default 128 MiB: an ingest batch or a history read each left up to
        # that much behind). RUNLEDGER_DUCKDB_ALLOCATOR_FLUSH_MB, docs/memory.md.
        self.con.execute("SET allocator_flush_threshold = ?", [f"{int(self._allocator_flush_mb)}MiB"])
        if self._checkpoint_mb is not None:
            # Rows committed since the last checkpoint live in memory uncompressed (and in the
            # WAL) until the WAL reaches this size; then they become compressed blocks. The
            # bigger it is, the higher RSS saws between checkpoints. RUNLEDGER_DUCKDB_CHECKPOINT_MB.
            self.con.execute("SET checkpoint_threshold = ?", [f"{int(self._checkpoint_mb)}MiB"])
        if self._vacuum_tasks is not None:
            # A streamed commit of 140,000 points is written as one full row group and one of
            # 17,120 rows; at the next checkpoint DuckDB's vacuum merges such short row groups
            # with their neighbours, rewriting them: ~1 s of CPU per 30 such commits, inside the
            # commit that checkpoints, which every later commit waits for (the streaming lag
            # peaks). With no vacuum tasks a checkpoint writes only what changed. Vacuum would
            # reclaim little here: metrics are appended, deleted only by a rewind.
            # RUNLEDGER_DUCKDB_VACUUM_TASKS; docs/streaming.md, "Checkpoints".
            self.con.execute(f"SET max_vacuum_tasks = {int(self._vacuum_tasks)}")
        self._writer = self.con.cursor()

    def report_if_corrupt(self, exc: BaseException) -> bool:
        """Whether `exc` says the file is damaged; if so, the first report starts a rebuild."""
        if not is_corruption(exc):
            return False
        if self.corruption is None:
            self.corruption = exc
            log.error("read model %s is damaged: %s", self.path, str(exc).splitlines()[0])
            for listener in self.corruption_listeners:
                listener()
        return True

    def rebuild(self) -> Path:
        """Close the damaged file, move it aside and start an empty one (no offsets: the
        projector replays the log from offset 0). Returns where the old file went."""
        with self._lock:
            for closable in (self._writer, self.con):
                with contextlib.suppress(duckdb.Error):
                    closable.close()
            aside = move_aside(self.path, self.corruption or ReadModelCorrupt("damaged"))
            self.con = duckdb.connect(self.path)
            self._prepare()
            self._forget_offsets()
            self.corruption = None
            self.visibility.failure = None
        return aside

    def reopen(self) -> None:
        """Close the connection and open the same file again, after a commit failed for lack
        of space: DuckDB may refuse further use of a connection whose commit failed, and
        opening the file again replays its WAL up to the last commit that landed whole."""
        with self._lock:
            for closable in (self._writer, self.con):
                with contextlib.suppress(duckdb.Error):
                    closable.close()
            self.con = duckdb.connect(self.path)
            self._prepare()
            self._forget_offsets()
            self.visibility.failure = None

    def unwritable(self) -> str | None:
        """Why writes must be refused now (the disk is full), or None."""
        if self.out_of_space is None:
            return None
        return (f"{OUT_OF_SPACE}: the write was refused before it was sent, nothing was written. "
                "Retrying is safe once space is freed.")

    def release_buffers(self, low: str | tuple[str, ...] = ("8MiB", "32MiB")) -> bool:
        """Drop DuckDB's cached blocks (its buffer pool keeps what it read or wrote up to the
        memory limit and evicts only under pressure): walk its eviction queues once
        (`purge_eviction_queues`), then lower the limit to `low` for a moment, which evicts
        unpinned blocks and has DuckDB hand its allocators' free pages back, then put it back.
        Called by the idle trim (runledger.query.memory.IdleTrim) when nothing runs. Several
        values are tried in turn, lowest first: rows not yet checkpointed (up to
        RUNLEDGER_DUCKDB_CHECKPOINT_MB) stay in memory, and a limit below them is refused; at
        32 MiB an idle server kept ~16 MB of cached blocks besides them (issue 22). False, and
        nothing changed, if the projector holds the writer's lock or DuckDB fits in none of
        `low` (blocks in use)."""
        lows = (low,) if isinstance(low, str) else low
        if not self._lock.acquire(blocking=False):
            return False
        try:
            with self.con.cursor() as cur:
                self._checkpoint_small_wal(cur)
                limit = self._walk_eviction_queues(cur)
                for value in lows:
                    try:
                        cur.execute("SET memory_limit = ?", [value])
                    except duckdb.Error:   # more than `value` is pinned: a query holds it, or unflushed rows
                        continue
                    cur.execute("SET memory_limit = ?", [limit])
                    return True
                return False
        finally:
            self._lock.release()

    def set_memory_limit(self, value: str) -> bool:
        """Set DuckDB's memory limit to `value` (the SQL engine raises it while SQL queries run
        and puts it back here). Under the writer's lock, so that it never interleaves with
        `release_buffers`, which lowers the limit for a moment and then restores what it read.
        False, and nothing changed, if the projector holds the writer's lock (a commit: the
        caller tries again later rather than wait), DuckDB refused it (more than `value` is in
        use) or the instance is closed."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            with self.con.cursor() as cur:
                cur.execute("SET memory_limit = ?", [value])
            return True
        except duckdb.Error:
            return False
        finally:
            self._lock.release()

    def purge_eviction_queues(self) -> bool:
        """Walk DuckDB's eviction queues once, dropping the entries of blocks that no longer
        exist and unloading every cached block nothing has pinned; the memory limit stays as it
        is. False, and nothing done, if the projector holds the writer's lock.

        Why (docs/memory.md, "The soak"): each block a query unpins gets an entry in one of
        DuckDB's eight eviction queues, and the entry keeps the block's bookkeeping (~200 bytes,
        plus the queue's own storage) allocated after the block is gone, until the entry is
        dequeued. A queue drops dead entries only once it holds ~32,768 of them, or when
        eviction walks it; under a steady read load (the hash tables of grouped reads and SQL)
        that grew glibc's heap by 2-3 MB a minute for half an hour before leveling off. DuckDB
        offers no call for it, but a `SET memory_limit` below what is in use walks every queue
        before DuckDB refuses it (`_walk_eviction_queues`). Cached blocks are copies of the
        file: the next read takes them from the page cache."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            with self.con.cursor() as cur:
                self._checkpoint_small_wal(cur)
                self._walk_eviction_queues(cur)
            return True
        finally:
            self._lock.release()

    # Between two purges, a WAL past this size is left to DuckDB's own threshold: a writer that
    # fills it this fast reaches RUNLEDGER_DUCKDB_CHECKPOINT_MB soon anyway, and an extra
    # checkpoint would only add to its commits' stalls (docs/memory.md).
    HOUSEKEEPING_CHECKPOINT_MAX_BYTES = 4 << 20

    def checkpoint_small_wal(self) -> bool:
        """`_checkpoint_small_wal` on its own, for the housekeeping between two purges, when the
        WAL holds at most HOUSEKEEPING_CHECKPOINT_MAX_BYTES (it may run on any thread: readers'
        open transactions do not stop a checkpoint, and the writer's lock keeps commits out).
        False, and nothing done, if the projector holds the lock or the WAL holds too little
        or too much."""
        if _wal_size(self.path) > self.HOUSEKEEPING_CHECKPOINT_MAX_BYTES:
            return False
        if not self._lock.acquire(blocking=False):
            return False
        try:
            with self.con.cursor() as cur:
                return self._checkpoint_small_wal(cur)
        finally:
            self._lock.release()

    # Below this much WAL a checkpoint would free too little to be worth its fixed cost.
    HOUSEKEEPING_CHECKPOINT_MIN_BYTES = 256 * 1024

    def _checkpoint_small_wal(self, cur: duckdb.DuckDBPyConnection) -> bool:
        """Checkpoint now if the WAL holds more than a little. Rows committed since the last
        checkpoint sit in memory uncompressed (DuckDB's IN_MEMORY_TABLE) until the WAL reaches
        RUNLEDGER_DUCKDB_CHECKPOINT_MB; under a light steady write load that took the soak's RSS
        up and down by ~17 MB every few minutes (docs/memory.md, "The soak"). A smaller
        threshold flattens that saw too, but checkpoints heavy writers (log-batch) several times
        as often and cost them throughput; checkpointing from the housekeeping instead happens at
        most once per purge period, whatever the write rate. Callers hold the writer's lock, so
        no commit is under way; readers' open transactions do not stop a DuckDB checkpoint."""
        if _wal_size(self.path) < self.HOUSEKEEPING_CHECKPOINT_MIN_BYTES:
            return False
        try:
            cur.execute("CHECKPOINT")
        except duckdb.Error as e:   # e.g. a concurrent checkpoint: the next purge tries again
            log.debug("housekeeping checkpoint skipped: %s", e)
            return False
        return True

    @staticmethod
    def _walk_eviction_queues(cur: duckdb.DuckDBPyConnection) -> str:
        """Ask DuckDB for a 1-byte memory limit, which it refuses after walking every eviction
        queue as long as anything is in use (the catalog's and the indexes' blocks, rows not yet
        checkpointed), and put the limit back whatever happened: when DuckDB held nothing, it
        takes the limit and fails the statement's own next allocation instead. Returns the
        memory limit in force. Callers hold the writer's lock and run when no request is in
        flight (as the idle trim's lowered limit does), so nothing else allocates meanwhile."""
        row = cur.execute("SELECT current_setting('memory_limit')").fetchone()
        assert row is not None
        limit = str(row[0])
        try:
            cur.execute("SET memory_limit = '1B'")
        except duckdb.Error:   # refused, as expected: every queue was walked
            pass
        finally:
            cur.execute("SET memory_limit = ?", [limit])
        return limit

    def cursor(self, wait: float = 30.0) -> duckdb.DuckDBPyConnection:
        """A reader's cursor that sees every write whose verdict was already given out."""
        self.visibility.wait(wait)
        return self.con.cursor()

    def close(self) -> None:
        self._writer.close()
        self.con.close()

    # ----- offsets
    def offsets(self, topic: str) -> dict[int, int]:
        with self._lock:
            rows = self._writer.execute(
                'SELECT "partition", next_offset FROM consumer_offsets WHERE topic = ?', [topic]).fetchall()
            stored = {p: o for p, o in rows}
            self._known_offsets[topic] = dict(stored)
        return stored

    def commits_begun(self) -> int:
        """How many commits of `apply` have begun (a changed count: the state may have changed)."""
        return self._commits_begun

    def committed_offsets(self, topic: str) -> tuple[int, dict[int, int]] | None:
        """(`commits_begun()`, the offsets the committed state holds for `topic`) when no commit is
        under way and the offsets are known; else None. A snapshot taken afterwards holds exactly
        these offsets if `commits_begun()` still returns the same count once it is taken."""
        begun = self._commits_begun
        if self._commits_done != begun:
            return None
        known = self._known_offsets.get(topic)
        return None if known is None else (begun, known)

    def _forget_offsets(self) -> None:
        """A new connection (rebuild, reopen): what it holds is learnt again from `offsets`."""
        self._commits_begun += 1
        self._known_offsets = {}
        self._commits_done = self._commits_begun

    # ----- state for a batch
    def load_state(self, records: list[LogRecord]) -> FoldState:
        """Everything `records` may need, read from DuckDB (no cache in front)."""
        return self.load(StateRequest.for_records(records))

    def load(self, request: StateRequest) -> FoldState:
        """Exactly the state `request` names, in one short read under the writer's lock.
        Raises ReadModelCorrupt if the file is found damaged."""
        try:
            return self._load(request)
        except duckdb.Error as e:
            if self.report_if_corrupt(e):
                raise ReadModelCorrupt(str(e).splitlines()[0]) from e
            raise

    def _load(self, request: StateRequest) -> FoldState:
        state = FoldState()
        with self._lock:
            c = self._writer
            if request.event_ids:
                for eid, etype, code, msg, exp_id in c.execute(
                        "SELECT event_id, type, error_code, message, experiment_id FROM event_log "
                        "WHERE event_id IN (SELECT unnest(?::VARCHAR[]))", [request.event_ids]).fetchall():
                    result = {"experiment_id": exp_id} if etype == "ExperimentCreated" and code is None else {}
                    state.seen[eid] = Verdict(code, msg or "", result)
            if request.experiments:
                for row in c.execute("SELECT * FROM experiments").fetchall():
                    exp = ExperimentRow(*row)
                    state.experiments[exp.experiment_id] = exp
                    state.experiment_ids_by_name[exp.name] = exp.experiment_id
                numeric = [int(i) for i in state.experiments if i.isdigit()]
                state.next_experiment_id = max(numeric, default=0) + 1
            if request.experiment_tag_ids:
                for exp_id, k, v in c.execute(
                        "SELECT experiment_id, key, value FROM experiment_tags "
                        "WHERE experiment_id IN (SELECT unnest(?::VARCHAR[]))", [request.experiment_tag_ids]).fetchall():
                    state.experiment_tags[(exp_id, k)] = v
            run_ids = request.run_ids
            if run_ids:
                for row in c.execute("SELECT * FROM runs WHERE run_id IN (SELECT unnest(?::VARCHAR[]))",
                                     [run_ids]).fetchall():
                    state.runs[row[0]] = RunRow(*row)
                # Params, tags and both latest-metric tables in one round trip.
                for kind, run_id, k, text, v, ts, step in c.execute("""
                        SELECT 'params', run_id, key, value, NULL, NULL, NULL FROM params
                         WHERE run_id IN (SELECT unnest($ids::VARCHAR[]))
                        UNION ALL SELECT 'tags', run_id, key, value, NULL, NULL, NULL FROM tags
                         WHERE run_id IN (SELECT unnest($ids::VARCHAR[]))
                        UNION ALL SELECT 'timestamp', run_id, key, NULL, ts_value, ts_timestamp, ts_step
                         FROM latest_points WHERE run_id IN (SELECT unnest($ids::VARCHAR[]))
                        UNION ALL SELECT 'step', run_id, key, NULL, step_value, step_timestamp, step_step
                         FROM latest_points WHERE run_id IN (SELECT unnest($ids::VARCHAR[]))""",
                        {"ids": run_ids}).fetchall():
                    if kind == "params":
                        state.params[(run_id, k)] = text
                    elif kind == "tags":
                        state.tags[(run_id, k)] = text
                    else:
                        state.latest[kind][(run_id, k)] = LatestPoint(v, ts, step)
            if request.model_ids:
                _load_models(c, state, request.model_ids)
        return state

    def event_ids(self) -> Iterator[str]:
        """Every event id in the log so far (to prime the projector's filters)."""
        return self._column("SELECT event_id FROM event_log")

    def run_ids(self) -> Iterator[str]:
        """Every run id, deleted or not."""
        return self._column("SELECT run_id FROM runs")

    def _column(self, sql: str) -> Iterator[str]:
        with self.con.cursor() as cur:
            reader = cur.sql(sql).to_arrow_reader(100_000)
            for batch in reader:
                yield from batch.column(0).to_pylist()

    # ----- one transaction per batch
    def apply(self, changes: BatchChanges, topic: str, next_offsets: dict[int, int]) -> None:
        with self._lock:
            c = self._writer
            started = time.monotonic()
            c.execute("BEGIN TRANSACTION")
            try:
                self._apply_rows(c, changes)
                _store_offsets(c, topic, next_offsets)
                # Counted before the commit can be seen, settled after (see committed_offsets).
                self._commits_begun += 1
                try:
                    committing = time.monotonic()
                    c.execute("COMMIT")
                    # Where a slow commit's time went (projector.consumer logs it).
                    self.last_apply_s = (committing - started, time.monotonic() - committing)
                    known = self._known_offsets.get(topic)
                    if known is not None:
                        self._known_offsets[topic] = {**known, **next_offsets}
                finally:
                    self._commits_done = self._commits_begun
            except _VALUE_ERRORS as e:
                c.execute("ROLLBACK")
                raise RowsRefused(str(e).splitlines()[0][:500]) from e
            except BaseException as e:
                with contextlib.suppress(duckdb.Error):
                    c.execute("ROLLBACK")
                if self.report_if_corrupt(e):
                    raise ReadModelCorrupt(str(e).splitlines()[0]) from e
                raise
            for listener in self.apply_listeners:
                listener(changes)

    def _apply_rows(self, c: duckdb.DuckDBPyConnection, ch: BatchChanges) -> None:
        if ch.experiments:
            _insert(c, "experiments", "INSERT OR REPLACE", _columns(ch.experiments.values(), ExperimentRow))
        _apply_keyed(c, "experiment_tags", "experiment_id", ch.experiment_tags)
        if ch.runs:
            _insert(c, "runs", "INSERT OR REPLACE", _columns(ch.runs.values(), RunRow))
        if ch.params:
            _insert(c, "params", "INSERT OR IGNORE", {
                "run_id": [k[0] for k in ch.params], "key": [k[1] for k in ch.params],
                "value": list(ch.params.values())})
        _apply_keyed(c, "tags", "run_id", ch.tags)
        start = 0
        for rewind in ch.rewinds:
            _insert_metrics(c, ch.metrics.segment(start, rewind.chunk_index))
            _rewind(c, rewind)
            start = rewind.chunk_index
        _insert_metrics(c, ch.metrics.segment(start, None))
        _apply_models(c, ch)
        if ch.datasets:
            rows = [{**r, "tags": orjson.dumps(r["tags"]).decode()} for r in ch.datasets.values()]
            _insert(c, "run_datasets", "INSERT OR IGNORE", {
                name: [r[name] for r in rows] for name in (
                    "run_id", "name", "digest", "context", "source_type", "source", "schema", "profile",
                    "tags", "experiment_id", "logged_time")})
        if ch.model_inputs:
            rows = list(ch.model_inputs.values())
            _insert(c, "run_model_inputs", "INSERT OR IGNORE", {
                name: [r[name] for r in rows] for name in ("run_id", "model_id", "experiment_id", "logged_time")})
        if ch.model_outputs:
            rows = list(ch.model_outputs.values())
            _insert(c, "run_model_outputs", "INSERT OR IGNORE", {
                name: [r[name] for r in rows] for name in ("run_id", "model_id", "step", "experiment_id", "logged_time")})
        _apply_artifacts(c, ch.artifacts)
        _upsert_latest(c, ch.latest)
        for run_id in dict.fromkeys(r.run_id for r in ch.rewinds):
            _recompute_latest(c, run_id)
        if ch.log:
            log = ch.log
            # Plain INSERT: the fold never emits an event id that is already logged (it checks the
            # ids the batch's state loaded), so a key violation here is a bug and fails loudly.
            _insert(c, "event_log", "INSERT", {
                "event_id": [e.event_id for e in log], "partition": [e.partition for e in log],
                "offset": [e.offset for e in log], "type": [e.type for e in log],
                "experiment_id": [e.experiment_id for e in log], "run_id": [e.run_id for e in log],
                "ingest_time": [e.ingest_time for e in log], "user_id": [e.user for e in log],
                "error_code": [e.error_code for e in log], "message": [e.message for e in log],
                "payload": [None if e.payload is None else orjson.dumps(e.payload).decode() for e in log],
                "actor_verified": [e.actor_verified for e in log], "request_id": [e.request_id for e in log],
                "api": [e.api for e in log]})
            rejected = [e for e in log if e.error_code is not None]
            if rejected:
                _insert(c, "rejections", "INSERT", {
                    "event_id": [e.event_id for e in rejected], "partition": [e.partition for e in rejected],
                    "offset": [e.offset for e in rejected], "type": [e.type for e in rejected],
                    "run_id": [e.run_id for e in rejected], "experiment_id": [e.experiment_id for e in rejected],
                    "ingest_time": [e.ingest_time for e in rejected],
                    "error_code": [e.error_code for e in rejected], "reason": [e.message for e in rejected]})


def _insert_metrics(c: duckdb.DuckDBPyConnection, metrics: MetricRows) -> None:
    """Append accepted points; an exact duplicate of a stored point (or of another in the
    batch) is stored once."""
    plain, repeated, maybe = metrics.split()
    if plain.num_rows:
        with _rows(c, "b", plain) as (source, params):
            c.execute(f"INSERT INTO metrics SELECT run_id, key, value, timestamp, step FROM {source}", params)
    if repeated.num_rows:
        # DISTINCT: a point sent twice in one batch is stored once (DuckDB's DISTINCT takes
        # NaN as equal to NaN, so a repeated NaN point is a duplicate too).
        with _rows(c, "b", repeated) as (source, params):
            c.execute(f"INSERT INTO metrics SELECT DISTINCT run_id, key, value, timestamp, step FROM {source}",
                      params)
    if maybe.num_rows:
        # Exact repeats of stored points (a client retry) are stored once; this scans the
        # metrics of the runs involved, so only points that may repeat come here.
        with _rows(c, "b", maybe) as (source, params):
            c.execute(f"""
                INSERT INTO metrics
                SELECT DISTINCT b.run_id, b.key, b.value, b.timestamp, b.step FROM {source}
                WHERE NOT EXISTS (
                    SELECT 1 FROM metrics m
                    WHERE m.run_id = b.run_id AND m.key = b.key AND m.timestamp = b.timestamp
                      AND m.step = b.step AND m.value = b.value)""", params)


def _rewind(c: duckdb.DuckDBPyConnection, rewind: Rewind) -> None:
    """Move the run's points above the rewind's step aside (docs/design.md, invariant 10: the log
    keeps them; `rewound_metrics` shows what was moved by which rewind)."""
    c.execute("INSERT INTO rewound_metrics SELECT run_id, key, value, timestamp, step, ? FROM metrics "
              "WHERE run_id = ? AND step > ?", [rewind.event_id, rewind.run_id, rewind.step])
    c.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", [rewind.run_id, rewind.step])


def _recompute_latest(c: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """A rewound run's latest point per key under both rules (projector.rules.newer: NaN counts
    as 0), from the points it has left. The fold's "first point wins" among exact ties needs
    the log order, which the table does not keep; ties go to the smaller step, then non-NaN,
    which is deterministic however the log was cut into batches."""
    c.execute("DELETE FROM latest_points WHERE run_id = ?", [run_id])
    c.execute("""
        INSERT INTO latest_points
        WITH m AS (SELECT key, value, timestamp, step, CASE WHEN isnan(value) THEN 0 ELSE value END AS v0
                   FROM metrics WHERE run_id = $run),
        ts AS (SELECT * FROM m QUALIFY row_number() OVER (
                   PARTITION BY key ORDER BY timestamp DESC, v0 DESC, step, isnan(value)) = 1),
        st AS (SELECT * FROM m QUALIFY row_number() OVER (
                   PARTITION BY key ORDER BY step DESC, timestamp DESC, v0 DESC, isnan(value)) = 1)
        SELECT $run, ts.key, ts.value, ts.timestamp, ts.step, st.value, st.timestamp, st.step
        FROM ts JOIN st USING (key)""", {"run": run_id})


def _columns(rows: Iterable[Any], cls: type) -> dict[str, list[Any]]:
    rows = list(rows)
    return {f.name: [getattr(r, f.name) for r in rows] for f in dataclasses.fields(cls)}


def _store_offsets(c: duckdb.DuckDBPyConnection, topic: str, next_offsets: dict[int, int]) -> None:
    """Record where to resume: one UPDATE for all partitions (cheaper than an upsert), and an
    INSERT for partitions seen for the first time."""
    if not next_offsets:
        return
    if len(next_offsets) <= _SMALL_ROWS:
        # A plain UPDATE by key costs half the one joining a VALUES list (0.8 vs 1.5 ms).
        for partition, offset in next_offsets.items():
            changed = c.execute('UPDATE consumer_offsets SET next_offset = ? WHERE topic = ? AND "partition" = ?',
                                [offset, topic, partition]).fetchone()
            if not changed or not changed[0]:
                c.execute("INSERT INTO consumer_offsets VALUES (?, ?, ?)", [topic, partition, offset])
        return
    with _rows(c, "n", {"p": list(next_offsets), "o": list(next_offsets.values())}) as (source, params):
        updated = {row[0] for row in c.execute(
            f'UPDATE consumer_offsets SET next_offset = n.o FROM {source} '
            f'WHERE consumer_offsets.topic = ? AND consumer_offsets."partition" = n.p RETURNING "partition"',
            [*params, topic]).fetchall()}
    for partition, offset in next_offsets.items():
        if partition not in updated:
            c.execute("INSERT INTO consumer_offsets VALUES (?, ?, ?)", [topic, partition, offset])


def _upsert_latest(c: duckdb.DuckDBPyConnection, latest: dict[str, dict[tuple[str, str], LatestPoint]]) -> None:
    """One upsert of `latest_points` for both rules. A (run, key) whose latest changed under
    one rule only carries NULLs for the other, which keep the stored values (a new key always
    changes under both rules, so a new row is complete)."""
    keys = list(dict.fromkeys([*latest.get("timestamp", {}), *latest.get("step", {})]))
    if not keys:
        return
    columns: dict[str, list[Any]] = {"run_id": [k[0] for k in keys], "key": [k[1] for k in keys]}
    for rule, names in LATEST_COLUMNS.items():
        points = latest.get(rule, {})
        got = [points.get(k) for k in keys]
        columns[names[0]] = [None if p is None else p.value for p in got]
        columns[names[1]] = [None if p is None else p.timestamp for p in got]
        columns[names[2]] = [None if p is None else p.step for p in got]
    if len(keys) <= _SMALL_ROWS:
        _update_latest_rows(c, columns)
        return
    names = ", ".join(columns)
    keep = ", ".join(f"{col} = COALESCE(EXCLUDED.{col}, latest_points.{col})"
                     for cols in LATEST_COLUMNS.values() for col in cols)
    with _rows(c, "l", columns) as (source, params):
        c.execute(f"INSERT INTO latest_points ({names}) SELECT {names} FROM {source} "
                  f"ON CONFLICT (run_id, key) DO UPDATE SET {keep}", params)


# Up to this many rows, a statement per row by primary key beats one upsert of them all: an
# ON CONFLICT upsert of one latest point costs ~2.4 ms here, an UPDATE by key ~0.9 ms (and a
# single synchronous write's commit is a handful of such statements).
_SMALL_ROWS = 2
_LATEST_VALUE_COLUMNS = [col for cols in LATEST_COLUMNS.values() for col in cols]
_UPDATE_LATEST = ("UPDATE latest_points SET " + ", ".join(f"{col} = COALESCE(?, {col})" for col in _LATEST_VALUE_COLUMNS)
                  + " WHERE run_id = ? AND key = ?")
_INSERT_LATEST = (f"INSERT INTO latest_points (run_id, key, {', '.join(_LATEST_VALUE_COLUMNS)}) "
                  f"VALUES ({', '.join('?' * (2 + len(_LATEST_VALUE_COLUMNS)))})")


def _update_latest_rows(c: duckdb.DuckDBPyConnection, columns: dict[str, list[Any]]) -> None:
    """`_upsert_latest` for a few rows: UPDATE each by key (NULL keeps the stored value), and
    INSERT the ones not there yet (a new key is complete, see `_upsert_latest`)."""
    for i in range(len(columns["run_id"])):
        values = [columns[col][i] for col in _LATEST_VALUE_COLUMNS]
        key = [columns["run_id"][i], columns["key"][i]]
        changed = c.execute(_UPDATE_LATEST, [*values, *key]).fetchone()
        if not changed or not changed[0]:
            c.execute(_INSERT_LATEST, [*key, *values])


def _apply_keyed(c: duckdb.DuckDBPyConnection, table: str, owner: str,
                 values: dict[tuple[str, str], str | None]) -> None:
    """Write final tag values: delete the keys set to None, upsert the rest."""
    gone = [k for k, v in values.items() if v is None]
    kept = {k: v for k, v in values.items() if v is not None}
    if gone:
        with _rows(c, "g", {"owner": [k[0] for k in gone], "key": [k[1] for k in gone]}) as (source, params):
            c.execute(f"DELETE FROM {table} t USING {source} WHERE t.{owner} = g.owner AND t.key = g.key", params)
    if kept:
        _insert(c, table, "INSERT OR REPLACE", {
            owner: [k[0] for k in kept], "key": [k[1] for k in kept], "value": list(kept.values())})


# Below this many rows a VALUES list with bound parameters is several times cheaper than
# registering an Arrow table (a synchronous single write is a handful of rows); above it,
# Arrow is the fast path (executemany manages about 1k rows/s in DuckDB).
_VALUES_MAX_ROWS = 64


@contextlib.contextmanager
def _rows(c: duckdb.DuckDBPyConnection, name: str,
          columns: dict[str, list[Any]] | pa.Table) -> Iterator[tuple[str, list[Any]]]:
    """A FROM-clause source named `name` holding `columns`, with the parameters it needs."""
    if isinstance(columns, pa.Table):
        if columns.num_rows > _VALUES_MAX_ROWS:
            c.register(name, columns)
            try:
                yield name, []
            finally:
                c.unregister(name)
            return
        columns = columns.to_pydict()
    names = list(columns)
    n = len(columns[names[0]])
    if n <= _VALUES_MAX_ROWS:
        row = "(" + ", ".join("?" * len(names)) + ")"
        params = [v for i in range(n) for v in (columns[col][i] for col in names)]
        quoted = ", ".join(f'"{col}"' for col in names)
        yield f"(VALUES {', '.join([row] * n)}) AS {name}({quoted})", params
        return
    c.register(name, pa.table({col: pa.array(vals) for col, vals in columns.items()}))
    try:
        yield name, []
    finally:
        c.unregister(name)


def _insert(c: duckdb.DuckDBPyConnection, table: str, verb: str, columns: dict[str, list[Any]]) -> None:
    names = ", ".join(f'"{n}"' for n in columns)
    with _rows(c, "_rows", columns) as (source, params):
        c.execute(f"{verb} INTO {table} ({names}) SELECT {names} FROM {source}", params)


def _apply_artifacts(c: duckdb.DuckDBPyConnection, ops: list[ArtifactOp]) -> None:
    """Artifact writes and deletions in fold order; consecutive writes go in one statement."""
    puts: list[ArtifactOp] = []

    def flush() -> None:
        if puts:
            last = {(o.owner_id, o.path): o for o in puts}  # a path written twice: the later write
            _insert(c, "artifacts", "INSERT OR REPLACE", {
                name: [getattr(o, name) for o in last.values()] for name in (
                    "owner_id", "path", "owner_type", "experiment_id", "size", "sha256", "logged_time", "actor",
                    "event_id")})
            puts.clear()
    for op in ops:
        if op.kind == "put":
            puts.append(op)
            continue
        flush()
        # "" is the whole folder
        c.execute("DELETE FROM artifacts WHERE owner_id = ? AND (? = '' OR path = ? OR starts_with(path, ? || '/'))",
                  [op.owner_id, op.path, op.path, op.path])
    flush()


# ----- logged models (MLflow 3.x)

def _load_models(c: duckdb.DuckDBPyConnection, state: FoldState, ids: list[str]) -> None:
    """The logged models `ids`, with their params and tags."""
    for row in c.execute("SELECT * FROM logged_models WHERE model_id IN (SELECT unnest(?::VARCHAR[]))",
                         [ids]).fetchall():
        state.models[row[0]] = LoggedModelRow(*row)
    for table, target in (("logged_model_params", state.model_params), ("logged_model_tags", state.model_tags)):
        for model_id, k, v in c.execute(
                f"SELECT model_id, key, value FROM {table} WHERE model_id IN (SELECT unnest(?::VARCHAR[]))",
                [ids]).fetchall():
            target[(model_id, k)] = v


def _apply_models(c: duckdb.DuckDBPyConnection, ch: BatchChanges) -> None:
    if ch.models:
        _insert(c, "logged_models", "INSERT OR REPLACE", _columns(ch.models.values(), LoggedModelRow))
    if ch.model_params:
        _insert(c, "logged_model_params", "INSERT OR IGNORE", {
            "model_id": [k[0] for k in ch.model_params], "key": [k[1] for k in ch.model_params],
            "value": list(ch.model_params.values())})
    _apply_keyed(c, "logged_model_tags", "model_id", ch.model_tags)
    if ch.model_metrics:
        # The first point per (model, key, timestamp, step, run) wins, within and across batches.
        keys, vals = list(ch.model_metrics), list(ch.model_metrics.values())
        _insert(c, "logged_model_metrics", "INSERT OR IGNORE", {
            "model_id": [k[0] for k in keys], "key": [k[1] for k in keys], "timestamp": [k[2] for k in keys],
            "step": [k[3] for k in keys], "run_id": [k[4] for k in keys], "value": [v[0] for v in vals],
            "dataset_name": [v[1] for v in vals], "dataset_digest": [v[2] for v in vals],
            "experiment_id": [v[3] for v in vals]})


def _wal_size(path: str) -> int:
    try:
        return Path(path + ".wal").stat().st_size
    except OSError:
        return 0
