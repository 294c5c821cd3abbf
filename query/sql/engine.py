"""Runs sandboxed SQL on the read model: lockdown, limits, one query's cursor and snapshot.

Layers (docs/design.md, invariant 9): query.sql.sandbox proves the text is one SELECT over the public
views; this module then runs it on its own cursor of the server's DuckDB instance (the process
holds the file's only read-write handle, invariant 6), inside a read-only transaction, with a
per-cursor time limit (`max_execution_time`), a spill threshold for intermediates
(`operator_memory_limit`) and a hard memory cap (query.sql.memory_guard: what cannot spill is
stopped rather than take the projector's memory). The
instance itself has external access, extension loading and Python replacement scans turned off
and its configuration locked, as defence in depth: the parser check is the guarantee.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from typing import Any, Callable, TypeVar
import duckdb
import pyarrow as pa

from runledger.ingest.errors import InternalError, InvalidParameterValue, RunledgerError
from runledger.projector.store import Store
from runledger.query.sql import sandbox
from runledger.query.sql.memory_guard import SqlMemoryGuard
from runledger.query.sql.views import SCHEMA, SCOPE_IDS, SCOPE_MODE, UNSCOPED_SCHEMA, install

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Settings changed after the configuration is locked: a SQL cursor's own, the instance's
# thread count, which the engine raises while SQL queries run (SqlEngine._more_threads), and its
# memory limit, which the idle trim lowers for a moment to drop cached blocks
# (Store.release_buffers, docs/memory.md). Queries themselves can set nothing: the parser
# refuses every SET.
_CURSOR_SETTINGS = ["max_execution_time", "operator_memory_limit", "schema", "search_path", "threads",
                    "memory_limit", "perfect_ht_threshold"]
# Aggregates whose state is every value of its group (quantiles, median, MAD, mode), so that
# producing a group's answer (copy the values out, partially sort them) is most of the query's
# work. DuckDB groups by a small integer range (GROUP BY step) with its perfect hash aggregate,
# which produces every group's answer on one thread: Q2 of docs/sql.md ("per-step quantile
# bands") spent ~290 ms of its ~550 ms CPU there, with the second core idle. Its hash aggregate
# produces them partition by partition on every thread, so a query calling one of these runs
# with the perfect hash aggregate off (perfect_ht_threshold = 0) on its own cursor. Other
# queries keep it: for sums and counts it is ~10% cheaper in CPU.
HOLISTIC_AGGREGATES = frozenset({"quantile", "quantile_cont", "quantile_disc", "median", "mad", "mode"})
# How long after the last SQL query the instance goes back to its usual thread count. Changing
# it costs ~0.5 ms (threads are started or joined), too much to pay around every small query.
_THREADS_IDLE_S = 2.0


@dataclasses.dataclass(frozen=True)
class SqlLimits:
    time_limit_ms: int = 30_000        # RUNLEDGER_SQL_TIME_LIMIT_MS
    memory_mb: int = 512               # RUNLEDGER_SQL_MEMORY_MB: per query, sorts/joins/aggregates
    max_rows: int = 10_000             # RUNLEDGER_SQL_MAX_ROWS: JSON answers (truncated beyond)
    max_bytes: int = 2 << 30           # RUNLEDGER_SQL_MAX_BYTES: streamed formats
    max_concurrent: int = 4            # RUNLEDGER_SQL_MAX_CONCURRENT: beyond it, 429
    threads: int = 1                   # RUNLEDGER_SQL_THREADS: DuckDB threads while SQL queries run
    idle_threads: int = 1              # RUNLEDGER_DUCKDB_THREADS: the instance's usual count
    # RUNLEDGER_DUCKDB_MEMORY_LIMIT in MiB: the instance's usual memory limit (None: DuckDB's own
    # default, left alone). While SQL queries run it is raised by `memory_mb` (see _raise_for_sql).
    idle_memory_mb: int | None = None


class SqlError(RunledgerError):
    """A SQL request that failed for a reason of its own: QUERY_TIMEOUT, QUERY_OUT_OF_MEMORY,
    REQUEST_LIMIT_EXCEEDED (too many at once) or CANCELLED (the client went away)."""


def _literal(text: str) -> str:
    """`text` as a SQL string literal (our own statements only; never the caller's query)."""
    return "'" + text.replace("'", "''") + "'"


@dataclasses.dataclass
class _Cursor:
    """A DuckDB cursor kept between queries, with the session state it last had set: its
    settings and variables persist, so a reused cursor only sets what differs (each of our
    statements costs ~0.1-0.3 ms; setting all of them was most of a trivial query's time)."""

    cur: duckdb.DuckDBPyConnection
    scope: tuple[str, tuple[str, ...]] | None = None
    time_limit_ms: int | None = None
    # Whether the perfect hash aggregate is off on this cursor (HOLISTIC_AGGREGATES).
    hash_aggregate_only: bool = False

    @property
    def schema(self) -> str:
        """The schema the cursor's unqualified names resolve in."""
        assert self.scope is not None, "setup() first"
        # Callers who may read everything resolve names to the unfiltered views.
        return UNSCOPED_SCHEMA if self.scope[0] == "all" else SCHEMA

    def setup(self, scope: tuple[str, tuple[str, ...]], time_limit_ms: int, memory_mb: int,
              hash_aggregate_only: bool = False) -> str:
        """Our statements that bring the cursor to `scope`, `time_limit_ms` and the aggregate
        choice (`hash_aggregate_only`: see HOLISTIC_AGGREGATES) (one string)."""
        parts = []
        if self.scope is None:
            parts.append(f"SET SESSION operator_memory_limit = '{int(memory_mb)}MB'")
        if scope != self.scope:
            mode, ids = scope
            id_list = "[" + ", ".join(_literal(i) for i in ids) + "]::VARCHAR[]"
            # (The schema is set after BEGIN, by SqlQuery, where it also takes the snapshot.)
            parts += [f"SET VARIABLE {SCOPE_MODE} = {_literal(mode)}", f"SET VARIABLE {SCOPE_IDS} = {id_list}"]
        if time_limit_ms != self.time_limit_ms:
            parts.append(f"SET SESSION max_execution_time = {int(time_limit_ms)}")
        if hash_aggregate_only != self.hash_aggregate_only:
            parts.append("SET SESSION perfect_ht_threshold = 0" if hash_aggregate_only
                         else "RESET SESSION perfect_ht_threshold")
        self.scope, self.time_limit_ms, self.hash_aggregate_only = scope, time_limit_ms, hash_aggregate_only
        return "; ".join(parts)


def refused(message: str) -> InvalidParameterValue:
    return InvalidParameterValue(message)


# DuckDB errors whose text is about the caller's query (a typo, a bad cast, a wrong column):
# shown as they are. Any other failure is logged and answered without its text.
_QUERY_ERRORS: tuple[type[BaseException], ...] = (
    duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException, duckdb.ConversionException,
    duckdb.InvalidInputException, duckdb.OutOfRangeException, duckdb.TypeMismatchException,
    duckdb.NotImplementedException, duckdb.SyntaxException, duckdb.DataError)


class SqlEngine:
    def __init__(self, store: Store, topic: str, limits: SqlLimits) -> None:
        self.store = store
        self.topic = topic
        self.limits = limits
        self._running = 0
        self._lock = threading.Lock()
        self._latest_table = "latest_metrics"
        self._prepared_for: duckdb.DuckDBPyConnection | None = None
        # Cursors of `_prepared_for` that ended a query cleanly, ready for the next one.
        self._idle: list[_Cursor] = []
        self.memory_guard = SqlMemoryGuard(limits.memory_mb)
        # The instance whose thread count and memory limit are raised for SQL (None: at their
        # usual values), and when the last SQL query ended.
        self._threads_raised_for: duckdb.DuckDBPyConnection | None = None
        self._threads_lock = threading.Lock()
        self._last_sql = 0.0
        # The topic's partitions (set at start-up): a partition nothing was applied from yet
        # still appears in an answer's log position, at offset 0.
        self.partitions: list[int] = []

    def prepare(self, latest_table: str) -> None:
        """Create the public views and lock the instance down. Run once at start-up, before the
        projector writes (a locked configuration refuses later SET statements instance-wide),
        and again by `open` if the store has since opened a new DuckDB instance (a damaged
        file is rebuilt into a new one: views and lockdown go with the instance)."""
        self._latest_table = latest_table
        con = self.store.con
        install(con, latest_table)
        for setting in ("enable_external_access = false", "autoload_known_extensions = false",
                        "autoinstall_known_extensions = false", "allow_community_extensions = false",
                        "python_enable_replacements = false",
                        f"allowed_configs = {_CURSOR_SETTINGS!r}", "lock_configuration = true"):
            con.execute(f"SET {setting}")
        self._prepared_for = con
        stale, self._idle = self._idle, []
        for c in stale:
            with contextlib.suppress(Exception):
                c.cur.close()

    # ----- concurrency
    def acquire(self) -> None:
        with self._lock:
            if self._running >= self.limits.max_concurrent:
                raise SqlError(f"{self._running} SQL queries are already running, the limit "
                               f"(RUNLEDGER_SQL_MAX_CONCURRENT); retry shortly.", "REQUEST_LIMIT_EXCEEDED")
            self._running += 1

    def release(self) -> None:
        with self._lock:
            self._running -= 1
            self._last_sql = time.monotonic()

    # ----- threads and memory: the read model runs DuckDB on RUNLEDGER_DUCKDB_THREADS (1 by
    # default: on few cores a thread pool slows the projector's many small statements), but an
    # analytical query over millions of points is what parallel scans and aggregates are for. So
    # while SQL queries run, and for _THREADS_IDLE_S after, the instance gets RUNLEDGER_SQL_THREADS.
    # Likewise its memory limit: RUNLEDGER_DUCKDB_MEMORY_LIMIT (384 MiB by default, docs/memory.md)
    # is sized for the projector and the MLflow reads, and a query's intermediates must fit in it
    # beside the cached blocks of the tables it scans. Q2 of docs/sql.md (quantiles per step over
    # 10M points) holds ~300 MB of aggregate states: under 384 MiB DuckDB evicted the blocks it was
    # scanning and read them again (CPU 0.8-1.0 s, at times 4-6 s, against 0.59 s with room; the
    # server's Q2 was ~100 ms slower than in-process for this reason). RUNLEDGER_SQL_MEMORY_MB is
    # already what a query may hold (the memory guard enforces it), so while SQL runs the limit is
    # the usual one plus that budget, and it comes back down (evicting) once SQL is idle.
    def _more_threads(self) -> None:
        more_threads = self.limits.threads > self.limits.idle_threads
        if not more_threads and self.limits.idle_memory_mb is None:
            return
        with self._threads_lock:
            con = self.store.con
            if self._threads_raised_for is con:
                return
            with con.cursor() as cur:
                if more_threads:
                    cur.execute(f"SET GLOBAL threads = {int(self.limits.threads)}")
                if self.limits.idle_memory_mb is not None:
                    cur.execute(f"SET GLOBAL memory_limit = '{self._sql_memory_mb()}MiB'")
            first = self._threads_raised_for is None
            self._threads_raised_for = con
        if first:
            threading.Thread(target=self._fewer_threads_when_idle, name="sql-threads", daemon=True).start()

    def _sql_memory_mb(self) -> int:
        assert self.limits.idle_memory_mb is not None
        return int(self.limits.idle_memory_mb) + int(self.limits.memory_mb)

    def _fewer_threads_when_idle(self) -> None:
        while True:
            time.sleep(_THREADS_IDLE_S / 4)
            with self._threads_lock:
                with self._lock:
                    idle = self._running == 0 and time.monotonic() - self._last_sql > _THREADS_IDLE_S
                if not idle:
                    continue
                con = self._threads_raised_for
                if con is not None and con is self.store.con:
                    if self.limits.idle_memory_mb is not None and not self.store.set_memory_limit(
                            f"{int(self.limits.idle_memory_mb)}MiB"):
                        continue   # more than the usual limit is still pinned: try again shortly
                    if self.limits.threads > self.limits.idle_threads:
                        with contextlib.suppress(duckdb.Error):
                            with con.cursor() as cur:
                                cur.execute(f"SET GLOBAL threads = {int(self.limits.idle_threads)}")
                self._threads_raised_for = None
                return

    # ----- one query
    def open(self, query: str, time_limit_ms: int | None = None, batch_rows: int = 122_880,
             scope: Any = None) -> "SqlQuery":
        """Check and start `query`. The caller holds a slot (`acquire`); the returned query
        releases it when closed, and so does a failure here."""
        try:
            try:
                functions = sandbox.check(query)
            except sandbox.SqlRefused as e:
                raise refused(e.message) from None
            limit = self.limits.time_limit_ms if time_limit_ms is None else min(time_limit_ms, self.limits.time_limit_ms)
            if self.store.con is not self._prepared_for:
                with self._lock:
                    if self.store.con is not self._prepared_for:
                        self.prepare(self._latest_table)
            self._more_threads()
            cur = self._checkout()
        except BaseException:
            self.release()
            raise
        return SqlQuery(self, cur, query, limit, batch_rows, scope,
                        hash_aggregate_only=not functions.isdisjoint(HOLISTIC_AGGREGATES))

    def _checkout(self) -> _Cursor:
        """A cursor that sees every write already answered: a kept one, else a new one."""
        with self._lock:
            con = self.store.con
            kept = self._idle.pop() if self._idle and con is self._prepared_for else None
        if kept is None:
            return _Cursor(self.store.cursor())
        # What Store.cursor() waits for before handing out a new cursor (read-your-writes).
        self.store.visibility.wait(30.0)
        return kept

    def _checkin(self, c: _Cursor) -> None:
        """Keep a cursor whose query ended cleanly and whose transaction is rolled back."""
        with self._lock:
            if self.store.con is self._prepared_for and len(self._idle) < self.limits.max_concurrent:
                self._idle.append(c)
                return
        with contextlib.suppress(Exception):
            c.cur.close()


def _run(cur: duckdb.DuckDBPyConnection, query: str,
         batch_rows: int) -> tuple[list[tuple[str, Any]], pa.RecordBatchReader]:
    """Run `query` on `cur`: its columns (name, DuckDB type) and a reader that streams its
    record batches. DuckDB's relation API (`cur.sql(query).to_arrow_reader()`) parses and
    binds a query once to build the relation and again to run it; this is the one call
    underneath it that runs the text directly (the package's own `_seam` module; DuckDB is
    pinned in constraints.txt, and the relation API is the fallback)."""
    submit = getattr(getattr(duckdb, "_seam", None), "submit", None)
    if submit is not None:
        result = submit(cur, query, None, "stream", batch_rows)
        # (Read before the reader: taking the reader hands the rows over and closes the result.)
        columns = [(d[0], d[1]) for d in result.description]
        return columns, result.arrow_reader()
    rel = cur.sql(query)
    return list(zip(rel.columns, rel.types)), rel.to_arrow_reader(batch_rows)


class SqlQuery:
    """One running query: its cursor, snapshot, columns and log position.

    Thread use: `next_batch` runs on a worker thread; `cancel` may come from any thread (a
    client that went away) and interrupts DuckDB; the cursor is closed by whichever side
    finishes last, never while the other is inside DuckDB.
    """

    def __init__(self, engine: SqlEngine, cursor: _Cursor, query: str, time_limit_ms: int,
                 batch_rows: int, scope: Any = None, hash_aggregate_only: bool = False) -> None:
        self.engine = engine
        self.batch_rows = batch_rows
        self.time_limit_ms = time_limit_ms
        self.started = time.monotonic()
        self._cursor = cursor
        self._cur = cursor.cur
        self._guard = threading.Lock()
        self._busy = False
        self._closed = False
        self._cancelled = False
        self._failed = False
        self._out_of_memory = False
        self._reader: pa.RecordBatchReader | None = None
        try:
            # The caller's readable experiments (runledger.auth.access.ReadScope; None: all, with
            # authentication off), read by every public view (query.sql.views). Our own
            # statements in one round trip.
            wanted = ("all", ()) if scope is None else (str(scope.mode), tuple(str(i) for i in scope.ids))
            setup = cursor.setup(wanted, time_limit_ms, engine.limits.memory_mb, hash_aggregate_only)
            # The log position: the offsets the projector's last commit stored, when no commit
            # began between reading them and the snapshot; else read from the snapshot itself.
            # DuckDB takes a transaction's snapshot when a statement first reads the catalog:
            # `SET schema` does (it looks the schema up), so the snapshot is taken here, before
            # the caller's query runs, and the query itself is parsed, bound and planned once,
            # when it runs (binding it first only to take the snapshot and learn its columns
            # was a second parse and bind: ~0.4 ms of a 1.5 ms query). Each statement costs
            # ~0.1-0.25 ms, and reading the offsets table was half a trivial query's time.
            mark = engine.store.committed_offsets(engine.topic)
            self._cur.execute("; ".join(p for p in (setup, "BEGIN TRANSACTION READ ONLY",
                                                    f"SET schema = '{cursor.schema}'") if p))
            if mark is not None and engine.store.commits_begun() == mark[0]:
                applied = mark[1]
            else:
                applied = dict(self._cur.execute('SELECT "partition", next_offset FROM main.consumer_offsets '
                                                 f"WHERE topic = {_literal(engine.topic)}").fetchall())
            self.log_position = {str(p): applied.get(p, 0) for p in sorted({*engine.partitions, *applied})}
            self._query = query
            # The answer's columns (name, DuckDB type), known once the query runs.
            self.columns: list[dict[str, str]] = []
            engine.memory_guard.watch(engine.store.con, self)
        except BaseException as e:
            self._failed = True
            self._close()
            raise translate(e, time_limit_ms) from None

    @property
    def elapsed_ms(self) -> float:
        return round((time.monotonic() - self.started) * 1000, 3)

    def next_batch(self) -> pa.RecordBatch | None:
        """The next record batch (None at the end). Errors are translated to SqlError; after
        an error or the end the query is closed."""

        def read() -> pa.RecordBatch | None:
            try:
                return self._open_reader().read_next_batch()
            except StopIteration:
                return None

        return self._while_busy(read)

    @property
    def schema(self) -> pa.Schema:
        """The answer's Arrow schema (starts the query; call on a worker thread)."""
        if self._reader is None:
            self._while_busy(self._open_reader)
        assert self._reader is not None
        return self._reader.schema

    def _open_reader(self) -> pa.RecordBatchReader:
        if self._reader is None:
            columns, self._reader = _run(self._cur, self._query, self.batch_rows)
            self.columns = [{"name": name, "type": str(kind)} for name, kind in columns]
        return self._reader

    def _while_busy(self, step: Callable[[], _T]) -> _T:
        """Run one step of the query marked busy (a cancel then waits for it to end instead of
        closing the cursor under it); any error closes the query and becomes a SqlError."""
        with self._guard:
            if self._out_of_memory:
                error: BaseException | None = out_of_memory()
            elif self._closed or self._cancelled:
                error = SqlError("The query was cancelled.", "CANCELLED")
            else:
                error, self._busy = None, True
        if error is not None:
            self.close()
            raise error
        try:
            return step()
        except BaseException as e:
            self._failed = True
            self._busy_done()
            self.close()
            raise (out_of_memory() if self._out_of_memory else translate(e, self.time_limit_ms)) from None
        finally:
            self._busy_done()

    def _busy_done(self) -> None:
        with self._guard:
            self._busy = False
            close_now = self._cancelled and not self._closed
        if close_now:
            self._close()

    def cancel(self) -> None:
        """Stop the query from any thread: DuckDB is interrupted now; the cursor closes once
        the worker thread is out of DuckDB."""
        with self._guard:
            if self._closed:
                return
            self._cancelled = True
            busy = self._busy
            # Under the guard: once `_close` has run, the cursor may serve another query.
            with contextlib.suppress(Exception):
                self._cur.interrupt()
        if not busy:
            self._close()

    def close(self) -> None:
        """End the query: a finished one returns its cursor for reuse; one still running is
        cancelled."""
        with self._guard:
            finished = not self._busy and not self._closed
        if finished:
            self._close()
        else:
            self.cancel()

    def stop_for_memory(self) -> None:
        """Called by the memory guard: the query's intermediates went past the SQL budget."""
        with self._guard:
            if self._closed:
                return
            self._out_of_memory = True
            with contextlib.suppress(Exception):
                self._cur.interrupt()

    def _close(self) -> None:
        with self._guard:
            if self._closed:
                return
            self._closed = True
            # A cursor that was interrupted, or whose query failed, is not reused: only one
            # that ended cleanly is known to be in a plain state.
            reusable = not (self._cancelled or self._failed or self._out_of_memory)
        self.engine.memory_guard.forget(self)
        self._reader = None
        try:
            self._cur.execute("ROLLBACK")
        except Exception:
            reusable = False
        if reusable:
            self.engine._checkin(self._cursor)
        else:
            with contextlib.suppress(Exception):
                self._cur.close()
        self.engine.release()


def out_of_memory() -> SqlError:
    return SqlError("The query needed more memory than the SQL limit (RUNLEDGER_SQL_MEMORY_MB) allows and "
                    "was stopped; aggregate more or select fewer columns.", "QUERY_OUT_OF_MEMORY")


def translate(e: BaseException, time_limit_ms: int) -> BaseException:
    """A DuckDB failure as the caller should see it."""
    if isinstance(e, RunledgerError):
        return e
    if isinstance(e, duckdb.InterruptException):
        if "maximum execution time" in str(e):
            return SqlError(f"The query ran longer than its time limit of {time_limit_ms} ms "
                            "(RUNLEDGER_SQL_TIME_LIMIT_MS) and was stopped.", "QUERY_TIMEOUT")
        return SqlError("The query was cancelled.", "CANCELLED")
    if isinstance(e, duckdb.OutOfMemoryException):
        return out_of_memory()
    if isinstance(e, _QUERY_ERRORS):
        return refused(f"The query failed: {str(e).strip()}")
    if isinstance(e, RunledgerError):
        return e
    if isinstance(e, duckdb.Error):
        internal = InternalError(f"SQL query failed: {type(e).__name__}")
        internal.__cause__ = e
        return internal
    return e
