"""Metric points through the fold cache and a real DuckDB store: every distinct point is stored
exactly once, however points repeat (within a request, across requests, across batches and
merged commits) and in whatever order they arrive. The store skips its duplicate checks for
points the fold proves new, so this pins that the proof is never wrong."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from runledger.ingest.contract.codec import encode
from tests.log_tools import fold_into_cached
from tests.test_fold import create_run, log_batch, log_metrics

point = st.tuples(st.sampled_from(["loss", "acc", "lr"]),
                  st.one_of(st.sampled_from([0.0, 1.0, -2.5]), st.just(math.nan)),
                  st.integers(0, 6), st.integers(-2, 6))
# A request: some fresh points in step order, then maybe repeats of earlier ones.
request = st.tuples(st.lists(point, max_size=12), st.integers(0, 3), st.booleans())


def _normal(rows: Any) -> list[tuple[Any, ...]]:
    return sorted(((r, k, "nan" if v != v else v, t, s) for r, k, v, t, s in rows), key=repr)


@settings(max_examples=30, deadline=None)
@given(requests=st.lists(st.tuples(st.sampled_from(["r1", "r2"]), request), max_size=10),
       seed=st.integers(0, 10_000))
def test_every_distinct_point_is_stored_once(tmp_path_factory: Any, requests: list, seed: int) -> None:
    rng = random.Random(seed)
    events, sent = [create_run("r1"), create_run("r2")], []
    for run, (points, repeats, as_batch) in requests:
        points = sorted(points, key=lambda p: (p[3], p[0]))  # step order, like a training loop
        points += [rng.choice(sent)[1:] for _ in range(repeats) if sent]
        if as_batch:
            events.append(log_batch(metrics=points, run=run))
        else:
            events.append(log_metrics(*points, run=run))
        sent += [(run, *p) for p in points]
    raw = [(0, i, encode(e)) for i, e in enumerate(events)]
    batches, i = [], 0
    while i < len(raw):
        n = rng.randint(1, 4)
        batches.append(raw[i:i + n])
        i += n
    path = str(tmp_path_factory.mktemp("dedup") / "m.duckdb")
    fold_into_cached(path, "t", batches, rng)
    con = duckdb.connect(path, read_only=True)
    try:
        stored = con.execute("SELECT run_id, key, value, timestamp, step FROM metrics").fetchall()
    finally:
        con.close()
    expected = {(r, k, "nan" if v != v else v, t, s) for r, k, v, t, s in sent}
    assert _normal(stored) == sorted(expected, key=repr)  # each once: a list, not a set


def test_a_chunk_in_step_order_skips_the_distinct_check() -> None:
    from runledger.projector.fold import FoldState, fold_batch
    from tests.test_fold import rec

    result = fold_batch(FoldState(), [rec(create_run("r")), rec(log_metrics(
        *[(k, 1.0, 10, s) for s in range(3) for k in ("a", "b")], run="r"))])
    assert result.changes.metrics.distinct == [True]
    result = fold_batch(FoldState(), [rec(create_run("r")), rec(log_metrics(
        ("a", 1.0, 10, 1), ("a", 1.0, 10, 1), run="r"))])
    assert result.changes.metrics.distinct == [False]
