"""The past of a run, folded again from the log (docs/design.md, invariant 10).

An as-of read finds in `event_log` the positions of the run's applied events up to the
moment asked for (and of its experiment's own events, which decide whether it reads as
deleted), reads those records back from Kafka, folds them with the projector's `fold_batch`
into a throwaway in-memory DuckDB through the projector's own `Store.apply`, and renders the
run with the reader's `get_run`: the same code that built and serves the live read model, so
the answer is what runs/get answered then. Rejected events are skipped: a rejection changes
nothing (fold.py), so folding only the applied ones gives the same tables.

Two shortcuts, both of them the fold's own output (docs/audit.md, "How fast"):
- a checkpoint (query/checkpoints.py): the run's rows as the projector had folded them up to
  one of its events. The fold starts from the newest checkpoint at or before the moment, and
  only the run's later events are read back and folded. A checkpoint is never folded across a
  rewind: a rewind recomputes latest values from the run's points, which checkpoints do not
  copy, so a read past a rewind starts from a checkpoint taken after it, or from the start.
- the live read model, when nothing of the run or its experiment was applied after the moment:
  the answer is then what runs/get answers now, read in the same snapshot as the plan.

A moment is a time (ingest time, Unix ms: everything appended up to then) or a log position
(everything of the run's partition up to and including it).
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
from dataclasses import dataclass, replace
from typing import Any, Callable

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from runledger.ingest.errors import InvalidParameterValue, ResourceDoesNotExist
from runledger.ingest.contract.events import EXPERIMENT_EVENTS, RUN_EVENTS
from runledger.projector.consumer import decode_records
from runledger.projector.fold import FoldState, LogRecord, MetricRows, fold_batch
from runledger.projector.log_reader import LogReader
from runledger.projector.replay import table_names
from runledger.projector.store import Store
from runledger.query import checkpoints, reader
from runledger.query.audit_trail import entries_between, format_position


@dataclass(frozen=True)
class Moment:
    time: int | None = None                       # ingest time, Unix ms, inclusive
    position: tuple[int, int] | None = None       # (partition, offset), inclusive

    def describe(self) -> str:
        return f"position {format_position(*self.position)}" if self.position else f"time {self.time}"


@dataclass
class _Cut:
    """The run's events up to a moment: how many of them, the time bound for its experiment's
    events, and the last run-partition offset included (None: none)."""

    count: int
    time: int
    offset: int | None


@dataclass
class _RunEvents:
    """The run's applied events in its partition, in log order."""

    run_id: str
    experiment_id: str
    partition: int
    offsets: list[int]
    times: pa.Array               # ingest times (nullable), aligned with `offsets`
    rewinds: list[int]            # offsets of its RunRewound events

    def cut(self, cur: duckdb.DuckDBPyConnection, moment: Moment) -> _Cut:
        if moment.position is not None:
            partition, offset = moment.position
            if partition != self.partition:
                raise InvalidParameterValue(
                    f"Position {format_position(partition, offset)} is not in run {self.run_id}'s partition "
                    f"{self.partition}: use a position from the run's trail.")
            count = bisect.bisect_right(self.offsets, offset)
            row = cur.execute('SELECT max(ingest_time) FROM event_log WHERE "partition" = ? AND "offset" <= ?',
                              [partition, offset]).fetchone()
            time = row[0] if row and row[0] is not None else -1
            return _Cut(count, time, self.offsets[count - 1] if count else None)
        assert moment.time is not None
        # A prefix of the partition, up to its first event appended after the moment (as
        # `runledger replay --until` cuts each partition).
        first_after = pc.index(pc.greater(self.times, pa.scalar(moment.time, pa.int64())), True).as_py()
        count = len(self.offsets) if first_after < 0 else first_after
        return _Cut(count, moment.time, self.offsets[count - 1] if count else None)

    def positions(self, after: int | None, upto: int | None) -> list[tuple[int, int]]:
        """Positions of the run's events in (after, upto]."""
        if upto is None:
            return []
        lo = 0 if after is None else bisect.bisect_right(self.offsets, after)
        hi = bisect.bisect_right(self.offsets, upto)
        return [(self.partition, o) for o in self.offsets[lo:hi]]

    def base(self, cur: duckdb.DuckDBPyConnection, upto: _Cut, through: _Cut) -> checkpoints.Checkpoint | None:
        """The newest checkpoint at or before `upto` with no rewind of the run after it up to
        `through` (module docstring)."""
        if upto.offset is None or through.offset is None:
            return None
        i = bisect.bisect_right(self.rewinds, through.offset)
        not_before = self.rewinds[i - 1] if i else -1
        if not_before > upto.offset:
            return None
        return checkpoints.latest_at_or_before(cur, self.run_id, self.partition, upto.offset, not_before)


def _run_events(cur: duckdb.DuckDBPyConnection, run_id: str) -> _RunEvents:
    created = cur.execute(
        'SELECT "partition", experiment_id FROM event_log WHERE run_id = ? AND type = \'RunCreated\' '
        'AND error_code IS NULL ORDER BY "partition", "offset" LIMIT 1', [run_id]).fetchone()
    if created is None:
        raise ResourceDoesNotExist(f"Run with id={run_id} not found")
    partition, experiment_id = created
    rows = cur.execute(
        'SELECT "offset", ingest_time, type = \'RunRewound\' AS rewind FROM event_log '
        'WHERE run_id = ? AND "partition" = ? AND error_code IS NULL AND type IN (SELECT unnest(?::VARCHAR[])) '
        'ORDER BY "offset"', [run_id, partition, sorted(RUN_EVENTS)]).to_arrow_table()
    offsets = rows.column("offset").to_pylist()
    rewinds = [o for o, r in zip(offsets, rows.column("rewind").to_pylist()) if r]
    return _RunEvents(run_id, experiment_id, partition, offsets, rows.column("ingest_time").combine_chunks(), rewinds)


def _experiment_events(cur: duckdb.DuckDBPyConnection, experiment_id: str,
                       time: int) -> tuple[list[tuple[int, int]], bool]:
    """Positions of the experiment's applied events up to `time`, and whether it has others."""
    rows = cur.execute(
        'SELECT "partition", "offset", ingest_time FROM event_log WHERE experiment_id = ? AND error_code IS NULL '
        'AND type IN (SELECT unnest(?::VARCHAR[])) ORDER BY "partition", "offset"',
        [experiment_id, sorted(EXPERIMENT_EVENTS)]).fetchall()
    upto = [(p, o) for p, o, t in rows if t is not None and t <= time]
    return upto, len(upto) < len(rows)


class _Replica:
    """A throwaway read model in memory, written by the projector's own store code. Emptied
    stores are kept for the next read (creating the schema costs more than emptying it)."""

    _idle: list[Store] = []
    _IDLE_MAX = 2

    def __init__(self, experiment_id: str, keep_points: bool = True) -> None:
        self.store = self._idle.pop() if self._idle else Store(":memory:", threads=1)
        self.experiment_id = experiment_id
        self.keep_points = keep_points
        self.restored = False

    def restore(self, rows: dict[str, pa.Table]) -> None:
        """Start from a checkpoint's rows (query/checkpoints.py) instead of an empty model."""
        con = self.store.con
        for table, data in rows.items():
            con.register("_checkpoint_rows", data)
            try:
                con.execute(f'INSERT INTO "{table}" SELECT * FROM _checkpoint_rows')
            finally:
                con.unregister("_checkpoint_rows")
        self.restored = True

    def fold(self, records: list[LogRecord], first: bool) -> Any:
        if first:
            # Restored rows are loaded as the projector loads a batch's state; the rest of the
            # state starts empty.
            state = self.store.load_state(records) if self.restored else FoldState()
            # The experiment's id was allocated in log order among all experiments; only its
            # own events are folded here, so the fold resumes the allocation at that id.
            state.next_experiment_id = int(self.experiment_id) if self.experiment_id.isdigit() else 1
        else:
            state = self.store.load_state(records)
        changes = fold_batch(state, records).changes
        # What is read back here is the run, never this replica's audit rows (the trail comes
        # from the live event_log); and runs/get shows latest metrics only, which the fold
        # computed from the points, so those need not be written either (unless a rewind must
        # recompute from them).
        skip_points = not self.keep_points and not changes.rewinds
        self.store.apply(replace(changes, log=[], metrics=MetricRows() if skip_points else changes.metrics),
                         "as-of", {})
        return changes

    def run(self, run_id: str, latest_table: str) -> dict[str, Any] | None:
        with self.store.con.cursor() as cur:
            found = reader.get_run(cur, run_id, latest_table)
        return found if isinstance(found, dict) or found is None else None

    def close(self) -> None:
        """Hand the store back for emptying on the cleaner's thread: the answer need not wait."""
        store, self.store = self.store, None  # type: ignore[assignment]
        _cleaner.submit(self._empty, store)

    @classmethod
    def _empty(cls, store: Store) -> None:
        if len(cls._idle) >= cls._IDLE_MAX:
            store.close()
            return
        try:
            con = store.con
            con.execute("BEGIN TRANSACTION")
            for name in table_names(con):
                if name != "schema_info":
                    con.execute(f'DELETE FROM "{name}"')
            con.execute("COMMIT")
        except Exception:  # noqa: BLE001 - a store that cannot be emptied is not reused
            store.close()
            return
        cls._idle.append(store)


# One thread empties used replicas, so that a read answers as soon as it has rendered.
_cleaner = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="as-of-cleaner")


async def _records(log: LogReader, positions: list[tuple[int, int]]) -> list[LogRecord]:
    raw = await log.read(positions)
    return await asyncio.to_thread(decode_records, raw)


def _snapshot(store: Store) -> duckdb.DuckDBPyConnection:
    """A cursor in a read transaction: the plan, the checkpoint it names and (for the live
    shortcut) the rendered run all come from one state of the read model."""
    cur = store.cursor()
    cur.execute("BEGIN TRANSACTION")
    return cur


def _end(cur: duckdb.DuckDBPyConnection) -> None:
    try:
        cur.execute("ROLLBACK")
    finally:
        cur.close()


@dataclass
class _Fold:
    """What to fold for one moment: a checkpoint's rows to start from, then these positions."""

    events: _RunEvents
    cut: _Cut
    base: checkpoints.Checkpoint | None
    rows: dict[str, pa.Table]
    positions: list[tuple[int, int]]
    run_events: int            # how many of `positions` are the run's own events


def _plan(store: Store, run_id: str, moment: Moment, use_checkpoint: bool,
          live: Callable[[duckdb.DuckDBPyConnection], Any] | None) -> tuple[bool, Any]:
    """(True, `live(cursor)`) when the read model now holds exactly the run as of `moment`
    (and `live` is given), else (False, the `_Fold` that reaches it)."""
    cur = _snapshot(store)
    try:
        events = _run_events(cur, run_id)
        cut = events.cut(cur, moment)
        if cut.count == 0:
            raise ResourceDoesNotExist(f"Run with id={run_id} did not exist at {moment.describe()}")
        exp_positions, exp_later = _experiment_events(cur, events.experiment_id, cut.time)
        if live is not None and cut.count == len(events.offsets) and not exp_later:
            return True, live(cur)
        base = events.base(cur, cut, cut) if use_checkpoint else None
        rows = checkpoints.rows_of(cur, base) if base is not None else {}
    finally:
        _end(cur)
    run_positions = events.positions(base.offset if base else None, cut.offset)
    return False, _Fold(events, cut, base, rows, exp_positions + run_positions, len(run_positions))


async def _past(store: Store, log: LogReader, run_id: str, moment: Moment, keep_points: bool,
                use_checkpoint: bool, live: Callable[[duckdb.DuckDBPyConnection], Any] | None,
                past: Callable[[_Replica], Any], basis: dict[str, Any] | None = None) -> Any:
    """`live(cursor)` when the read model now holds exactly the run as of `moment` (and `live`
    is given), else `past(replica)` on a replica folded up to `moment`. `basis`, if given, is
    told where the answer started from (`describe_basis`)."""
    is_live, plan = await asyncio.to_thread(_plan, store, run_id, moment, use_checkpoint, live)
    if basis is not None:
        basis["live"] = is_live
        basis["checkpoint"] = None if is_live or plan.base is None else (plan.base.partition, plan.base.offset)
        basis["folded"] = 0 if is_live else plan.run_events
    if is_live:
        return plan
    records = await _records(log, plan.positions)

    def fold() -> Any:
        replica = _Replica(plan.events.experiment_id, keep_points)
        try:
            if plan.base is not None:
                replica.restore(plan.rows)
            replica.fold(records, True)
            return past(replica)
        finally:
            replica.close()
    return await asyncio.to_thread(fold)


def _live_run(run_id: str, latest_table: str) -> Callable[[duckdb.DuckDBPyConnection], dict[str, Any] | None]:
    def render(cur: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
        found = reader.get_run(cur, run_id, latest_table)
        return found if isinstance(found, dict) or found is None else None
    return render


def describe_basis(basis: dict[str, Any]) -> str:
    """Where an as-of answer started (the X-Runledger-As-Of-Basis header): 'live', or
    'checkpoint <p:o>; folded N events', or 'log start; folded N events' (N: the run's own
    events folded; its experiment's few are folded too)."""
    if basis.get("live"):
        return "live"
    start = basis.get("checkpoint")
    where = f"checkpoint {format_position(*start)}" if start else "log start"
    return f"{where}; folded {basis.get('folded', 0)} events"


async def run_as_of(store: Store, log: LogReader, run_id: str, moment: Moment, latest_table: str,
                    *, shortcuts: bool = True, basis: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run as runs/get answered at `moment` (MLflow's Run JSON). `shortcuts=False` folds
    every event from the run's creation on (tests prove the shortcuts give the same answer)."""
    run = await _past(store, log, run_id, moment, False, shortcuts, _live_run(run_id, latest_table) if shortcuts else None,
                      lambda replica: replica.run(run_id, latest_table), basis)
    if run is None:
        raise ResourceDoesNotExist(f"Run with id={run_id} did not exist at {moment.describe()}")
    return run


def run_artifacts(cur: duckdb.DuckDBPyConnection, run_id: str) -> list[dict[str, Any]]:
    """The files of the run's artifact folder as the `artifacts` table holds them."""
    return [{"path": path, "size": size, "sha256": digest, "logged_time": logged, "actor": actor or None,
             "event_id": event_id}
            for path, size, digest, logged, actor, event_id in cur.execute(
                "SELECT path, size, sha256, logged_time, actor, event_id FROM artifacts "
                "WHERE owner_id = ? AND owner_type = 'run' ORDER BY path", [run_id]).fetchall()]


async def artifacts_as_of(store: Store, log: LogReader, run_id: str, moment: Moment) -> list[dict[str, Any]]:
    """The files in the run's artifact folder at `moment`, as the log recorded their uploads and
    deletions (the bytes of files deleted since are gone; this says what was there)."""
    def past(replica: _Replica) -> list[dict[str, Any]]:
        with replica.store.con.cursor() as cur:
            return run_artifacts(cur, run_id)
    return await _past(store, log, run_id, moment, False, True, lambda cur: run_artifacts(cur, run_id), past)


async def metric_history_as_of(store: Store, log: LogReader, run_id: str, key: str, moment: Moment,
                               max_results: int | None, page_token: str | None) -> dict[str, Any]:
    """metrics/get-history's answer at `moment`: every point is needed, so the fold starts at
    the run's creation (checkpoints hold latest values only)."""
    def past(replica: _Replica) -> dict[str, Any]:
        with replica.store.con.cursor() as cur:
            return reader.metric_history(cur, run_id, key, max_results=max_results, page_token=page_token)
    return await _past(store, log, run_id, moment, True, False, None, past)


@dataclass
class _DiffPlan:
    events: _RunEvents
    a: _Cut
    b: _Cut
    base: checkpoints.Checkpoint | None
    rows: dict[str, pa.Table]
    first: list[tuple[int, int]]
    later: list[tuple[int, int]]
    entries: list[dict[str, Any]]


def _diff_plan(store: Store, run_id: str, start: Moment, end: Moment) -> _DiffPlan:
    cur = _snapshot(store)
    try:
        events = _run_events(cur, run_id)
        a, b = events.cut(cur, start), events.cut(cur, end)
        if b.count < a.count or b.time < a.time:
            raise InvalidParameterValue(f"'from' ({start.describe()}) is after 'to' ({end.describe()}).")
        if b.count == 0:
            raise ResourceDoesNotExist(f"Run with id={run_id} did not exist at {end.describe()}")
        exp_a, _ = _experiment_events(cur, events.experiment_id, a.time)
        exp_b, _ = _experiment_events(cur, events.experiment_id, b.time)
        entries = [] if b.offset is None else entries_between(cur, run_id, events.partition, a.offset, b.offset)
        # No rewind may lie between the checkpoint and `end`: the diff counts the points each
        # rewind hid, which needs every point before it.
        base = events.base(cur, a, b)
        rows = checkpoints.rows_of(cur, base) if base is not None else {}
    finally:
        _end(cur)
    seen = set(exp_a)
    return _DiffPlan(events, a, b, base, rows,
                     exp_a + events.positions(base.offset if base else None, a.offset),
                     [p for p in exp_b if p not in seen] + events.positions(a.offset, b.offset), entries)


async def run_diff(store: Store, log: LogReader, run_id: str, start: Moment, end: Moment,
                   latest_table: str) -> dict[str, Any]:
    """What changed in the run between two moments, and the events responsible: the run is
    folded up to `start`, rendered, folded on to `end` (a second batch over the first's
    tables, as the projector folds batches) and rendered again."""
    plan = await asyncio.to_thread(_diff_plan, store, run_id, start, end)
    first = await _records(log, plan.first)
    later = await _records(log, plan.later)

    def fold() -> tuple[Any, Any, Any, dict[str, int]]:
        replica = _Replica(plan.events.experiment_id)
        try:
            before = None
            started = bool(first) or plan.base is not None
            if plan.base is not None:
                replica.restore(plan.rows)
            if started:
                replica.fold(first, True)
                before = replica.run(run_id, latest_table) if plan.a.count else None
            changes = replica.fold(later, not started)
            after = replica.run(run_id, latest_table)
            with replica.store.con.cursor() as cur:
                hidden = dict(cur.execute(
                    "SELECT rewind_event_id, count(*) FROM rewound_metrics GROUP BY ALL").fetchall())
            return before, after, changes, hidden
        finally:
            replica.close()
    before, after, changes, hidden = await asyncio.to_thread(fold)
    return {
        "run_id": run_id, "from": _moment_json(start), "to": _moment_json(end),
        "existed_before": before is not None,
        "info": _info_changes(before, after),
        "params": _keyed_changes(before, after, "params"),
        "tags": _keyed_changes(before, after, "tags"),
        "metrics": _points_added(changes.metrics.table()),
        "latest_metrics": _keyed_changes(before, after, "metrics"),
        "rewinds": [{"event_id": r.event_id, "step": r.step, "points_hidden": hidden.get(r.event_id, 0)}
                    for r in changes.rewinds],
        "events": plan.entries,
    }


def _moment_json(m: Moment) -> dict[str, Any]:
    return {"time": m.time, "position": None if m.position is None else format_position(*m.position)}


_INFO_FIELDS = ("status", "lifecycle_stage", "end_time", "run_name")


def _info_changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    old = (before or {}).get("info", {})
    new = (after or {}).get("info", {})
    return {f: {"from": old.get(f), "to": new.get(f)} for f in _INFO_FIELDS if old.get(f) != new.get(f)}


def _keyed_changes(before: dict[str, Any] | None, after: dict[str, Any] | None, part: str) -> dict[str, Any]:
    def values(run: dict[str, Any] | None) -> dict[str, Any]:
        items = ((run or {}).get("data") or {}).get(part) or []
        return {i["key"]: (i["value"] if part != "metrics" else {k: i[k] for k in ("value", "timestamp", "step")})
                for i in items}
    old, new = values(before), values(after)
    return {
        "added": [{"key": k, "value": new[k]} for k in sorted(new.keys() - old.keys())],
        "changed": [{"key": k, "from": old[k], "to": new[k]} for k in sorted(new.keys() & old.keys())
                    if old[k] != new[k]],
        "removed": [{"key": k, "value": old[k]} for k in sorted(old.keys() - new.keys())],
    }


def _points_added(points: pa.Table) -> list[dict[str, Any]]:
    """Per key: how many points the events logged, and their step range."""
    if not points.num_rows:
        return []
    grouped = points.group_by("key").aggregate([("step", "count"), ("step", "min"), ("step", "max")])
    rows = grouped.to_pylist()
    return sorted(({"key": r["key"], "points_added": r["step_count"], "step_min": r["step_min"],
                    "step_max": r["step_max"]} for r in rows), key=lambda r: r["key"])
