"""Checkpoints of a run's folded state, so an as-of read folds only from the nearest one.

A checkpoint is a copy of one run's rows in the live read model (the run-scoped tables in
`RUN_TABLES`) together with the log position they reflect: the run's last applied event then
(partition, offset and event id). The rows are the fold's own output, written by the projector,
so starting an as-of fold from them is the same as folding every earlier event of the run again
(query/as_of.py; docs/audit.md, "As-of reads"). Nothing here decides a tracking rule.

Taking one: the projector's store reports each committed batch (`committed`, on its commit
thread: a counter per run, nothing else), and once a run has had enough events or metric
points since its last checkpoint, the checkpointer's own thread copies the run's rows in ONE
DuckDB transaction that also reads the position from `event_log`. Rows and the event log are
committed together by the projector, so the snapshot's rows are exactly the fold of the run's
applied events up to that position, whatever has happened since. The thread spends at most
`BUDGET` of its time working, so it never competes with the projector for long.

Kept apart from the read model's public tables, in the schema `SCHEMA` of the same file: the
SQL API cannot name them, `runledger verify` does not compare them (a replay checkpoints at
other positions), and when the file is rebuilt they go with it. A checkpoint is used only if
`event_log` still holds its event at its position; one taken before a rewind is never folded
across it (as_of.py), since a rewind recomputes latest values from points a checkpoint does
not copy.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable

import duckdb
import pyarrow as pa

from runledger.ingest.contract.events import RUN_EVENTS
from runledger.projector.fold import BatchChanges
from runledger.projector.store import Store

log = logging.getLogger(__name__)

SCHEMA = "audit_checkpoints"
FORMAT = 1
# The tables that hold a run's state as runs/get and the as-of reads render it, and the column
# naming the run (artifacts: its owner, of type 'run'). Metric points are not copied: only the
# latest values are needed to go on folding, except across a rewind (see as_of.py).
RUN_TABLES = {"runs": "run_id", "params": "run_id", "tags": "run_id", "latest_points": "run_id",
              "run_datasets": "run_id", "run_model_inputs": "run_id", "run_model_outputs": "run_id",
              "artifacts": "owner_id"}
_EXTRA_FILTER = {"artifacts": " AND owner_type = 'run'"}
_RUN_EVENT_TYPES = sorted(RUN_EVENTS)

# A run is checkpointed again after this many applied events or metric points since its last
# checkpoint, and never after fewer events than its last checkpoint had rows: a checkpoint
# never copies more than it saves folding, so they take at most about as much room as the
# run's events.
DEFAULT_EVENTS = 200
DEFAULT_POINTS = 50_000
# Runs counted at once, at most, before the counts of those far from a checkpoint are dropped.
_MAX_COUNTED = 100_000
# Share of its thread's time the checkpointer may spend working, in CPU time (it sleeps the rest).
BUDGET = 0.05


@dataclass(frozen=True)
class Checkpoint:
    cp: int
    run_id: str
    partition: int
    offset: int
    event_id: str
    tables: tuple[str, ...]      # the tables it holds rows of


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the checkpoint tables, or re-create them when their columns no longer mirror the
    read model's (a new build: old checkpoints are dropped, as-of reads fold from the start)."""
    with con.cursor() as cur:
        fmt = cur.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                          "AND schema_name = ? AND table_name = 'format'", [SCHEMA]).fetchone()
        if fmt and fmt[0] and _current(cur):
            return
        cur.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        cur.execute(f"CREATE SCHEMA {SCHEMA}")
        cur.execute(f"CREATE TABLE {SCHEMA}.format (version INTEGER NOT NULL)")
        cur.execute(f"INSERT INTO {SCHEMA}.format VALUES ({FORMAT})")
        cur.execute(f"""CREATE TABLE {SCHEMA}.checkpoints (
            cp BIGINT PRIMARY KEY, run_id VARCHAR NOT NULL, "partition" INTEGER NOT NULL,
            "offset" BIGINT NOT NULL, event_id VARCHAR NOT NULL, row_count BIGINT NOT NULL,
            tables VARCHAR[] NOT NULL)""")
        for table in RUN_TABLES:
            cur.execute(f'CREATE TABLE {SCHEMA}."{table}" AS SELECT NULL::BIGINT AS cp, * FROM main."{table}" '
                        "WITH NO DATA")


def _columns(cur: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[tuple[str, str]]:
    return cur.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() "
                       "AND schema_name = ? AND table_name = ? ORDER BY column_index", [schema, table]).fetchall()


def _current(cur: duckdb.DuckDBPyConnection) -> bool:
    row = cur.execute(f"SELECT max(version) FROM {SCHEMA}.format").fetchone()
    if not row or row[0] != FORMAT:
        return False
    return all(_columns(cur, SCHEMA, t)[1:] == _columns(cur, "main", t) for t in RUN_TABLES)


def take(con: duckdb.DuckDBPyConnection, run_id: str, cp: int) -> int | None:
    """Checkpoint `run_id` as the read model holds it now, as checkpoint number `cp`; the
    number of rows copied, or None when there is nothing new to checkpoint (or the run's events
    are not all in one partition, which as-of reads do not fold either)."""
    with con.cursor() as cur:
        cur.execute("BEGIN TRANSACTION")
        try:
            copied = _take(cur, run_id, cp)
            cur.execute("COMMIT" if copied is not None else "ROLLBACK")
            return copied
        except BaseException:
            cur.execute("ROLLBACK")
            raise


def _take(cur: duckdb.DuckDBPyConnection, run_id: str, cp: int) -> int | None:
    row = cur.execute(
        'SELECT count(DISTINCT "partition"), any_value("partition"), max("offset"), arg_max(event_id, "offset") '
        "FROM event_log WHERE run_id = ? AND error_code IS NULL AND type IN (SELECT unnest(?::VARCHAR[]))",
        [run_id, _RUN_EVENT_TYPES]).fetchone()
    if not row or row[0] != 1:
        return None
    _, partition, offset, event_id = row
    last = cur.execute(f'SELECT max("offset") FROM {SCHEMA}.checkpoints WHERE run_id = ?', [run_id]).fetchone()
    if last and last[0] is not None and last[0] >= offset:
        return None
    total, tables = 0, []
    for table, column in RUN_TABLES.items():
        n = cur.execute(f'INSERT INTO {SCHEMA}."{table}" SELECT ?, * FROM main."{table}" '
                        f"WHERE {column} = ?{_EXTRA_FILTER.get(table, '')}", [cp, run_id]).fetchone()
        if n and n[0]:
            total += n[0]
            tables.append(table)
    if "runs" not in tables:
        return None   # not created (yet) in this snapshot
    cur.execute(f"INSERT INTO {SCHEMA}.checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)",
                [cp, run_id, partition, offset, event_id, total, tables])
    return total


def latest_at_or_before(cur: duckdb.DuckDBPyConnection, run_id: str, partition: int, offset: int,
                        not_before: int) -> Checkpoint | None:
    """The run's newest checkpoint at a position in [not_before, offset] of its partition whose
    event `event_log` still holds there, applied (else the checkpoints belong to another log)."""
    if not _exists(cur):
        return None
    rows = cur.execute(
        f'SELECT cp, "offset", event_id, tables FROM {SCHEMA}.checkpoints WHERE run_id = ? AND "partition" = ? '
        f'AND "offset" BETWEEN ? AND ? ORDER BY "offset" DESC LIMIT 1',
        [run_id, partition, not_before, offset]).fetchall()
    for cp, at, event_id, tables in rows:
        found = cur.execute('SELECT "partition", "offset", error_code FROM event_log WHERE event_id = ?',
                            [event_id]).fetchone()
        if found is None or tuple(found) != (partition, at, None):
            log.warning("checkpoint %s of run %s names event %s at %s:%s, which the event log does not hold there; "
                        "folding from the start", cp, run_id, event_id, partition, at)
            return None
        return Checkpoint(cp, run_id, partition, at, event_id, tuple(tables))
    return None


def _exists(cur: duckdb.DuckDBPyConnection) -> bool:
    row = cur.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                      "AND schema_name = ? AND table_name = 'checkpoints'", [SCHEMA]).fetchone()
    return bool(row and row[0])


def rows_of(cur: duckdb.DuckDBPyConnection, checkpoint: Checkpoint) -> dict[str, pa.Table]:
    """The checkpoint's rows per table, in the read model's columns."""
    return {table: cur.execute(f'SELECT * EXCLUDE (cp) FROM {SCHEMA}."{table}" WHERE cp = ?',
                               [checkpoint.cp]).to_arrow_table()
            for table in checkpoint.tables}


class Checkpointer:
    """Counts each run's applied events and points as batches commit, and checkpoints the runs
    that passed a threshold on its own thread (module docstring)."""

    def __init__(self, store: Store, events: int = DEFAULT_EVENTS, points: int = DEFAULT_POINTS) -> None:
        self.store = store
        self.events = events
        self.points = points
        self._lock = threading.Lock()
        self._since: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])   # run -> [events, points]
        self._rows: dict[str, int] = {}           # run -> rows of its last checkpoint
        self._due: dict[str, None] = {}           # runs to checkpoint, in the order they became due
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._next_cp = 1
        self._con: duckdb.DuckDBPyConnection | None = None   # the connection the schema was made on
        self.taken = 0

    @property
    def enabled(self) -> bool:
        return self.events > 0 or self.points > 0

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="audit-checkpoints", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    # ----- on the projector's commit thread: count, nothing more
    def committed(self, changes: BatchChanges) -> None:
        if not self.enabled:
            return
        counts: dict[str, list[int]] = {}
        for entry in changes.log:
            if entry.run_id is not None and entry.error_code is None and entry.type in RUN_EVENTS:
                c = counts.get(entry.run_id)
                if c is None:
                    counts[entry.run_id] = [1, 0]
                else:
                    c[0] += 1
        for chunk in changes.metrics.chunks:
            if chunk.num_rows:
                run_id = chunk.column(0)[0].as_py()
                counts.setdefault(run_id, [0, 0])[1] += chunk.num_rows
        if not counts:
            return
        with self._lock:
            if len(self._since) > _MAX_COUNTED:
                self._forget_small()
        self._count((run_id, events, points) for run_id, (events, points) in counts.items())

    def _forget_small(self) -> None:
        """Drop the counts of runs far from their next checkpoint, so that many runs with a few
        events each do not grow this map for the server's lifetime (they start counting again)."""
        far = [r for r, (e, p) in self._since.items()
               if (self.events <= 0 or 2 * e < self.events) and (self.points <= 0 or 2 * p < self.points)]
        for run_id in far:
            del self._since[run_id]

    def _is_due(self, run_id: str, since: list[int]) -> bool:
        by_events = self.events > 0 and since[0] >= max(self.events, self._rows.get(run_id, 0))
        return by_events or (self.points > 0 and since[1] >= self.points)

    # ----- the checkpointer's thread
    def _run(self) -> None:
        try:
            self._prepare()
            self._count_unsaved()
        except Exception:  # noqa: BLE001 - checkpoints only make as-of reads faster; never stop the server
            log.exception("audit checkpoints: could not prepare; as-of reads fold from the start")
        while not self._stopping:
            self._wake.wait(timeout=5.0)
            self._wake.clear()
            while not self._stopping:
                with self._lock:
                    if not self._due:
                        break
                    run_id = next(iter(self._due))
                    del self._due[run_id]
                    self._since.pop(run_id, None)
                # CPU time, not wall time: on a busy machine a checkpoint waits for the CPU as
                # much as it uses it, and only what it uses should slow the next one.
                started = time.thread_time()
                try:
                    self._take(run_id)
                except Exception as e:  # noqa: BLE001
                    if self.store.report_if_corrupt(e):
                        break
                    log.warning("audit checkpoints: checkpointing run %s failed: %r", run_id, e)
                spent = time.thread_time() - started
                time.sleep(min(spent * (1 - BUDGET) / BUDGET, 2.0))

    def _prepare(self) -> None:
        con = self.store.con
        if con is self._con:
            return
        ensure_schema(con)
        with con.cursor() as cur:
            row = cur.execute(f"SELECT max(cp) FROM {SCHEMA}.checkpoints").fetchone()
            self._rows = dict(cur.execute(
                f"SELECT run_id, arg_max(row_count, cp) FROM {SCHEMA}.checkpoints GROUP BY run_id").fetchall())
        self._next_cp = (row[0] or 0) + 1 if row else 1
        self._con = con

    def _take(self, run_id: str) -> None:
        self._prepare()   # the store may have been rebuilt into a new file meanwhile
        assert self._con is not None
        copied = take(self._con, run_id, self._next_cp)
        if copied is not None:
            self._next_cp += 1
            self._rows[run_id] = copied
            self.taken += 1

    def _count_unsaved(self) -> None:
        """Runs with many events since their last checkpoint (or none) when the server starts:
        after a restart, or on a file built by `runledger replay`, they become due at once."""
        with self.store.con.cursor() as cur:
            rows = cur.execute(f"""
                SELECT e.run_id, count(*) AS events,
                       coalesce(sum(CASE WHEN e.type IN ('MetricsLogged', 'RunBatchLogged')
                                    THEN TRY_CAST(json_extract(e.payload, '$.points') AS BIGINT) END), 0) AS points
                FROM event_log e
                LEFT JOIN (SELECT run_id, max("offset") AS o FROM {SCHEMA}.checkpoints GROUP BY run_id) c USING (run_id)
                WHERE e.run_id IS NOT NULL AND e.error_code IS NULL AND e.type IN (SELECT unnest(?::VARCHAR[]))
                  AND e."offset" > coalesce(c.o, -1)
                GROUP BY e.run_id""", [_RUN_EVENT_TYPES]).fetchall()
        self._count(rows)

    def _count(self, counts: Iterable[tuple[str, int, int]]) -> None:
        """Add (run, events, points) to each run's count since its checkpoint; wake the taker
        when one became due."""
        woke = False
        with self._lock:
            for run_id, events, points in counts:
                since = self._since[run_id]
                since[0] += events
                since[1] += points
                if self._is_due(run_id, since):
                    self._due[run_id] = None
                    woke = True
        if woke:
            self._wake.set()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"taken": self.taken, "due": len(self._due)}
