"""Metric history across runs: MLflow's bulk and sampled (bulk-interval) views."""

from __future__ import annotations

from typing import Any

import duckdb

from query.reader import metric_value

_ORDER = "step, timestamp, value"


def _bucket_starts(n: int, k: int) -> list[int]:
    """0-based positions of the first row of each NTILE(k) bucket over n rows (the first
    n % k buckets hold n // k + 1 rows, the rest n // k), plus the last row."""
    q, r = divmod(n, k)
    if q == 0:
        return list(range(n))
    starts = [b * q + min(b, r) for b in range(k)]
    if starts[-1] != n - 1:
        starts.append(n - 1)
    return starts


def sampled_history(cur: duckdb.DuckDBPyConnection, run_ids: list[str], key: str, max_results: int,
                    start_step: int | None, end_step: int | None) -> list[dict[str, Any]]:
    """Per run, at most `max_results` points: the first point of each of `max_results` equal
    buckets (SQL NTILE over (step, timestamp, value)) plus the run's last point, which takes the
    last slot when the sample is full. Runs are concatenated in request order (MLflow 3.x).

    The bucket starts are computed from the row count, so one sort picks them (no window)."""
    import pyarrow as pa

    out: list[dict[str, Any]] = []
    step_filter, step_params = "", []
    if start_step is not None and end_step is not None:
        step_filter, step_params = " AND step BETWEEN $3 AND $4", [start_step, end_step]
    where = f"FROM metrics WHERE run_id = $1 AND key = $2{step_filter}"
    for run_id in run_ids:
        params = [run_id, key, *step_params]
        pts = cur.sql(f"SELECT value, timestamp, step {where} ORDER BY {_ORDER}", params=params).to_arrow_table()
        if not pts.num_rows:
            continue
        picks = _bucket_starts(pts.num_rows, max_results)
        if len(picks) > max_results:  # the last point did not start a bucket: it replaces the last sample
            picks = picks[:max_results - 1] + picks[-1:]
        if len(picks) < pts.num_rows:
            pts = pts.take(pa.array(picks, pa.int64()))
        cols = pts.to_pydict()
        out.extend({"key": key, "value": metric_value(v), "timestamp": ts, "step": s, "run_id": run_id}
                   for v, ts, s in zip(cols["value"], cols["timestamp"], cols["step"]))
    return out


def bulk_history(cur: duckdb.DuckDBPyConnection, run_ids: list[str], key: str, max_results: int) -> list[dict[str, Any]]:
    """Full histories of several runs (sorted by run id), cut to `max_results` points overall."""
    rows = cur.execute(
        "SELECT run_id, value, timestamp, step FROM metrics WHERE run_id IN (SELECT unnest(?::VARCHAR[])) "
        "AND key = ? ORDER BY run_id, timestamp, step, value LIMIT ?", [sorted(set(run_ids)), key, max_results]
    ).fetchall()
    return [{"key": key, "value": metric_value(v), "timestamp": ts, "step": s, "run_id": r} for r, v, ts, s in rows]
