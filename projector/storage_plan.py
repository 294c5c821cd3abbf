"""Storage planning for a folded batch: which metric points the store may insert without
looking for a stored repeat. Not a tracking rule (the fold decides what is applied); a plan
that is too cautious only costs the store a check, one that is too bold would store a
duplicate, so every proof here errs towards checking.

`mark_fresh_metrics` fills `MetricRows.fresh` and `.distinct` of the batch's changes from the
state the batch was folded over; `fold_batch` calls it once the batch is folded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from runledger.projector import step_cover

if TYPE_CHECKING:
    from runledger.projector.fold import BatchChanges, FoldState


def mark_fresh_metrics(changes: BatchChanges, state: FoldState) -> None:
    """Mark the points that cannot repeat a stored point or an earlier point of the batch,
    so the store need not look for repeats.

    Two proofs. A chunk whose steps lie outside its keys' step covers (projector.step_cover)
    repeats nothing: all of it is new. Otherwise, point by point: a stored point of (run,
    key) has timestamp <= the latest timestamp and step <= the latest step known before
    this batch (the two latest-metric rules keep exactly those maxima), so a point with a
    greater timestamp or a greater step is new. Each chunk then raises its keys' bounds
    and widens their covers by its own extent. Appending in time or step order, or in
    step ranges of their own (concurrent writers), is all new; a retried request or a
    backfill is checked. A chunk laid out in step order (or key by key) is also proven
    free of repeats within itself, so the store can skip its DISTINCT.
    """
    m = changes.metrics
    covers = changes.step_cover
    bounds: dict[tuple[str, str], tuple[int | None, int | None]] = {}
    for i, chunk in enumerate(m.chunks):
        run_id = chunk.column("run_id")[0].as_py()
        keys = chunk.column("key").combine_chunks()
        encoded = pc.dictionary_encode(keys)
        unique = encoded.dictionary.to_pylist()
        ts, step = chunk.column("timestamp").combine_chunks(), chunk.column("step").combine_chunks()
        key_bounds = []
        for k in unique:
            if (run_id, k) not in bounds:
                by_ts = state.latest["timestamp"].get((run_id, k))
                by_step = state.latest["step"].get((run_id, k))
                bounds[(run_id, k)] = (by_ts.timestamp if by_ts else None, by_step.step if by_step else None)
            key_bounds.append(bounds[(run_id, k)])
        ts_extent, step_extent = pc.min_max(ts).as_py(), pc.min_max(step).as_py()
        ts_max, step_min, step_max = ts_extent["max"], step_extent["min"], step_extent["max"]
        apart = True
        for k, (b_ts, b_step) in zip(unique, key_bounds):
            # Raised by the whole chunk's extent: a bound may only be too high and a cover
            # too wide (which sends more points to the store's check), never the reverse.
            bounds[(run_id, k)] = (ts_max if b_ts is None else max(b_ts, ts_max),
                                   step_max if b_step is None else max(b_step, step_max))
            cover = covers.get((run_id, k))
            if cover is None:
                cover = state.step_cover.get((run_id, k)) or step_cover.up_to(b_step)
            apart = apart and not step_cover.overlaps(cover, step_min, step_max)
            covers[(run_id, k)] = step_cover.widen(cover, step_min, step_max)
        known = [b for b in key_bounds if b[0] is not None]
        if (apart  # no step of the chunk was logged for its keys before
                or not known  # nothing stored or earlier in the batch for these keys
                # the whole chunk is past everything known
                or ts_extent["min"] > max(b[0] for b in known) or step_min > max(b[1] for b in known)):
            # All new; only then does the store care whether it is distinct in itself.
            m.distinct[i] = _in_step_or_key_order(encoded.indices, step, len(unique), step_min, step_max)
            continue
        ts_bound = pc.take(pa.array([b[0] for b in key_bounds], pa.int64()), encoded.indices)
        step_bound = pc.take(pa.array([b[1] for b in key_bounds], pa.int64()), encoded.indices)
        fresh = pc.or_kleene(pc.greater(ts, ts_bound), pc.greater(step, step_bound))
        m.fresh[i] = pc.fill_null(fresh, True)  # null bound: key never seen


def _in_step_or_key_order(key_ix: pa.Array, step: pa.Array, n_keys: int, lo: int, hi: int) -> bool:
    """Whether no (key, step) occurs twice in a chunk whose steps span [lo, hi], proven cheaply
    for the usual layouts: (step, key) strictly increasing (all keys at step 0, then step 1,
    ...) or (key, step) strictly increasing (one key's steps after another's). Two equal points
    share key and step."""
    n = len(step)
    if n < 2:
        return True
    if n_keys == 1:
        return bool(pc.all(pc.greater(step.slice(1), step.slice(0, n - 1))).as_py())
    k = key_ix.cast(pa.int64())
    try:
        for combined in (pc.add_checked(pc.multiply_checked(pc.subtract_checked(step, pa.scalar(lo)), n_keys), k),
                         pc.add_checked(pc.multiply_checked(k, hi - lo + 1), pc.subtract_checked(step, pa.scalar(lo)))):
            if pc.all(pc.greater(combined.slice(1), combined.slice(0, n - 1))).as_py():
                return True
    except (pa.ArrowInvalid, OverflowError):
        return False  # steps too far apart to combine: let the store's DISTINCT decide
    return False
