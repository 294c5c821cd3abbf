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

query/history_buckets.py (the UI's charts) summarises buckets too, but as values and bucket
extents; a W&B row needs the step and time of the very point that holds a minimum or maximum,
which the one-pass arg_min/arg_max here gives.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import duckdb
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["history_keys", "history_rows", "sampled_rows", "history_fingerprint", "export_parquet", "SPECIAL_KEYS"]

# Keys every row carries; they are not metric keys.
SPECIAL_KEYS = ("_step", "_timestamp", "_runtime")


def history_keys(cur: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any] | None:
    """``{"lastStep": n, "keys": {key: {...}}}`` or None when the run has no points. Read from the
    latest points (one row per key), not the history: the last step of a key is its latest
    point's step under the step rule."""
    rows = cur.execute("SELECT key, step_step FROM latest_points WHERE run_id = ? ORDER BY key", [run_id]).fetchall()
    if not rows:
        return None
    return {"lastStep": max(r[1] for r in rows),
            "keys": {k: {"typeCounts": [{"type": "number"}], "lastStep": step} for k, step in rows}}


def _number(v: float) -> float | None:
    # JSON has no NaN or infinities; W&B's readers parse these rows with strict JSON parsers.
    return v if math.isfinite(v) else None


class _Rows:
    """Rows keyed by step, in the order steps are first seen; a later point overwrites."""

    def __init__(self, start_time: int | None) -> None:
        self.start = start_time
        self.rows: dict[int, dict[str, Any]] = {}

    def put(self, step: int, key: str, value: float, ts: int) -> None:
        row = self.rows.get(step)
        if row is None:
            row = self.rows[step] = {"_step": step, "_timestamp": ts, "_runtime": 0}
        elif ts > row["_timestamp"]:
            row["_timestamp"] = ts
        row[key] = value if math.isfinite(value) else None

    def done(self) -> list[dict[str, Any]]:
        out = [self.rows[s] for s in sorted(self.rows)]
        start = self.start
        for row in out:
            ts = row["_timestamp"]
            row["_runtime"] = max(ts - start, 0) / 1000.0 if start else 0.0
            row["_timestamp"] = ts / 1000.0
        return out


def _key_filter(keys: Sequence[str] | None, params: list[Any]) -> str:
    if keys is None:
        return ""
    params.append(list(keys))
    return f" AND list_contains(${len(params)}, key)"


def history_rows(cur: duckdb.DuckDBPyConnection, run_id: str, start_time: int | None, *, min_step: int,
                 max_step: int, limit: int, keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every row with ``min_step <= step < max_step``, in step order, at most ``limit`` rows.

    The points are read as they are stored and pivoted here: for a page of a thousand steps
    that is several times cheaper than DuckDB's grouping (measured: 22 ms against 4 ms)."""
    params: list[Any] = [run_id, min_step, max_step]
    where = _key_filter(keys, params)
    result = cur.execute("SELECT step, key, value, timestamp FROM metrics WHERE run_id = $1 AND step >= $2 "
                         f"AND step < $3{where} ORDER BY step, timestamp, value", params).fetchall()
    rows = _Rows(start_time)
    for step, key, value, ts in result:
        if step not in rows.rows and len(rows.rows) >= limit:
            break
        rows.put(step, key, value, ts)
    return rows.done()


def history_fingerprint(cur: duckdb.DuckDBPyConnection, run_id: str, start_time: int | None) -> str | None:
    """A name for the run's history as it is now (None: no points): the point count and an XOR
    of the points' hashes (points are a set, so any added, rewound or deleted point changes it),
    and the start time (``_runtime`` depends on it). One pass over the run's points."""
    count, mix = cur.execute("SELECT count(*), bit_xor(hash(key, value, timestamp, step)) FROM metrics "
                             "WHERE run_id = ?", [run_id]).fetchone()
    if not count:
        return None
    return f"{count:x}-{mix:016x}-{(start_time or 0):x}"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# W&B's reader, scanning with keys, passes rows of a file lacking a requested column on as rows
# holding only ``_step`` (a page leaves such rows out): more than one key set per run would break
# keyed scans, so a run whose rows hold different key sets is not exported (measured with
# wandb 0.31; tests/test_wandb_parquet.py).
MAX_EXPORT_PARTS = 1


def export_parquet(cur: duckdb.DuckDBPyConnection, run_id: str, start_time: int | None,
                   target: Path) -> list[Path] | None:
    """Every row of the run (the rows ``history_rows`` pages out, the same values) as Parquet:
    ``_step`` (BIGINT), ``_timestamp``, ``_runtime`` and one DOUBLE column per key. Pivoted by
    DuckDB in one query; the point of a key that wins at a step is the latest (ties: the larger
    value, as in ``history_rows``).

    W&B's reader turns every cell into a row item, a NULL one too, while a page's row holds only
    the keys logged at its step. So the rows are split by the set of keys they hold, one file per
    set with just those columns (NULL then only where a NaN was logged, which a page shows as
    null as well); the reader merges the files by step. Returns the files (``target`` with
    ``-<n>`` before the suffix), or None when the rows have more than ``MAX_EXPORT_PARTS``
    different key sets (keys logged at different steps): such a run is served by pages.
    Each file is written to a temporary name and renamed, so a reader never sees half a file."""
    keys = [k for (k,) in cur.execute("SELECT DISTINCT key FROM metrics WHERE run_id = ? ORDER BY key",
                                      [run_id]).fetchall()]
    start = int(start_time or 0)
    runtime = f"greatest(max(timestamp) - {start}, 0) / 1000.0" if start else "0.0"
    # Non-finite values are NULL in the file, as they are null in the pages' JSON.
    columns = "".join(f", any_value(CASE WHEN isfinite(value) THEN value END) FILTER (WHERE key = ${i + 2}) "
                      f"AS {_identifier(k)}" for i, k in enumerate(keys))
    table = cur.execute(
        f"SELECT step AS _step, max(timestamp) / 1000.0 AS _timestamp, {runtime} AS _runtime{columns}, "
        "string_agg(key, chr(0) ORDER BY key) AS _keys "
        "FROM (SELECT * FROM metrics WHERE run_id = $1 QUALIFY row_number() OVER "
        "(PARTITION BY step, key ORDER BY timestamp DESC, value DESC) = 1) "
        "GROUP BY step ORDER BY step", [run_id, *keys]).to_arrow_table()
    key_sets = pc.unique(table.column("_keys")).to_pylist()
    if len(key_sets) > MAX_EXPORT_PARTS:
        return None
    files = []
    for n, key_set in enumerate(sorted(key_sets)):
        part = table.filter(pc.equal(table.column("_keys"), key_set)).select(
            ["_step", "_timestamp", "_runtime", *key_set.split("\0")])
        # Written by pyarrow: the read model's DuckDB has file system access switched off.
        path = target.with_name(f"{target.stem}-{n}{target.suffix}")
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(part, tmp, row_group_size=10_000, compression="snappy")
        os.replace(tmp, path)
        files.append(path)
    return files


def sampled_rows(cur: duckdb.DuckDBPyConnection, run_id: str, start_time: int | None, *, samples: int,
                 keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """At most about ``samples`` rows per key: for each key, every point when it has that few,
    else the steps holding its minimum and its maximum in each of ``samples // 2`` equal-width
    step buckets (a row then holds the keys whose extremes fell on its step). ``keys`` (None:
    every key of the run) limits the metric keys."""
    samples = max(int(samples), 2)
    if keys is None:
        metric_keys = [k for (k,) in cur.execute("SELECT key FROM latest_points WHERE run_id = ? ORDER BY key",
                                                 [run_id]).fetchall()]
    else:
        metric_keys = list(dict.fromkeys(k for k in keys if k not in SPECIAL_KEYS))
    rows = _Rows(start_time)
    for key in metric_keys:
        _sample_key(cur, run_id, key, samples, rows)
    return rows.done()


def _sample_key(cur: duckdb.DuckDBPyConnection, run_id: str, key: str, samples: int, rows: _Rows) -> None:
    found = cur.execute("SELECT step_step FROM latest_points WHERE run_id = $1 AND key = $2", [run_id, key]).fetchone()
    if found is None:
        return
    buckets = max(samples // 2, 1)
    lo, hi = 0, int(found[0])
    if hi < 0:  # negative steps: the span comes from the points themselves
        lo, hi = (int(v) for v in cur.execute("SELECT min(step), max(step) FROM metrics WHERE run_id = $1 "
                                              "AND key = $2", [run_id, key]).fetchone())
    result = _buckets(cur, run_id, key, lo, hi, buckets)
    if not result:
        return
    n = sum(r[6] for r in result)
    first = min(r[7] for r in result)
    if n > samples and first - lo > (hi - lo) // 2:
        # The steps start far from 0: the buckets again, over the span really used.
        result = _buckets(cur, run_id, key, first, hi, buckets)
    if n <= samples:
        for step, value, ts in cur.execute("SELECT step, value, timestamp FROM metrics WHERE run_id = $1 AND key = $2 "
                                           "ORDER BY step, timestamp", [run_id, key]).fetchall():
            rows.put(step, key, value, ts)
        return
    for s_min, v_min, t_min, s_max, v_max, t_max, _n, _first in result:
        rows.put(s_min, key, v_min, t_min)
        rows.put(s_max, key, v_max, t_max)


def _buckets(cur: duckdb.DuckDBPyConnection, run_id: str, key: str, lo: int, hi: int,
             buckets: int) -> list[tuple[Any, ...]]:
    """One pass over the key's points: per equal-width step bucket, where its minimum and maximum
    are, its point count and first step. NaN points never become a minimum or a maximum (DuckDB
    orders NaN above every number, so one NaN would hide a bucket's real maximum). The bucket's bounds are integers of ours spliced into
    the text: bound as parameters, DuckDB evaluates the bucket expression per row (measured 1.7
    times slower on a million points)."""
    width = f"(step - ({int(lo)})) * {int(buckets)} // {int(hi) - int(lo) + 1}"
    return cur.execute(
        "SELECT arg_min(step, value), min(value), arg_min(timestamp, value), arg_max(step, value), max(value), "
        f"arg_max(timestamp, value), count(*), min(step) FROM metrics WHERE run_id = $1 AND key = $2 "
        f"AND NOT isnan(value) GROUP BY {width}",
        [run_id, key]).fetchall()
