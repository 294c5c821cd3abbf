"""The fold's latest-metric candidates (projector.rules.batch_latest_candidates): cutting a
batch chunk by chunk (one event's points per chunk, so one run each) picks the same point per
(run, key) and rule as comparing every point of the batch one by one."""

from __future__ import annotations

import math
import random

import pyarrow as pa

from runledger.projector import rules


_SCHEMA = pa.schema([("run_id", pa.string()), ("key", pa.string()), ("value", pa.float64()),
                     ("timestamp", pa.int64()), ("step", pa.int64())])


def _by_hand(chunks: list[pa.Table]) -> dict[str, list[tuple]]:
    rows = [r for c in chunks for r in zip(*(c.column(n).to_pylist()
                                             for n in ("run_id", "key", "value", "timestamp", "step")))]
    out = {}
    for rule in ("timestamp", "step"):
        best: dict[tuple, tuple] = {}
        for row in rows:
            run_id, key, v, ts, step = row
            v0 = 0.0 if math.isnan(v) else v
            sort_key = (ts, v0) if rule == "timestamp" else (step, ts, v0)
            if (run_id, key) not in best or sort_key > best[(run_id, key)][0]:
                best[(run_id, key)] = (sort_key, row)
        out[rule] = sorted(repr(r) for _, r in best.values())   # repr: NaN equals NaN
    return out


def _event(rng: random.Random, run_id: str, n: int) -> pa.Table:
    keys = [f"k{rng.randrange(3)}" for _ in range(n)]
    # Few distinct timestamps and steps: many ties, decided by the value (NaN counts as 0).
    return pa.table({"run_id": [run_id] * n, "key": keys,
                     "value": [rng.choice([float("nan"), 0.0, -1.0, 1.0, rng.random()]) for _ in range(n)],
                     "timestamp": [rng.randrange(50) for _ in range(n)], "step": [rng.randrange(50) for _ in range(n)]}, schema=_SCHEMA)


def test_chunk_by_chunk_cut_picks_the_same_points_as_comparing_every_point() -> None:
    rng = random.Random(22)
    for _ in range(20):
        sizes = [rng.choice([0, 1, 30, 600, 1000]) for _ in range(rng.randrange(1, 12))]
        chunks = [_event(rng, f"run{rng.randrange(3)}", n) for n in sizes]
        got = rules.batch_latest_candidates(chunks, one_run_per_chunk=True)
        assert {rule: sorted(map(repr, v)) for rule, v in got.items()} == _by_hand(chunks)
