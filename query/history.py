"""Metric history across runs: MLflow's bulk and sampled (bulk-interval) views."""

from __future__ import annotations

import threading
from typing import Any, Iterator

import duckdb
import orjson

from runledger.query.reader import metric_value

_ORDER = "step, timestamp, value"

Point = tuple[float, int, int]  # (value, timestamp, step)


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


def _picks(n: int, k: int) -> list[int]:
    """Sorted positions (ranks in (step, timestamp, value) order) of the sampled rows: the
    NTILE(k) bucket starts; the last row takes the last slot when it did not start a bucket."""
    picks = _bucket_starts(n, k)
    if len(picks) > k:
        picks = picks[:k - 1] + picks[-1:]
    return picks


def sampled_history(cur: duckdb.DuckDBPyConnection, run_ids: list[str], key: str, max_results: int,
                    start_step: int | None, end_step: int | None) -> list[dict[str, Any]]:
    """Per run, at most `max_results` points: the first point of each of `max_results` equal
    buckets (SQL NTILE over (step, timestamp, value)) plus the run's last point, which takes the
    last slot when the sample is full. Runs are concatenated in request order (MLflow 3.x).

    The bucket starts are computed from the row count, so only the rows at those ranks are
    needed (see `_sample_run` for how they are found without sorting a long history)."""
    samples = sampled_points(cur, run_ids, key, max_results, start_step, end_step)
    return [{"key": key, "value": metric_value(v), "timestamp": ts, "step": s, "run_id": run_id}
            for run_id in run_ids for v, ts, s in samples[run_id]]


def sampled_points(cur: duckdb.DuckDBPyConnection, run_ids: list[str], key: str, max_results: int,
                   start_step: int | None, end_step: int | None) -> dict[str, list[Point]]:
    """The sample of each distinct run in `run_ids` (see `sampled_history`)."""
    step_filter, step_params = "", []
    if start_step is not None and end_step is not None:
        step_filter, step_params = " AND step BETWEEN $3 AND $4", [start_step, end_step]
    where = f"FROM metrics WHERE run_id = $1 AND key = $2{step_filter}"
    return {run_id: _sample_run(cur, where, [run_id, key, *step_params], max_results,
                                (run_id, key, start_step, end_step)) for run_id in dict.fromkeys(run_ids)}


def sampled_history_json(samples: dict[str, list[Point]], run_ids: list[str], key: str) -> Iterator[bytes]:
    """`{"metrics": sampled_history(...)}` as JSON bytes, one run at a time: up to 100 runs of
    2,500 points would otherwise be 250,000 dicts held at once (and copied again by the
    framework's encoder). `{}` when there is no point, as MLflow omits an empty list."""
    first = True
    for run_id in run_ids:
        points = samples[run_id]
        if not points:
            continue
        rows = orjson.dumps([{"key": key, "value": metric_value(v), "timestamp": ts, "step": st, "run_id": run_id}
                             for v, ts, st in points])[1:-1]
        yield (b'{"metrics":[' if first else b",") + rows
        first = False
    yield b"{}" if first else b"]}"


# What a (run, key, step range) looked like when last sampled: (rows, min step, max step), the
# bounds only when they were counted. It picks the cheapest first query next time (a UI polls
# the same charts); it is only a guess: every path checks what it relies on, in the same scan.
Shape = tuple[int, int | None, int | None]
HintKey = tuple[str, str, int | None, int | None]
_SHAPES: dict[HintKey, Shape] = {}
_SHAPES_MAX = 4096
_SHAPES_LOCK = threading.Lock()
# Up to this many rows, one sorted query beats counting first (each query scans the table once).
_SORT_MAX = 50_000


def _remember(hint_key: HintKey, shape: Shape) -> None:
    with _SHAPES_LOCK:
        _SHAPES.pop(hint_key, None)
        _SHAPES[hint_key] = shape
        if len(_SHAPES) > _SHAPES_MAX:
            del _SHAPES[next(iter(_SHAPES))]


def _sample_run(cur: duckdb.DuckDBPyConnection, where: str, params: list[Any], k: int,
                hint_key: HintKey) -> list[Point]:
    """The sampled points of one run, in (step, timestamp, value) order.

    - Up to k rows every row is a sample: the first k + 1 rows (a top-N, which DuckDB answers by
      skipping row groups) tell whether that is the case, so short histories take one query.
    - A history known to be of moderate size (`_SORT_MAX`) and not shaped like a progression
      (below) is sorted in full, and the ranks taken.
    - Otherwise the count and the step bounds lo, hi decide. When the n steps can be the
      arithmetic progression lo, lo + d, ..., hi (d = (hi - lo) / (n - 1); the common case, one
      point per step), a bitmap of slot = (step - lo) // d proves it: n distinct slots in [0, n)
      make the slot of a row its rank, so the row of rank p is the one in slot p, and one scan
      collects them without a sort (`_progression_sample`). Other histories are sorted.

    Which of these runs first follows what this history looked like last time (`_SHAPES`)."""
    hint = _SHAPES.get(hint_key)
    if hint is None or hint[0] <= k:
        rows = cur.execute(f"SELECT value, timestamp, step {where} ORDER BY {_ORDER} LIMIT {k + 1}", params).fetchall()
        if len(rows) <= k:
            _remember(hint_key, (len(rows), None, None))
            return rows
        hint = None
    elif hint[0] <= _SORT_MAX and not _is_progression_shape(*hint):
        sample, n = _sorted_sample(cur, where, params, k)
        _remember(hint_key, (n, None, None))
        return sample
    # The count, the bounds and the rows taken by rank must come from one snapshot while the
    # projector appends: one transaction for the queries from here on.
    cur.execute("BEGIN TRANSACTION")
    try:
        shape = hint if hint is not None and hint[1] is not None else None
        if shape is None:
            (n, lo, hi), = cur.execute(f"SELECT count(*), min(step), max(step) {where}", params).fetchall()
            shape = (n, lo, hi)
            _remember(hint_key, shape)
        for _ in range(2):  # a remembered shape may be out of date: then once more with the true one
            n, lo, hi = shape
            if n <= k or not _is_progression_shape(n, lo, hi):
                break
            actual, sample = _progression_sample(cur, where, params, k, shape)
            if actual == shape:
                if sample is not None:
                    return sample
                break
            shape = actual
            _remember(hint_key, shape)
        sample, n = _sorted_sample(cur, where, params, k)
        if n != shape[0]:
            _remember(hint_key, (n, None, None))
        return sample
    finally:
        cur.execute("ROLLBACK")


def _is_progression_shape(n: int, lo: int | None, hi: int | None) -> bool:
    """Whether n steps from lo to hi can be lo, lo + d, ..., hi for an integer d >= 1 (with
    hi - lo representable, so that step - lo cannot overflow)."""
    if lo is None or hi is None:
        return False
    span = hi - lo
    return n > 1 and span >= n - 1 and span % (n - 1) == 0 and span < 2 ** 63


def _rank_predicate(x: str, n: int, k: int) -> str:
    """SQL that is true exactly when the rank `x` (0 <= x < n, n > k) is in `_picks(n, k)`:
    bucket b starts at b * (q + 1) while b < r, at b * q + r after (q, r = divmod(n, k))."""
    q, r = divmod(n, k)
    last = k - 1 if q == 1 else k - 2  # the last bucket start kept (row n - 1 takes the last slot)
    cond = f"{x} = {n - 1}"
    if last >= 0:
        starts = [f"{x} % {q} = 0"] if r == 0 else [
            f"({x} < {r * (q + 1)} AND {x} % {q + 1} = 0)", f"({x} >= {r * (q + 1)} AND ({x} - {r}) % {q} = 0)"]
        cond += f" OR ({x} <= {last * q + min(last, r)} AND ({' OR '.join(starts)}))"
    return cond


def _progression_sample(cur: duckdb.DuckDBPyConnection, where: str, params: list[Any], k: int,
                        shape: Shape) -> tuple[Shape, list[Point] | None]:
    """One scan: the actual (count, min step, max step), and, if that is `shape` and the slots
    (step - lo) // d of its n rows are distinct, the rows of ranks `_picks(n, k)` (else None).
    Slots are monotone in step, so n distinct slots in [0, n) are exactly the ranks. Rows outside
    [lo, hi] (when `shape` is out of date) get no slot, so nothing can overflow."""
    n, lo, hi = shape
    assert lo is not None and hi is not None
    d = (hi - lo) // (n - 1)
    i = len(params)
    slot = f"(CASE WHEN step BETWEEN ${i + 1} AND ${i + 2} THEN step - ${i + 1} END)"
    if d != 1:
        slot = f"({slot} // {d})"
    (count, low, high, slots, rows), = cur.execute(
        f"SELECT count(*), min(step), max(step), bit_count(bitstring_agg({slot}, 0, ${i + 3})), "
        f"list({{'v': value, 't': timestamp, 's': step}} ORDER BY step) FILTER (WHERE {_rank_predicate(slot, n, k)}) "
        f"{where}", [*params, lo, hi, n - 1]).fetchall()
    actual = (count, low, high)
    if actual != shape or slots != n or rows is None:
        return actual, None
    sample = [(r["v"], r["t"], r["s"]) for r in rows]
    return actual, (sample if [(s - lo) // d for _, _, s in sample] == _picks(n, k) else None)


def _sorted_sample(cur: duckdb.DuckDBPyConnection, where: str, params: list[Any], k: int) -> tuple[list[Point], int]:
    """The sampled points from the whole history sorted, and its number of rows."""
    import pyarrow as pa

    pts = cur.sql(f"SELECT value, timestamp, step {where} ORDER BY {_ORDER}", params=params).to_arrow_table()
    n = pts.num_rows
    if n > k:
        pts = pts.take(pa.array(_picks(n, k), pa.int64()))
    cols = pts.to_pydict()
    return list(zip(cols["value"], cols["timestamp"], cols["step"])), n


def bulk_history(cur: duckdb.DuckDBPyConnection, run_ids: list[str], key: str,
                 max_results: int) -> list[dict[str, Any]]:
    """Full histories of several runs (sorted by run id), cut to `max_results` points overall."""
    rows = cur.execute(
        "SELECT run_id, value, timestamp, step FROM metrics WHERE run_id IN (SELECT unnest(?::VARCHAR[])) "
        "AND key = ? ORDER BY run_id, timestamp, step, value LIMIT ?", [sorted(set(run_ids)), key, max_results]
    ).fetchall()
    return [{"key": key, "value": metric_value(v), "timestamp": ts, "step": s, "run_id": r} for r, v, ts, s in rows]
