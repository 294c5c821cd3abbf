"""Bucketed metric history: a long series cut into N equal x-ranges, each summarised by the min,
max and last value of its points, so a chart of a million points keeps every spike (a sampled
history would drop the points between its samples).

x is the step or the timestamp (ms). The range [start, end] defaults to the series' own extent
and is cut into `buckets` equal slices; empty slices are left out. When the range holds no more
points than `buckets`, every point is its own bucket (min = max = last), so a chart zoomed in
far enough draws the raw points. Used by the UI's charts (refetched finer on zoom) and by the
W&B dialect's sampled history.

NaN values never become a bucket's min or max (they would hide every real value); a bucket
whose last point is NaN says so with `last` = NaN, and `nan` counts them per bucket.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal

import duckdb

XAxis = Literal["step", "time"]
_X_COLUMN = {"step": "step", "time": "timestamp"}
# The other column breaks ties between points at the same x: "last" is the point with the
# greatest (x, tie) pair (points equal in both are ordered arbitrarily).
_TIE_COLUMN = {"step": "timestamp", "time": "step"}
MAX_BUCKETS = 10_000


@dataclass(frozen=True, slots=True)
class BucketedHistory:
    """Column-wise buckets, in x order. `x_first`/`x_last` are the smallest and greatest x of
    the bucket's points (the chart draws the bucket at `x_last`, where `last` was logged)."""

    run_id: str
    key: str
    x: XAxis
    start: int | None          # the range summarised (None: the series is empty)
    end: int | None
    points: int                # points in [start, end]
    exact: bool                # every point is its own bucket
    x_first: list[int]
    x_last: list[int]
    min: list[float | None]    # None when every point of the bucket is NaN
    max: list[float | None]
    last: list[float]
    count: list[int]
    nan: list[int]

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "key": self.key, "x": self.x, "start": self.start, "end": self.end,
                "points": self.points, "exact": self.exact,
                "buckets": {"x_first": self.x_first, "x_last": self.x_last, "min": self.min, "max": self.max,
                            "last": self.last, "count": self.count, "nan": self.nan}}


def bucket_history(cur: duckdb.DuckDBPyConnection, run_id: str, key: str, *, buckets: int = 1000,
                   x: XAxis = "step", start: int | None = None, end: int | None = None) -> BucketedHistory:
    """The (run, key) series between `start` and `end` (inclusive, either may be None for the
    series' own bound) summarised in at most `buckets` buckets of equal x-width.

    In one snapshot. The buckets need the range's bounds first: given ones are used as they
    are; a missing one is the series' own min or max x. That is taken from what the last answer
    found (`_EXTENTS`) or, the first time, guessed from the latest-metric tables (`_guess`),
    and checked in the summary's own scan: the summary also says where the points begin and
    end, and if that is not the bound used, it is computed again with the true bound. So most
    requests cost one scan, a series that grew or began elsewhere two."""
    if x not in _X_COLUMN:
        raise ValueError(f"x must be 'step' or 'time', got {x!r}")
    if not 1 <= buckets <= MAX_BUCKETS:
        raise ValueError(f"buckets must be between 1 and {MAX_BUCKETS}, got {buckets}")
    xc, tie = _X_COLUMN[x], _TIE_COLUMN[x]
    where, params = "FROM metrics WHERE run_id = ? AND key = ?", [run_id, key]
    if start is not None:
        where, params = where + f" AND {xc} >= ?", [*params, start]
    if end is not None:
        where, params = where + f" AND {xc} <= ?", [*params, end]
    hint_key = (run_id, key, x, start, end)
    cur.execute("BEGIN TRANSACTION")
    try:
        known = _EXTENTS.get(hint_key) if start is None or end is None else (start, end)
        if known is None:
            known = _guess(cur, run_id, key, x)
        if known is None:
            (n, data_lo, data_hi), = cur.execute(f"SELECT count(*), min({xc}), max({xc}) {where}", params).fetchall()
            if n == 0:
                return _empty(run_id, key, x, start, end)
            _remember(hint_key, (data_lo, data_hi))
            if n <= buckets:
                return _points(cur, run_id, key, x, where, params, start, end, data_lo, data_hi)
            known = (data_lo, data_hi)
        for _ in range(2):
            lo = known[0] if start is None else start
            hi = known[1] if end is None else end
            summary = _summary(cur, where, params, xc, tie, lo, hi, buckets)
            if not summary[0]:
                _forget(hint_key)
                return _empty(run_id, key, x, start, end)
            bs, x_first, x_last, vmin, vmax, vlast, counts, nan = summary
            actual = (min(x_first), max(x_last))
            if start is None or end is None:
                _remember(hint_key, actual)
            if (start is None and actual[0] != lo) or (end is None and actual[1] != hi):
                known = actual   # the series moved since its bounds were remembered: again, with the true ones
                continue
            n = sum(counts)
            if n <= buckets:
                return _points(cur, run_id, key, x, where, params, start, end, lo, hi)
            return BucketedHistory(run_id, key, x, lo, hi, n, False, x_first, x_last, vmin, vmax, vlast, counts, nan)
        raise AssertionError("the second summary used the bounds the first one found, in the same snapshot")
    finally:
        cur.execute("ROLLBACK")


def _guess(cur: duckdb.DuckDBPyConnection, run_id: str, key: str, x: XAxis) -> tuple[int, int] | None:
    """Likely bounds of a series never summarised before, from one row of the latest-metric
    tables (a primary-key lookup, not a scan): its greatest step (the step rule's latest point)
    or greatest timestamp (the timestamp rule's), from step 0 or the run's start time. Checked
    like a remembered extent; right for most series, which saves their bounds scan."""
    if x == "step":
        rows = cur.execute("SELECT step, NULL FROM latest_metrics_by_step WHERE run_id = ? AND key = ?",
                           [run_id, key]).fetchall()
    else:
        rows = cur.execute("SELECT m.timestamp, r.start_time FROM latest_metrics m JOIN runs r USING (run_id) "
                           "WHERE m.run_id = ? AND m.key = ?", [run_id, key]).fetchall()
    if not rows:
        return None
    hi, begin = rows[0]
    if x == "step":
        return min(0, hi), hi
    # Points logged with timestamps before the run's start (clients set both): no good guess.
    return (begin, hi) if begin is not None and begin <= hi else None


def _points(cur: duckdb.DuckDBPyConnection, run_id: str, key: str, x: XAxis, where: str, params: list[Any],
            start: int | None, end: int | None, lo: int, hi: int) -> BucketedHistory:
    """Every point of the range as its own bucket (the range holds no more than `buckets`)."""
    xc, tie = _X_COLUMN[x], _TIE_COLUMN[x]
    rows = cur.execute(f"SELECT {xc}, value {where} ORDER BY {xc}, {tie}, value", params).fetchall()
    if not rows:
        return _empty(run_id, key, x, start, end)
    xs = [r[0] for r in rows]
    vals = [r[1] for r in rows]
    mins: list[float | None] = [None if v != v else v for v in vals]
    return BucketedHistory(run_id, key, x, lo if start is None else start, hi if end is None else end, len(rows),
                           True, xs, list(xs), mins, list(mins), vals, [1] * len(rows),
                           [1 if v != v else 0 for v in vals])


def _summary(cur: duckdb.DuckDBPyConnection, where: str, params: list[Any], xc: str, tie: str, lo: int, hi: int,
             buckets: int) -> tuple[list[Any], ...]:
    """Columns (bucket, x_first, x_last, min, max, last, count, nan) of the non-empty buckets of
    [lo, hi]; points outside it (when `lo`/`hi` are out of date) land in an extra bucket below
    or above, and show in x_first/x_last, which is how the caller notices."""
    # Bucket b holds x in [lo + b * width, lo + (b + 1) * width): computed in DOUBLE, as
    # (x - lo) * buckets can pass int64 for large steps; rounding only moves a boundary.
    width = max((float(hi) - float(lo) + 1.0) / buckets, 1e-9)
    # Points outside [lo, hi] (bounds out of date) fall in bucket -1 or `buckets`: two groups at
    # most, however far off the bounds were, and their x_first/x_last tell the true bounds.
    bucket = (f"CASE WHEN {xc} < ? THEN -1 WHEN {xc} > ? THEN ? "
              f"ELSE least(floor(({xc}::DOUBLE - ?::DOUBLE) / ?), ?)::BIGINT END")
    bucket_params = [lo, hi, buckets, lo, width, buckets - 1]
    # "last" orders by (x, tie) packed in one HUGEINT: a struct ordering key costs twice as
    # much on a million points. min/max are plain (a FILTER per aggregate doubles the cost
    # too); DuckDB orders NaN above every number, so buckets holding a NaN are redone below.
    order_key = f"{xc}::HUGEINT * 18446744073709551616 + ({tie}::HUGEINT + 9223372036854775808)"
    rows = cur.execute(
        f"SELECT {bucket} AS b, min({xc}) AS x_first, max({xc}) AS x_last, min(value) AS vmin, "
        f"max(value) AS vmax, arg_max(value, {order_key}) AS vlast, count(*) AS n, "
        f"sum(isnan(value)::INTEGER) AS nan {where} GROUP BY b ORDER BY b",
        [*bucket_params, *params]).fetchall()
    if not rows:
        return ([],) * 8
    bs, x_first, x_last, vmin, vmax, vlast, counts, nan = (list(col) for col in zip(*rows))
    if any(nan):
        real = {b: (lo_v, hi_v) for b, lo_v, hi_v in cur.execute(
            f"SELECT {bucket} AS b, min(value), max(value) {where} AND NOT isnan(value) GROUP BY b",
            [*bucket_params, *params]).fetchall()}
        for i, b in enumerate(bs):
            if nan[i]:
                vmin[i], vmax[i] = real.get(b, (None, None))
    return bs, x_first, x_last, vmin, vmax, vlast, counts, nan


# The x extent each (run, key, x, start, end) had when last summarised: a guess that saves the
# bounds scan, always checked (see bucket_history). Bounded, oldest dropped first.
_EXTENTS: dict[tuple[Any, ...], tuple[int, int]] = {}
_EXTENTS_MAX = 4096
_EXTENTS_LOCK = threading.Lock()


def _remember(hint_key: tuple[Any, ...], extent: tuple[int, int]) -> None:
    with _EXTENTS_LOCK:
        _EXTENTS.pop(hint_key, None)
        _EXTENTS[hint_key] = extent
        if len(_EXTENTS) > _EXTENTS_MAX:
            del _EXTENTS[next(iter(_EXTENTS))]


def _forget(hint_key: tuple[Any, ...]) -> None:
    with _EXTENTS_LOCK:
        _EXTENTS.pop(hint_key, None)


def _empty(run_id: str, key: str, x: XAxis, start: int | None, end: int | None) -> BucketedHistory:
    return BucketedHistory(run_id, key, x, start, end, 0, True, [], [], [], [], [], [], [])


class BucketCache:
    """Rendered bucket answers (JSON bytes) of recent requests, so a chart asked for again (a
    reload, a zoom back out, a second viewer) costs no scan. The store's apply listener
    (`drop_changed`) moves a run on to a new generation whenever a committed batch adds or
    hides points of it; an answer is served only if computed in the run's current generation,
    and one computed while a batch was being applied is never stored (`token` before, `put`
    after). Bounded in bytes, least recently used dropped first."""

    def __init__(self, max_bytes: int = 32 << 20, max_runs: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[Any, ...], tuple[tuple[int, int], bytes]] = {}
        self._generation: dict[str, int] = {}
        self._epoch = 0          # moves on when the generations are forgotten (too many runs)
        self._bytes = 0
        self.max_bytes = max_bytes
        self.max_runs = max_runs

    def token(self, run_id: str) -> tuple[int, int]:
        with self._lock:
            return self._epoch, self._generation.get(run_id, 0)

    def get(self, run_id: str, request: tuple[Any, ...]) -> bytes | None:
        with self._lock:
            found = self._entries.pop((run_id, *request), None)
            if found is None:
                return None
            if found[0] != (self._epoch, self._generation.get(run_id, 0)):
                self._bytes -= len(found[1])
                return None
            self._entries[(run_id, *request)] = found   # most recently used last
            return found[1]

    def put(self, run_id: str, request: tuple[Any, ...], token: tuple[int, int], body: bytes) -> None:
        with self._lock:
            if token != (self._epoch, self._generation.get(run_id, 0)) or len(body) > self.max_bytes // 8:
                return
            old = self._entries.pop((run_id, *request), None)
            if old is not None:
                self._bytes -= len(old[1])
            self._entries[(run_id, *request)] = (token, body)
            self._bytes += len(body)
            while self._bytes > self.max_bytes and self._entries:
                oldest = next(iter(self._entries))
                self._bytes -= len(self._entries.pop(oldest)[1])

    def drop_runs(self, run_ids: set[str]) -> None:
        if not run_ids:
            return
        with self._lock:
            if len(self._generation) + len(run_ids) > self.max_runs:
                self._epoch += 1
                self._generation.clear()
                self._entries.clear()
                self._bytes = 0
            for run_id in run_ids:
                self._generation[run_id] = self._generation.get(run_id, 0) + 1

    def drop_changed(self, changes: Any) -> None:
        """Store.apply listener: the runs whose points a committed batch added or hid."""
        import pyarrow.compute as pc

        runs: set[str] = set()
        for chunk in changes.metrics.chunks:
            if chunk.num_rows:
                runs.update(pc.unique(chunk.column("run_id")).to_pylist())
        runs.update(r.run_id for r in changes.rewinds)
        self.drop_runs(runs)

    def __len__(self) -> int:
        return len(self._entries)
