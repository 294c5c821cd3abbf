"""A run's metric history as rows per step (W&B's shape), and a min/max-keeping sample of it.

MLflow stores one series per metric key; W&B's history is one row per step holding every key
logged at that step, plus ``_step``, ``_timestamp`` (seconds) and ``_runtime`` (seconds since the
run started). These functions pivot the points of a run on their step. When a key has several
points at one step, the one with the latest timestamp wins (as a later ``wandb.log`` at the same
step would).

``sampled_rows`` is the sampler W&B's charts need: the step range is cut into equal-width
buckets and, for every key, the steps where it reaches its minimum and its maximum inside each
bucket are kept (plus the first and last step), so spikes survive sampling; naive row thinning
would drop them. It lives here rather than in a dialect because it is a reading of the log,
not a wire format (docs/wandb.md).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import duckdb

__all__ = ["history_keys", "history_rows", "sampled_rows", "SPECIAL_KEYS"]

# Keys every row carries; they are not metric keys.
SPECIAL_KEYS = ("_step", "_timestamp", "_runtime")


def history_keys(cur: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any] | None:
    """``{"lastStep": n, "keys": {key: {"typeCounts": [...]}}}`` or None when the run has no points."""
    rows = cur.execute("SELECT key, count(*), max(step) FROM metrics WHERE run_id = ? GROUP BY key ORDER BY key",
                       [run_id]).fetchall()
    if not rows:
        return None
    return {"lastStep": max(r[2] for r in rows),
            "keys": {k: {"typeCounts": [{"type": "number", "count": n}]} for k, n, _ in rows}}


def _number(v: float) -> float | None:
    # JSON has no NaN or infinities; W&B's readers parse these rows with strict JSON parsers.
    return v if math.isfinite(v) else None


def _rows(result: list[tuple[Any, ...]], start_time: int | None) -> list[dict[str, Any]]:
    out = []
    for step, ts, keys, values in result:
        row: dict[str, Any] = {"_step": step, "_timestamp": ts / 1000.0,
                               "_runtime": max(ts - start_time, 0) / 1000.0 if start_time else 0.0}
        for k, v in zip(keys, values):
            row[k] = _number(v)
        out.append(row)
    return out


_PIVOT = ("SELECT step, max(timestamp), list(key ORDER BY key), list(value ORDER BY key) FROM ("
          "SELECT step, key, arg_max(value, timestamp) AS value, max(timestamp) AS timestamp FROM metrics "
          "WHERE run_id = $1 AND step >= $2 AND step < $3 {keys} GROUP BY step, key"
          ") GROUP BY step ORDER BY step LIMIT $4")


def history_rows(cur: duckdb.DuckDBPyConnection, run_id: str, start_time: int | None, *, min_step: int,
                 max_step: int, limit: int, keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every row with ``min_step <= step < max_step``, in step order, at most ``limit`` rows."""
    params: list[Any] = [run_id, min_step, max_step, limit]
    where = ""
    if keys is not None:
        where, params = "AND list_contains($5, key)", [*params, list(keys)]
    result = cur.execute(_PIVOT.format(keys=where), params).fetchall()
    return _rows(result, start_time)


_SAMPLE = """
WITH p AS (
    SELECT key, step, value, timestamp FROM metrics WHERE run_id = $1 {keys}
), span AS (
    SELECT min(step) AS lo, max(step) AS hi, count(DISTINCT step) AS n FROM p
), bucketed AS (
    SELECT key, step, value,
           CASE WHEN span.n <= $2 THEN step
                ELSE floor((step - span.lo) * $3 / (span.hi - span.lo + 1)) END AS b
    FROM p, span
), picks AS (
    SELECT DISTINCT unnest([arg_min(step, value), arg_max(step, value)]) AS step FROM bucketed GROUP BY key, b
    UNION SELECT lo FROM span UNION SELECT hi FROM span
)
SELECT step, max(timestamp), list(key ORDER BY key), list(value ORDER BY key) FROM (
    SELECT p.step, p.key, arg_max(p.value, p.timestamp) AS value, max(p.timestamp) AS timestamp
    FROM p SEMI JOIN picks ON p.step = picks.step GROUP BY p.step, p.key
) GROUP BY step ORDER BY step
"""


def sampled_rows(cur: duckdb.DuckDBPyConnection, run_id: str, start_time: int | None, *, samples: int,
                 keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """At most about ``samples`` rows per key: all rows when the run has that few steps, else the
    steps holding each key's minimum and maximum in each of ``samples // 2`` equal-width step
    buckets, and the first and last step. ``keys`` (None: every key) limits the metric keys;
    a row holds the listed keys present at its step."""
    samples = max(int(samples), 2)
    metric_keys = None if keys is None else [k for k in keys if k not in SPECIAL_KEYS]
    params: list[Any] = [run_id, samples, max(samples // 2, 1)]
    where = ""
    if metric_keys is not None:
        if not metric_keys:
            return []
        where, params = "AND list_contains($4, key)", [*params, metric_keys]
    result = cur.execute(_SAMPLE.format(keys=where), params).fetchall()
    return _rows(result, start_time)
