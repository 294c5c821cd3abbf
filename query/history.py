"""Metric history across runs: MLflow's bulk and sampled (bulk-interval) views."""

from __future__ import annotations

from typing import Any

import duckdb

from query.reader import metric_value

_ORDER = "step, timestamp, value"


def sampled_history(cur: duckdb.DuckDBPyConnection, run_ids: list[str], key: str, max_results: int,
                    start_step: int | None, end_step: int | None) -> list[dict[str, Any]]:
    """Per run, at most `max_results` points: the first point of each of `max_results` equal
    buckets (SQL NTILE over (step, timestamp, value)) plus the run's last point, which takes the
    last slot when the sample is full. Runs are concatenated in request order (MLflow 3.x)."""
    out: list[dict[str, Any]] = []
    step_filter, step_params = "", []
    if start_step is not None and end_step is not None:
        step_filter, step_params = " AND step BETWEEN ? AND ?", [start_step, end_step]
    for run_id in run_ids:
        rows = cur.execute(f"""
            WITH pts AS (
                SELECT value, timestamp, step,
                       ntile(?) OVER (ORDER BY {_ORDER}) AS bucket,
                       row_number() OVER (ORDER BY {_ORDER}) AS rn,
                       count(*) OVER () AS n
                FROM metrics WHERE run_id = ? AND key = ?{step_filter})
            SELECT value, timestamp, step, rn = n AS is_last FROM pts
            QUALIFY row_number() OVER (PARTITION BY bucket ORDER BY rn) = 1 OR rn = n
            ORDER BY rn""", [max_results, run_id, key, *step_params]).fetchall()
        if len(rows) > max_results:  # the last point did not start a bucket: it replaces the last sample
            rows = rows[:max_results - 1] + rows[-1:]
        out.extend({"key": key, "value": metric_value(v), "timestamp": ts, "step": s, "run_id": run_id}
                   for v, ts, s, _ in rows)
    return out


def bulk_history(cur: duckdb.DuckDBPyConnection, run_ids: list[str], key: str, max_results: int) -> list[dict[str, Any]]:
    """Full histories of several runs (sorted by run id), cut to `max_results` points overall."""
    rows = cur.execute(
        "SELECT run_id, value, timestamp, step FROM metrics WHERE run_id IN (SELECT unnest(?::VARCHAR[])) "
        "AND key = ? ORDER BY run_id, timestamp, step, value LIMIT ?", [sorted(set(run_ids)), key, max_results]
    ).fetchall()
    return [{"key": key, "value": metric_value(v), "timestamp": ts, "step": s, "run_id": r} for r, v, ts, s in rows]
