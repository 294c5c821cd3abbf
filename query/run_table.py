"""Reads behind the web UI's lists: experiments with their run counts, the param and metric keys
of an experiment, and one sorted page of an experiment's run table.

The run table filters with the runs/search grammar (query.search_filter, compiled by
query.search_sql), so a filter typed in the UI means what it means to the MLflow client; it
sorts by any of its columns, including ones runs/search cannot order by (duration, a param
read as a number), and counts the matches for the pager. Only active runs of the experiment.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import duckdb

from runledger.ingest.errors import InvalidParameterValue, ResourceDoesNotExist
from runledger.query import search_filter, search_sql
from runledger.query.reader import metric_value
from runledger.query.search_filter import SearchFilterError

MAX_PAGE = 1000
MAX_COLUMN_KEYS = 500
_ATTRIBUTE_SORTS = {"name": "r.run_name", "status": "r.status", "user": "r.user_id", "start": "r.start_time",
                    "end": "r.end_time", "run_id": "r.run_id"}
_ACTIVE = "r.lifecycle_stage = 'active'"


@dataclass(frozen=True, slots=True)
class TablePage:
    """What the run table shows: the sort column is "name", "status", "user", "start", "end",
    "duration", "run_id", "param:<key>" or "metric:<key>"."""

    experiment_id: str
    filter: str
    sort: str
    ascending: bool
    offset: int
    limit: int
    params: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()


def experiments(cur: duckdb.DuckDBPyConnection, name_contains: str | None) -> list[dict[str, Any]]:
    """Active experiments whose name contains the text (any case), newest first, with the
    number of their active runs and of those still running."""
    where, params = "e.lifecycle_stage = 'active'", []
    if name_contains:
        where, params = where + " AND contains(lower(e.name), lower(?))", [name_contains]
    rows = cur.execute(
        "SELECT e.experiment_id, e.name, e.creation_time, e.last_update_time, coalesce(c.runs, 0), "
        "coalesce(c.running, 0) FROM experiments e LEFT JOIN (SELECT experiment_id, count(*) AS runs, "
        "count(*) FILTER (WHERE status = 'RUNNING') AS running FROM runs r WHERE " + _ACTIVE +
        " GROUP BY experiment_id) c USING (experiment_id) WHERE " + where +
        " ORDER BY e.creation_time DESC NULLS LAST, e.experiment_id", params).fetchall()
    return [{"experiment_id": r[0], "name": r[1], "creation_time": r[2], "last_update_time": r[3],
             "runs": r[4], "running": r[5]} for r in rows]


def experiment_name(cur: duckdb.DuckDBPyConnection, experiment_id: str) -> str:
    rows = cur.execute("SELECT name FROM experiments WHERE experiment_id = ?", [experiment_id]).fetchall()
    if not rows:
        raise ResourceDoesNotExist(f"No Experiment with id={experiment_id} exists")
    return str(rows[0][0])


def column_keys(cur: duckdb.DuckDBPyConnection, experiment_id: str, latest_table: str) -> dict[str, list[str]]:
    """The param and metric keys of the experiment's active runs, most common first."""
    search_sql._check_table(latest_table)
    out: dict[str, list[str]] = {}
    for name, table in (("params", "params"), ("metrics", latest_table)):
        out[name] = [r[0] for r in cur.execute(
            f"SELECT key FROM {table} WHERE run_id IN (SELECT run_id FROM runs r WHERE r.experiment_id = ? "
            f"AND {_ACTIVE}) GROUP BY key ORDER BY count(*) DESC, key LIMIT {MAX_COLUMN_KEYS}",
            [experiment_id]).fetchall()]
    return out


def run_page(cur: duckdb.DuckDBPyConnection, page: TablePage, latest_table: str) -> dict[str, Any]:
    """{"total": matching runs, "runs": [...]} for one page, sorted with missing values last."""
    search_sql._check_table(latest_table)
    if not 1 <= page.limit <= MAX_PAGE:
        raise InvalidParameterValue(f"limit must be between 1 and {MAX_PAGE}, got {page.limit}.")
    if page.offset < 0:
        raise InvalidParameterValue(f"offset must not be negative, got {page.offset}.")
    try:
        where, where_params = search_sql.compile_runs_where(
            search_filter.parse_runs_filter(page.filter or None), latest_table, membership=True)
    except SearchFilterError as e:
        raise InvalidParameterValue(str(e)) from e
    join, join_params, order = _sort(page, latest_table)
    base = f"FROM runs r {join} WHERE r.experiment_id = ? AND {_ACTIVE} AND ({where})"
    base_params = [*join_params, page.experiment_id, *where_params]
    cur.execute("BEGIN TRANSACTION")   # the count and the page from one snapshot
    try:
        (total,), = cur.execute(f"SELECT count(*) FROM runs r WHERE r.experiment_id = ? AND {_ACTIVE} AND ({where})",
                                [page.experiment_id, *where_params]).fetchall()
        rows = cur.execute(
            f"SELECT r.run_id, r.run_name, r.status, r.user_id, r.start_time, r.end_time {base} "
            f"ORDER BY {order} LIMIT ? OFFSET ?", [*base_params, page.limit, page.offset]).fetchall()
        ids = [r[0] for r in rows]
        params = _keyed(cur, "params", ids, page.params)
        metrics = _keyed(cur, latest_table, ids, page.metrics)
    finally:
        cur.execute("ROLLBACK")
    now = int(time.time() * 1000)
    runs = [{"run_id": r[0], "run_name": r[1], "status": r[2], "user_id": r[3], "start_time": r[4],
             "end_time": r[5], "duration_ms": _duration(r[4], r[5], r[2], now),
             "params": params.get(r[0], {}), "metrics": metrics.get(r[0], {})} for r in rows]
    return {"total": total, "offset": page.offset, "runs": runs}


def _duration(start: int | None, end: int | None, status: str, now: int) -> int | None:
    if start is None:
        return None
    if end is None:
        return now - start if status == "RUNNING" else None
    return end - start


def _sort(page: TablePage, latest_table: str) -> tuple[str, list[Any], str]:
    """(join, its parameters, ORDER BY list) for the page's sort column; run_id breaks ties."""
    direction = "ASC" if page.ascending else "DESC"
    if page.sort in _ATTRIBUTE_SORTS:
        return "", [], f"{_ATTRIBUTE_SORTS[page.sort]} {direction} NULLS LAST, r.run_id"
    if page.sort == "duration":
        expr = ("(coalesce(r.end_time, CASE WHEN r.status = 'RUNNING' THEN epoch_ms(now()) END) - r.start_time)")
        return "", [], f"{expr} {direction} NULLS LAST, r.run_id"
    kind, _, key = page.sort.partition(":")
    if kind == "param" and key:
        # Params are strings; numbers among them sort as numbers (lr 0.01 < 0.1 < 1e-1 ...), then text.
        join = "LEFT JOIN params sp ON sp.run_id = r.run_id AND sp.key = ?"
        return join, [key], (f"TRY_CAST(sp.value AS DOUBLE) {direction} NULLS LAST, sp.value {direction} NULLS LAST, "
                             "r.run_id")
    if kind == "metric" and key:
        join = f"LEFT JOIN {latest_table} sm ON sm.run_id = r.run_id AND sm.key = ?"
        # NaN sorts with the missing values (DuckDB would order it above every number).
        return join, [key], (f"CASE WHEN isnan(sm.value) THEN NULL ELSE sm.value END {direction} NULLS LAST, "
                             "r.run_id")
    raise InvalidParameterValue(
        f"Cannot sort by {page.sort!r}: use name, status, user, start, end, duration, run_id, "
        "param:<key> or metric:<key>.")


def _keyed(cur: duckdb.DuckDBPyConnection, table: str, run_ids: list[str], keys: tuple[str, ...]) -> dict[str, dict]:
    if not run_ids or not keys:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for run_id, key, value in cur.execute(
            f"SELECT run_id, key, value FROM {table} WHERE run_id IN (SELECT unnest(?::VARCHAR[])) "
            "AND key IN (SELECT unnest(?::VARCHAR[]))", [run_ids, list(keys)]).fetchall():
        out.setdefault(run_id, {})[key] = metric_value(value) if isinstance(value, float) else value
    return out
