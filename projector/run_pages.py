"""Run pages: one row per run in `run_pages` holding what a runs/search page renders of it.

A page of runs read from the side tables (params, tags, latest points) costs one scan per
table, each over every run's rows, whatever the page's size: at 20,000 runs those scans were
most of a runs/search answer. `run_pages` keeps, per run, its row and its params, tags and
latest metrics (under both latest-metric rules) as ready JSON arrays, so a page is one scan
of one row per run (query.reader.page_bodies).

Derived data, never a tracking rule: `pages_of_batch` reads the run's complete state the fold
was given (the FoldState holds every param, tag and latest point of each run the batch names)
overlaid with the batch's final values, and the store writes the rows in the same transaction
as the tables they summarise (projector.store), so a reader sees both or neither. A rewound
run's latest points are recomputed by the store from its points; its page is then rebuilt
from the tables (`refresh`). The JSON is what query.reader renders from the tables (lists
sorted by key, NaN as "NaN", omitted when empty), checked by tests/test_run_pages.py.

Internal: not among the public SQL views (query.sql.views).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

import duckdb
import orjson

from runledger.projector.rows import LatestPoint, RunRow

if TYPE_CHECKING:
    from runledger.projector.fold import BatchChanges, FoldState

__all__ = ["COLUMNS", "METRIC_COLUMNS", "page_row", "pages_of_batch", "refresh"]

# latest-metric rule -> the column holding the run's latest metrics under it
METRIC_COLUMNS = {"timestamp": "metrics", "step": "metrics_by_step"}
COLUMNS = ("run_id", "experiment_id", "run_name", "user_id", "status", "start_time", "end_time",
           "lifecycle_stage", "artifact_uri", "params", "tags", "metrics", "metrics_by_step")


def _pairs_json(values: Mapping[str, str]) -> str | None:
    if not values:
        return None
    return orjson.dumps([{"key": k, "value": values[k]} for k in sorted(values)]).decode()


def _metrics_json(points: Mapping[str, LatestPoint]) -> str | None:
    if not points:
        return None
    items = []
    for k in sorted(points):
        p = points[k]
        value = float(p.value)   # as DuckDB's DOUBLE column gives it back
        items.append({"key": k, "value": "NaN" if value != value else value, "timestamp": int(p.timestamp),
                      "step": int(p.step)})
    return orjson.dumps(items).decode()


def page_row(row: RunRow, params: Mapping[str, str], tags: Mapping[str, str],
             latest: Mapping[str, Mapping[str, LatestPoint]]) -> tuple[Any, ...]:
    """The `run_pages` row (in `COLUMNS` order) of a run with this complete state."""
    return (row.run_id, row.experiment_id, row.run_name, row.user_id, row.status, row.start_time, row.end_time,
            row.lifecycle_stage, row.artifact_uri, _pairs_json(params), _pairs_json(tags),
            _metrics_json(latest.get("timestamp", {})), _metrics_json(latest.get("step", {})))


def pages_of_batch(state: "FoldState", changes: "BatchChanges") -> dict[str, tuple[Any, ...]]:
    """run id -> its `run_pages` row after the batch, for every existing run the batch changed
    (its row, a param, a tag or a latest metric). `state` holds the complete state of every run
    the batch names (what the fold was given), `changes` the batch's final values."""
    touched = set(changes.runs)
    for keyed in (changes.params, changes.tags, *changes.latest.values()):
        touched.update(k[0] for k in keyed)
    if not touched:
        return {}
    params: dict[str, dict[str, str]] = {r: {} for r in touched}
    tags: dict[str, dict[str, str]] = {r: {} for r in touched}
    latest: dict[str, dict[str, dict[str, LatestPoint]]] = {r: {rule: {} for rule in METRIC_COLUMNS} for r in touched}
    for (run_id, k), v in state.params.items():
        if run_id in touched:
            params[run_id][k] = v
    for (run_id, k), v in changes.params.items():
        params[run_id].setdefault(k, v)   # params are immutable: a stored value stays (store: INSERT OR IGNORE)
    for source in (state.tags, changes.tags):
        for (run_id, k), v in source.items():
            if run_id in touched:
                if v is None:
                    tags[run_id].pop(k, None)
                else:
                    tags[run_id][k] = v
    for source in (state.latest, changes.latest):
        for rule, points in source.items():
            if rule not in METRIC_COLUMNS:
                continue
            for (run_id, k), p in points.items():
                if run_id in touched:
                    latest[run_id][rule][k] = p
    out = {}
    for run_id in touched:
        row = changes.runs.get(run_id) or state.runs.get(run_id)
        if row is not None:
            out[run_id] = page_row(row, params[run_id], tags[run_id], latest[run_id])
    return out


def refresh(c: duckdb.DuckDBPyConnection, run_ids: Iterable[str]) -> None:
    """Rebuild the pages of `run_ids` from the tables they summarise (a rewound run, whose
    latest points the store recomputes; a read model built without pages)."""
    ids = list(dict.fromkeys(run_ids))
    if not ids:
        return
    rows = {r[0]: RunRow(*r) for r in c.execute(
        "SELECT run_id, experiment_id, run_name, user_id, status, start_time, end_time, lifecycle_stage, "
        "deleted_time, artifact_uri FROM runs WHERE run_id IN (SELECT unnest(?::VARCHAR[]))", [ids]).fetchall()}
    params: dict[str, dict[str, str]] = {r: {} for r in rows}
    tags: dict[str, dict[str, str]] = {r: {} for r in rows}
    latest: dict[str, dict[str, dict[str, LatestPoint]]] = {r: {rule: {} for rule in METRIC_COLUMNS} for r in rows}
    for kind, run_id, k, text, v, ts, step, sv, sts, sstep in c.execute("""
            SELECT 'p', run_id, key, value, NULL, NULL, NULL, NULL, NULL, NULL FROM params
             WHERE run_id IN (SELECT unnest($ids::VARCHAR[]))
            UNION ALL SELECT 't', run_id, key, value, NULL, NULL, NULL, NULL, NULL, NULL FROM tags
             WHERE run_id IN (SELECT unnest($ids::VARCHAR[]))
            UNION ALL SELECT 'm', run_id, key, NULL, ts_value, ts_timestamp, ts_step, step_value, step_timestamp,
             step_step FROM latest_points WHERE run_id IN (SELECT unnest($ids::VARCHAR[]))""",
            {"ids": ids}).fetchall():
        if run_id not in rows:
            continue
        if kind == "p":
            params[run_id][k] = text
        elif kind == "t":
            tags[run_id][k] = text
        else:
            latest[run_id]["timestamp"][k] = LatestPoint(v, ts, step)
            latest[run_id]["step"][k] = LatestPoint(sv, sts, sstep)
    c.execute("DELETE FROM run_pages WHERE run_id IN (SELECT unnest(?::VARCHAR[]))", [ids])
    if rows:
        marks = ", ".join("?" for _ in COLUMNS)
        c.executemany(f"INSERT INTO run_pages ({', '.join(COLUMNS)}) VALUES ({marks})",
                      [list(page_row(rows[r], params[r], tags[r], latest[r])) for r in rows])
