"""The reader as the dialect rooms see it: cursors on the read model that see every write already
answered, the configured latest-metric rule, the rendered-run cache, paged-search snapshots and
the projector's progress. Dialects never touch the projector or its DuckDB store directly."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

import duckdb
import orjson

from runledger.ingest.errors import InternalError

from runledger.projector.consumer import Projector
from runledger.projector.pending import COMMITTED, HotRun, Uncommitted
from runledger.projector.schema import LATEST_TABLES
from runledger.projector.store import ReadModelDamaged, Store
from runledger.query import reader
from runledger.query.history_buckets import BucketCache
from runledger.query.read_paths import ReadPaths
from runledger.query.run_cache import RunCache
from runledger.query.search_cache import SearchCache
from runledger.query.search_cursors import SearchCursors


_RULES = {table: rule for rule, table in LATEST_TABLES.items()}   # latest-metrics table -> rule


class ReadService:
    def __init__(self, store: Store, projector: Projector, *, latest_table: str, run_cache: RunCache,
                 search_cursors: SearchCursors, bucket_cache: BucketCache | None = None) -> None:
        self._store = store
        self._projector = projector
        self.latest_table = latest_table
        self.run_cache = run_cache
        self.search_cursors = search_cursors
        self.search_cache = SearchCache(run_cache)   # first pages of runs/search until the next commit
        self.bucket_cache = bucket_cache if bucket_cache is not None else BucketCache()   # answers of metrics/history-buckets
        self._rule = _RULES.get(latest_table)
        self.read_paths = ReadPaths()   # which way each get-run was answered (query.read_paths)
        if run_cache.folded is None:
            run_cache.folded = self.folded_json

    def folded_json(self, latest_table: str, run_ids: list[str]) -> dict[str, bytes]:
        """JSON of those of `run_ids` the projector's fold cache holds (its most recently
        written runs, `FoldCache.max_runs`), rendered as `reader.runs_json` renders DuckDB's
        rows: each as DuckDB has it, or newer when a write to it is answered but not committed.
        Runs whose inputs/outputs are not known here are left out (read from DuckDB)."""
        rule = _RULES.get(latest_table)
        if rule is None:
            return {}
        hot = self._projector.folded_runs(run_ids, rule)
        if not hot:
            return {}
        none_anywhere = self.run_cache.no_inputs_anywhere()  # read after the pending check: see RunCache
        out = {}
        for run_id, state in hot.items():
            parts = ({}, {}) if none_anywhere else self.run_cache.inputs(run_id)
            if parts is not None:
                out[run_id] = orjson.dumps(reader.hot_run_json(state, *parts))
        return out

    def get_run(self, run_id: str) -> bytes | orjson.Fragment | dict[str, Any] | None:
        """get-run's `run`: its MLflow JSON (bytes when rendered from memory, a Fragment
        through the rendered-run cache), or None for an unknown run. Tallies the way it was
        answered (`read_paths`).

        In order: (1) a write to the run is answered but not committed: its folded state
        (`run_from_memory`); (2) the rendered-run cache holds it and no answered write waits
        for its commit: the cache, read as every read is; (3) the projector's fold cache holds
        the run: its folded state, which is the run as DuckDB has it or newer, never older than
        an answered write (`folded_json`), without waiting for other runs' commits and without
        a DuckDB read (a run being written to is dropped from the rendered-run cache at every
        commit, so without this each read after a commit landed read DuckDB: the slow 1-5% of
        get-run right after a write, query.read_paths); (4) DuckDB, after waiting for the
        commits of answered writes."""
        t0 = time.perf_counter()
        found = self.get_run_at_once(run_id, t0)
        return found if found is not None else self.get_run_from_duckdb(run_id, t0)

    def get_run_at_once(self, run_id: str, t0: float | None = None) -> bytes | None:
        """`get_run`'s answers (1), (2) and (3): never a DuckDB read nor a wait for a commit (only the
        projector's short pending lock); None: call
        `get_run_from_duckdb`."""
        t0 = time.perf_counter() if t0 is None else t0
        now = self.run_from_memory(run_id)
        if now is not None:
            self.read_paths.note("memory", time.perf_counter() - t0)
            return now
        visibility = self._store.visibility
        pending = visibility.committed < visibility.released   # committed read first: see Visibility
        if not pending:
            # every answered write is committed, so its commit dropped what it changed from the cache
            cached = self.run_cache.get(self.latest_table, [run_id]).get(run_id)
            if cached is not None:
                self.read_paths.note("cache", time.perf_counter() - t0)
                return cached
        folded = self.folded_json(self.latest_table, [run_id]).get(run_id)
        if folded is not None:
            self.read_paths.note("folded", time.perf_counter() - t0)
            return folded
        return None

    def get_run_from_duckdb(self, run_id: str, t0: float | None = None) -> orjson.Fragment | dict[str, Any] | None:
        """`get_run`'s answers (2) and (4): through the rendered-run cache (a run `get_run_at_once`
        did not find there is usually read from DuckDB), after waiting for the commits of
        answered writes."""
        t0 = time.perf_counter() if t0 is None else t0
        visibility = self._store.visibility
        pending = visibility.committed < visibility.released
        cached = self.run_cache.holds(self.latest_table, run_id)
        with self.cursor() as cur:
            waited = time.perf_counter() - t0 if pending else 0.0
            run = reader.get_run(cur, run_id, self.latest_table, self.run_cache)
        self.read_paths.note("waited" if pending else "cache" if cached else "duckdb",
                             time.perf_counter() - t0, waited)
        return run

    def run_from_memory(self, run_id: str) -> bytes | None:
        """The run's MLflow JSON without waiting for a DuckDB commit, when a write to it was
        answered but is not committed yet; None when the caller should read as usual (through
        `cursor`, which waits for that commit).

        Read-your-writes holds: the projector's folded state of the run includes every batch
        whose verdicts were handed out (projector.pending), and it is what the commit writes,
        so the answer equals the one DuckDB gives once the commit is visible
        (tests/test_read_after_write.py compares them). The inputs/outputs parts come from the
        rendered-run cache's map, which a commit drops only for runs whose inputs changed, and
        only when no uncommitted batch changed them. The answer is not kept in the
        rendered-run cache (it is not in DuckDB yet)."""
        found = self.run_now(run_id)
        return found if found else None

    def run_now(self, run_id: str) -> bytes | None:
        """`run_from_memory`, but b"" when DuckDB already holds every change to the run (no
        uncommitted batch changed it), so reading it there needs no wait."""
        if self._rule is None:
            return None
        hot = self._projector.hot_run(run_id, self._rule)
        if hot is None:
            return None
        if hot == COMMITTED:
            return b""
        assert isinstance(hot, HotRun)
        # read after the pending check (see RunCache.may_have_inputs)
        parts = ({}, {}) if self.run_cache.no_inputs_anywhere() else self.run_cache.inputs(run_id)
        if parts is None:
            return None
        return orjson.dumps(reader.hot_run_json(hot, *parts))

    def memory_reads(self) -> "_MemoryReads | None":
        """When writes were answered but are not committed yet and everything they changed is
        known: what a read may use instead of waiting for their commits (`cursor_now` plus the
        projector's folded state of the runs they changed; query.reader.MustWait tells the
        caller to read again through `cursor` when that is not enough). None otherwise."""
        if self._rule is None:
            return None
        uncommitted = self._projector.uncommitted()
        return None if uncommitted is None else _MemoryReads(self, uncommitted)

    def settled(self) -> bool:
        """Every write already answered is committed, and the caches dropped what it changed (a
        commit counts only after its listeners ran), so `search_cache` is current without waiting
        (query.search_cache). False: read through `cursor`."""
        visibility = self._store.visibility
        target = visibility.released   # first: a write answered after this is not ours to see
        return visibility.committed >= target and visibility.failure is None and self._store.corruption is None

    @contextlib.contextmanager
    def cursor_now(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor that does NOT wait for pending commits: only for reads that account for
        them (`memory_reads`)."""
        with self._errors(self._store.con.cursor()) as cur:
            yield cur

    @contextlib.contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor that sees every write whose verdict was already given out (read-your-writes).

        DuckDB's errors stop here: a query failing on the read model is our fault, never the
        caller's input (readers validate that first), so it becomes an InternalError whose text
        is logged, not sent."""
        with self._errors(self._store.cursor()) as cur:
            yield cur

    @contextlib.contextmanager
    def _errors(self, cur: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
        try:
            yield cur
        except duckdb.Error as e:
            if self._store.report_if_corrupt(e):  # the projector moves the file aside and rebuilds it
                raise ReadModelDamaged("The read model is damaged and is being rebuilt from the log; "
                                       "retry shortly.") from e
            raise InternalError(f"read model query failed: {type(e).__name__}") from e
        finally:
            cur.close()

    def open_cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for a streamed answer, which outlives the handler: the caller closes it."""
        return self._store.cursor()

    def streamed_read_failed(self, exc: BaseException) -> None:
        """A streamed answer failed after its status was sent: if the file is damaged, this
        still starts the rebuild that `cursor` would have started."""
        self._store.report_if_corrupt(exc)

    async def lag(self) -> dict[int, tuple[int, int]]:
        """Per partition: (log end offset, next offset the projector will apply)."""
        return await self._projector.lag()

    def unapplied_timestamp(self, next_offsets: dict[int, int]) -> int | None:
        """The Kafka timestamp of the oldest of the records at `next_offsets` when the projector
        has them folded and waiting for their commit, else None (projector.consumer)."""
        known = getattr(self._projector, "unapplied_timestamp", None)
        return known(next_offsets) if known is not None else None


class _MemoryReads:
    """`ReadService.memory_reads`: what uncommitted batches changed, and their runs' JSON."""

    def __init__(self, service: ReadService, uncommitted: Uncommitted) -> None:
        self._service = service
        self.uncommitted = uncommitted

    def run_json(self, run_id: str) -> bytes | None:
        return self._service.run_now(run_id)
