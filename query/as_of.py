"""The past of a run, folded again from the log (docs/design.md, invariant 10).

An as-of read finds in `event_log` the positions of the run's applied events up to the
moment asked for (and of its experiment's own events, which decide whether it reads as
deleted), reads those records back from Kafka, folds them with the projector's `fold_batch`
into a throwaway in-memory DuckDB through the projector's own `Store.apply`, and renders the
run with the reader's `get_run`: the same code that built and serves the live read model, so
the answer is what runs/get answered then. Rejected events are skipped: a rejection changes
nothing (fold.py), so folding only the applied ones gives the same tables.

A moment is a time (ingest time, Unix ms: everything appended up to then) or a log position
(everything of the run's partition up to and including it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

import duckdb
import pyarrow as pa

from runledger.ingest.errors import InvalidParameterValue, ResourceDoesNotExist
from runledger.ingest.contract.events import EXPERIMENT_EVENTS, RUN_EVENTS
from runledger.projector.consumer import decode_records
from runledger.projector.fold import FoldState, LogRecord, MetricRows, fold_batch
from runledger.projector.log_reader import LogReader
from runledger.projector.replay import table_names
from runledger.projector.store import Store
from runledger.query import reader
from runledger.query.audit_trail import entries_between, format_position


@dataclass(frozen=True)
class Moment:
    time: int | None = None                       # ingest time, Unix ms, inclusive
    position: tuple[int, int] | None = None       # (partition, offset), inclusive

    def describe(self) -> str:
        return f"position {format_position(*self.position)}" if self.position else f"time {self.time}"


@dataclass
class _Cut:
    """The run's events up to a moment: how many of `run_rows`, and the time bound for its
    experiment's events."""

    count: int
    time: int
    offset: int | None      # the last run-partition offset included


@dataclass
class _Plan:
    run_id: str
    experiment_id: str
    partition: int
    run_rows: list[tuple[int, int, int]]         # applied run events: (partition, offset, ingest_time)

    def cut(self, cur: duckdb.DuckDBPyConnection, moment: Moment) -> _Cut:
        if moment.position is not None:
            partition, offset = moment.position
            if partition != self.partition:
                raise InvalidParameterValue(
                    f"Position {format_position(partition, offset)} is not in run {self.run_id}'s partition "
                    f"{self.partition}: use a position from the run's trail.")
            count = sum(1 for _, o, _ in self.run_rows if o <= offset)
            row = cur.execute('SELECT max(ingest_time) FROM event_log WHERE "partition" = ? AND "offset" <= ?',
                              [partition, offset]).fetchone()
            time = row[0] if row and row[0] is not None else -1
            return _Cut(count, time, offset)
        assert moment.time is not None
        # A prefix of the partition, up to its first event appended after the moment (as
        # `runledger replay --until` cuts each partition).
        count = next((i for i, (_, _, t) in enumerate(self.run_rows) if t is not None and t > moment.time),
                     len(self.run_rows))
        return _Cut(count, moment.time, self.run_rows[count - 1][1] if count else None)


def _plan(cur: duckdb.DuckDBPyConnection, run_id: str) -> _Plan:
    rows = cur.execute(
        'SELECT "partition", "offset", ingest_time, type, experiment_id FROM event_log '
        'WHERE run_id = ? AND error_code IS NULL AND type IN (SELECT unnest(?::VARCHAR[])) '
        'ORDER BY "partition", "offset"', [run_id, sorted(RUN_EVENTS)]).fetchall()
    created = next((r for r in rows if r[3] == "RunCreated"), None)
    if created is None:
        raise ResourceDoesNotExist(f"Run with id={run_id} not found")
    return _Plan(run_id, created[4], created[0], [(p, o, t) for p, o, t, _, _ in rows if p == created[0]])


def _experiment_positions(cur: duckdb.DuckDBPyConnection, experiment_id: str, time: int) -> list[tuple[int, int]]:
    return [(p, o) for p, o in cur.execute(
        'SELECT "partition", "offset" FROM event_log WHERE experiment_id = ? AND error_code IS NULL '
        'AND type IN (SELECT unnest(?::VARCHAR[])) AND ingest_time <= ? ORDER BY "partition", "offset"',
        [experiment_id, sorted(EXPERIMENT_EVENTS), time]).fetchall()]


class _Replica:
    """A throwaway read model in memory, written by the projector's own store code. Emptied
    stores are kept for the next read (creating the schema costs more than emptying it)."""

    _idle: list[Store] = []
    _IDLE_MAX = 2

    def __init__(self, experiment_id: str, keep_points: bool = True) -> None:
        self.store = self._idle.pop() if self._idle else Store(":memory:", threads=1)
        self.experiment_id = experiment_id
        self.keep_points = keep_points

    def fold(self, records: list[LogRecord], first: bool) -> Any:
        if first:
            # The experiment's id was allocated in log order among all experiments; only its
            # own events are folded here, so the fold resumes the allocation at that id.
            state = FoldState(next_experiment_id=int(self.experiment_id) if self.experiment_id.isdigit() else 1)
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
        store, self.store = self.store, None  # type: ignore[assignment]
        if len(self._idle) >= self._IDLE_MAX:
            store.close()
            return
        try:
            for name in table_names(store.con):
                if name != "schema_info":
                    store.con.execute(f'DELETE FROM "{name}"')
        except Exception:
            store.close()
            raise
        self._idle.append(store)


async def _records(log: LogReader, positions: list[tuple[int, int]]) -> list[LogRecord]:
    raw = await log.read(positions)
    return await asyncio.to_thread(decode_records, raw)


async def _replica_at(store: Store, log: LogReader, run_id: str, moment: Moment,
                      keep_points: bool = True) -> tuple[_Replica, _Plan, _Cut]:
    with store.cursor() as cur:
        plan = _plan(cur, run_id)
        cut = plan.cut(cur, moment)
        exp_positions = _experiment_positions(cur, plan.experiment_id, cut.time)
    if cut.count == 0:
        raise ResourceDoesNotExist(f"Run with id={run_id} did not exist at {moment.describe()}")
    records = await _records(log, exp_positions + [(p, o) for p, o, _ in plan.run_rows[:cut.count]])
    replica = _Replica(plan.experiment_id, keep_points)
    try:
        await asyncio.to_thread(replica.fold, records, True)
    except BaseException:
        replica.close()
        raise
    return replica, plan, cut


async def run_as_of(store: Store, log: LogReader, run_id: str, moment: Moment, latest_table: str) -> dict[str, Any]:
    """The run as runs/get answered at `moment` (MLflow's Run JSON)."""
    replica, _, _ = await _replica_at(store, log, run_id, moment, keep_points=False)
    try:
        run = replica.run(run_id, latest_table)
    finally:
        replica.close()
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
    replica, _, _ = await _replica_at(store, log, run_id, moment, keep_points=False)
    try:
        with replica.store.con.cursor() as cur:
            return run_artifacts(cur, run_id)
    finally:
        replica.close()


async def metric_history_as_of(store: Store, log: LogReader, run_id: str, key: str, moment: Moment,
                               max_results: int | None, page_token: str | None) -> dict[str, Any]:
    """metrics/get-history's answer at `moment`."""
    replica, _, _ = await _replica_at(store, log, run_id, moment)
    try:
        with replica.store.con.cursor() as cur:
            return reader.metric_history(cur, run_id, key, max_results=max_results, page_token=page_token)
    finally:
        replica.close()


async def run_diff(store: Store, log: LogReader, run_id: str, start: Moment, end: Moment,
                   latest_table: str) -> dict[str, Any]:
    """What changed in the run between two moments, and the events responsible: the run is
    folded up to `start`, rendered, folded on to `end` (a second batch over the first's
    tables, as the projector folds batches) and rendered again."""
    with store.cursor() as cur:
        plan = _plan(cur, run_id)
        a, b = plan.cut(cur, start), plan.cut(cur, end)
        if b.count < a.count or b.time < a.time:
            raise InvalidParameterValue(f"'from' ({start.describe()}) is after 'to' ({end.describe()}).")
        exp_a = _experiment_positions(cur, plan.experiment_id, a.time)
        exp_b = _experiment_positions(cur, plan.experiment_id, b.time)
        events = [] if b.offset is None else entries_between(cur, run_id, plan.partition, a.offset, b.offset)
    if b.count == 0:
        raise ResourceDoesNotExist(f"Run with id={run_id} did not exist at {end.describe()}")
    run_positions = [(p, o) for p, o, _ in plan.run_rows]
    first = await _records(log, exp_a + run_positions[:a.count])
    later = await _records(log, [p for p in exp_b if p not in set(exp_a)] + run_positions[a.count:b.count])
    replica = _Replica(plan.experiment_id)
    try:
        before = None
        if first:
            await asyncio.to_thread(replica.fold, first, True)
            before = replica.run(run_id, latest_table) if a.count else None
        changes = await asyncio.to_thread(replica.fold, later, not first)
        after = replica.run(run_id, latest_table)
        with replica.store.con.cursor() as cur:
            hidden = dict(cur.execute("SELECT rewind_event_id, count(*) FROM rewound_metrics GROUP BY ALL").fetchall())
    finally:
        replica.close()
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
        "events": events,
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
