"""Which steps a metric key may already have points at, as a few step intervals.

The fold uses it to prove points new without asking DuckDB: a stored point repeated exactly has
the same step, so a chunk whose steps fall outside every interval of its keys repeats nothing.
That is the case the latest-metric bounds alone miss: concurrent writers of one run (a
log-batch client pool, a backfill) land chunks out of step order, and a chunk below the latest
step would otherwise be checked against every stored point of its key.

A cover is a sorted tuple of disjoint closed intervals that contains every stored step (it may
contain more: it is only ever widened, never narrowed). Pure functions on immutable tuples.
"""

from __future__ import annotations

import bisect

Cover = tuple[tuple[int, int], ...]

# Beyond this many intervals the two closest ones are merged: the cover stays small whatever
# the arrival order, at the price of claiming a few steps that were never logged.
MAX_INTERVALS = 64
EVERYTHING_UP_TO_MIN = -(2 ** 63)


def up_to(step: int | None) -> Cover:
    """The cover known from the latest step alone (a run loaded from the store): all steps up
    to it, or nothing if the key has no points."""
    return () if step is None else ((EVERYTHING_UP_TO_MIN, step),)


def overlaps(cover: Cover, lo: int, hi: int) -> bool:
    """Whether some step in [lo, hi] may have a point."""
    return any(a <= hi and lo <= b for a, b in cover)


def widen(cover: Cover, lo: int, hi: int) -> Cover:
    """`cover` plus [lo, hi]; touching or overlapping intervals become one."""
    # The intervals [first, last) are the ones [lo, hi] touches (a touches b if a.hi + 1 >= b.lo).
    first = bisect.bisect_left(cover, lo - 1, key=lambda iv: iv[1])
    last = bisect.bisect_right(cover, hi + 1, lo=first, key=lambda iv: iv[0])
    if first < last:
        lo, hi = min(lo, cover[first][0]), max(hi, cover[last - 1][1])
    merged = [*cover[:first], (lo, hi), *cover[last:]]
    while len(merged) > MAX_INTERVALS:
        i = min(range(len(merged) - 1), key=lambda j: merged[j + 1][0] - merged[j][1])
        merged[i:i + 2] = [(merged[i][0], merged[i + 1][1])]
    return tuple(merged)
