"""MLflow's tracking rules that need more than a line, each stated once."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from runledger.ingest.contract.entities import RUN_NAME_TAG, RUN_STATUSES
from runledger.projector.rows import LatestPoint

__all__ = ["RUN_NAME_TAG", "RUN_STATUSES", "newer"]


def newer(rule: str, new: LatestPoint, old: LatestPoint) -> bool:
    """Whether `new` replaces `old` as a run's latest value of a metric key.

    rule "timestamp" (the API reference's contract): greater timestamp wins, ties go to the
    greater value. rule "step" (MLflow's OSS SQL store): compare (step, timestamp, value).

    NaN, as MLflow's SQL store behaves: it sanitizes a NaN to value 0 (with an is_nan flag)
    before comparing, for the incoming point and the stored latest alike. So on a tie of the
    other fields a NaN beats a negative value and loses to a positive one, and a point equal
    to the latest does not replace it. Deciding this from the stored form keeps the result
    independent of how the log is cut into batches.
    """
    if rule == "step":
        new_key, old_key = (new.step, new.timestamp), (old.step, old.timestamp)
    else:
        new_key, old_key = (new.timestamp,), (old.timestamp,)
    if new_key != old_key:
        return new_key > old_key
    new_value = 0.0 if math.isnan(new.value) else new.value
    old_value = 0.0 if math.isnan(old.value) else old.value
    return new_value > old_value


def batch_latest_candidates(chunks: list[pa.Table], one_run_per_chunk: bool = False
                            ) -> dict[str, list[tuple[str, str, float, int, int]]]:
    """For each rule, each (run, key)'s best point among the batch's points (tables of columns
    run_id, key, value, timestamp, step, in fold order): the FIRST point with the greatest
    sort key, i.e. (timestamp, value) or (step, timestamp, value) with NaN counted as 0.
    Folding the points one by one with `newer` keeps exactly that point, since only a
    strictly greater key wins.

    The best point has its key's greatest timestamp (or step) in the batch, so the batch is
    first cut down, with one hash aggregate, to the rows holding such a maximum (usually one
    or two per key); the few left are compared in Python (or sorted, if there are many ties).
    A synchronous write is a handful of points and goes straight to Python, which is cheaper
    than Arrow's per-call overhead there.

    With `one_run_per_chunk` (the fold's chunks are one event's points each) the cut is made
    chunk by chunk, grouping by key alone: a row at its (run, key)'s greatest timestamp or step
    in the batch is at it within its chunk too, so the rows kept are a superset of the
    batch-wide ones, still in fold order, and the comparison below picks the same point; but
    the 32-character run id repeated on every row is never hashed."""
    points = pa.concat_tables(chunks) if chunks else _EMPTY
    if points.num_rows > SMALL_BATCH_POINTS:
        if one_run_per_chunk and len(chunks) > 1:
            # One pass over the whole batch grouped by (chunk, key): not one pass per chunk,
            # whose fixed cost of Arrow calls made a replay of 1,000-point events ~0.25 s CPU
            # per million points slower than grouping by (run, key). What is left (about a row
            # per chunk and key) is then cut by (run, key) as usual, which keeps exactly the
            # batch-wide rows: every one of them survived the first cut.
            points = _rows_at_a_maximum(points, chunk_rows=[c.num_rows for c in chunks])
        if points.num_rows > SMALL_BATCH_POINTS:
            points = _rows_at_a_maximum(points, by_key_only=one_run_per_chunk and len(chunks) == 1)
    if points.num_rows <= SMALL_BATCH_POINTS:
        return candidates_python(points)
    return candidates_arrow(points)


def _rows_at_a_maximum(points: pa.Table, by_key_only: bool = False, chunk_rows: list[int] | None = None) -> pa.Table:
    """The rows holding their (run, key)'s greatest timestamp or greatest step, in order
    (`by_key_only`: the rows are all of one run; `chunk_rows`: the rows come in chunks of these
    sizes, each of one run, and are grouped by (chunk, key) instead)."""
    keys = pc.dictionary_encode(points.column("key").combine_chunks())
    if by_key_only:
        group = keys.indices
    elif chunk_rows is not None:
        # Each row's chunk number, decoded from run ends (empty chunks hold no row to number).
        ends = list(itertools.accumulate(n for n in chunk_rows if n))
        chunk = pc.run_end_decode(pa.RunEndEncodedArray.from_arrays(pa.array(ends, pa.int32()),
                                                                    pa.array(range(len(ends)), pa.int64())))
        pair = pc.add(pc.multiply(chunk, len(keys.dictionary)), keys.indices.cast(pa.int64()))
        group = pc.dictionary_encode(pair).indices
    else:
        runs = pc.dictionary_encode(points.column("run_id").combine_chunks())
        # (run, key) as one dense group number: hash aggregates and takes on integers only.
        pair = pc.add(pc.multiply(runs.indices.cast(pa.int64()), len(keys.dictionary)), keys.indices.cast(pa.int64()))
        group = pc.dictionary_encode(pair).indices
    ts, step = points.column("timestamp"), points.column("step")
    maxima = pa.table({"g": group, "ts": ts, "st": step}).group_by("g", use_threads=False).aggregate(
        [("ts", "max"), ("st", "max")]).sort_by("g")
    mask = pc.or_(pc.equal(ts, pc.take(maxima.column("ts_max"), group)),
                  pc.equal(step, pc.take(maxima.column("st_max"), group)))
    return points.filter(mask)


SMALL_BATCH_POINTS = 512
_EMPTY = pa.schema([("run_id", pa.string()), ("key", pa.string()), ("value", pa.float64()),
                    ("timestamp", pa.int64()), ("step", pa.int64())]).empty_table()


def candidates_python(points: pa.Table) -> dict[str, list[tuple[str, str, float, int, int]]]:
    rows = list(zip(*(points.column(c).to_pylist() for c in ("run_id", "key", "value", "timestamp", "step"))))
    out = {}
    for rule in ("timestamp", "step"):
        best: dict[tuple[str, str], tuple[tuple[Any, ...], int]] = {}
        for i, (run_id, key, v, ts, step) in enumerate(rows):
            v0 = 0.0 if v != v else v  # NaN compares as 0
            sort_key = (ts, v0) if rule == "timestamp" else (step, ts, v0)
            current = best.get((run_id, key))
            if current is None or sort_key > current[0]:
                best[(run_id, key)] = (sort_key, i)
        out[rule] = [rows[i] for _, i in best.values()]
    return out


def candidates_arrow(points: pa.Table) -> dict[str, list[tuple[str, str, float, int, int]]]:
    n = points.num_rows
    if n == 0:
        return {"timestamp": [], "step": []}
    value = points.column("value")
    base = pa.table({
        "run_id": points.column("run_id"), "key": points.column("key"),
        "timestamp": points.column("timestamp"), "step": points.column("step"),
        "v0": pc.if_else(pc.is_nan(value), 0.0, value), "i": pa.array(range(n), pa.int64()),
    })
    order = {"timestamp": ["timestamp", "v0"], "step": ["step", "timestamp", "v0"]}
    out = {}
    for rule, fields in order.items():
        sort = [("run_id", "ascending"), ("key", "ascending"), *((f, "descending") for f in fields), ("i", "ascending")]
        ix = pc.sort_indices(base, sort_keys=sort)
        runs, keys = pc.take(base["run_id"], ix), pc.take(base["key"], ix)
        changed = pc.or_(pc.not_equal(runs.slice(1), runs.slice(0, n - 1)),
                         pc.not_equal(keys.slice(1), keys.slice(0, n - 1)))
        starts = pa.concat_arrays([pa.array([0], pa.uint64()),
                                   pc.add(pc.indices_nonzero(changed), pa.scalar(1, pa.uint64()))])
        best = points.take(pc.take(ix, starts))
        out[rule] = list(zip(*(best.column(c).to_pylist() for c in ("run_id", "key", "value", "timestamp", "step"))))
    return out


def param_conflict_message(run_id: str, key: str, old: str, new: str) -> str:
    return (f"Changing param values is not allowed. Param with key='{key}' was already logged "
            f"with value='{old}' for run ID='{run_id}'. Attempted logging new value '{new}'.")
