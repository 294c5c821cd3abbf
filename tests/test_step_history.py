"""query/step_history.py on a real DuckDB: history pivoted on steps, and the sampler that keeps
each key's minimum and maximum in every bucket."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from runledger.projector.schema import DDL
from runledger.query import step_history

START = 1_000_000


@pytest.fixture()
def con() -> duckdb.DuckDBPyConnection:
    db = duckdb.connect()
    for statement in DDL:
        db.execute(statement)
    return db


def log(con: duckdb.DuckDBPyConnection, run_id: str, key: str, points: list[tuple[int, float, int]]) -> None:
    """(step, value, timestamp) points, and the run's latest point per key, as the fold keeps them."""
    table = pa.table({"step": [p[0] for p in points], "value": [float(p[1]) for p in points],
                      "timestamp": [p[2] for p in points]})
    con.register("points", table)
    con.execute("INSERT INTO metrics SELECT ?, ?, value, timestamp, step FROM points", [run_id, key])
    con.unregister("points")
    s, v, ts = max(points)
    con.execute("INSERT OR REPLACE INTO latest_points VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [run_id, key, v, ts, s, v, ts, s])


def test_rows_pivot_keys_on_their_step_with_time_and_runtime(con) -> None:
    log(con, "r", "loss", [(0, 1.0, START + 10), (1, 0.5, START + 20)])
    log(con, "r", "acc", [(1, 0.7, START + 25)])
    rows = step_history.history_rows(con, "r", START, min_step=0, max_step=10, limit=100)
    assert rows == [{"_step": 0, "_timestamp": (START + 10) / 1000, "_runtime": 0.01, "loss": 1.0},
                    {"_step": 1, "_timestamp": (START + 25) / 1000, "_runtime": 0.025, "loss": 0.5, "acc": 0.7}]


def test_a_later_point_at_the_same_step_wins(con) -> None:
    log(con, "r", "loss", [(3, 1.0, START + 1), (3, 2.0, START + 9)])
    assert step_history.history_rows(con, "r", START, min_step=0, max_step=10, limit=10)[0]["loss"] == 2.0


def test_pages_are_half_open_step_ranges_with_a_row_limit(con) -> None:
    log(con, "r", "loss", [(s, float(s), START + s) for s in range(50)])
    page = step_history.history_rows(con, "r", START, min_step=10, max_step=20, limit=100)
    assert [r["_step"] for r in page] == list(range(10, 20))
    assert len(step_history.history_rows(con, "r", START, min_step=0, max_step=50, limit=7)) == 7


def test_non_finite_values_are_null_in_rows(con) -> None:
    log(con, "r", "loss", [(0, float("nan"), START), (1, float("inf"), START)])
    assert [r["loss"] for r in step_history.history_rows(con, "r", START, min_step=0, max_step=5, limit=5)] == [None, None]


def test_history_keys_gives_the_last_step(con) -> None:
    log(con, "r", "loss", [(s, 1.0, START + s) for s in range(7)])
    log(con, "r", "acc", [(9, 1.0, START)])
    assert step_history.history_keys(con, "r")["lastStep"] == 9
    assert step_history.history_keys(con, "nobody") is None


def test_sampling_keeps_every_spike_and_dip(con) -> None:
    points = [(s, 1.0, START + s) for s in range(10_000)]
    for s in (17, 4_321, 9_998):
        points[s] = (s, 50.0 + s, START + s)
    points[777] = (777, -3.0, START + 777)
    log(con, "r", "loss", points)
    rows = step_history.sampled_rows(con, "r", START, samples=100, keys=["loss"])
    assert len(rows) <= 100
    values = {r["_step"]: r["loss"] for r in rows}
    assert {17: 67.0, 4_321: 4_371.0, 9_998: 10_048.0, 777: -3.0}.items() <= values.items()
    assert [r["_step"] for r in rows] == sorted(values)


def test_naive_thinning_would_have_lost_the_spike(con) -> None:
    """The property above is not free: every 100th row misses a one-step spike."""
    points = [(s, 1.0, START + s) for s in range(10_000)]
    points[4_321] = (4_321, 99.0, START + 4_321)
    log(con, "r", "loss", points)
    assert 99.0 not in [v for s, v, _ in points[::100]]
    assert 99.0 in [r["loss"] for r in step_history.sampled_rows(con, "r", START, samples=100, keys=["loss"])]


def test_few_points_are_returned_whole(con) -> None:
    log(con, "r", "loss", [(s, float(s), START + s) for s in range(30)])
    assert len(step_history.sampled_rows(con, "r", START, samples=500)) == 30


def test_steps_far_from_zero_still_use_every_bucket(con) -> None:
    log(con, "r", "loss", [(1_000_000 + s, float(s % 7), START + s) for s in range(5_000)])
    rows = step_history.sampled_rows(con, "r", START, samples=200, keys=["loss"])
    assert 150 <= len(rows) <= 200


def test_sampling_every_key_without_a_key_list(con) -> None:
    log(con, "r", "loss", [(s, 1.0, START + s) for s in range(1_000)])
    log(con, "r", "acc", [(s, 2.0, START + s) for s in range(0, 1_000, 2)])
    rows = step_history.sampled_rows(con, "r", START, samples=50)
    assert any("loss" in r for r in rows) and any("acc" in r for r in rows)
    assert sum("loss" in r for r in rows) <= 50 and sum("acc" in r for r in rows) <= 50


def test_a_nan_point_does_not_hide_the_bucket_maximum(con) -> None:
    points = [(s, 1.0, START + s) for s in range(1_000)]
    points[10] = (10, float("nan"), START + 10)
    points[11] = (11, 7.0, START + 11)
    log(con, "r", "loss", points)
    rows = step_history.sampled_rows(con, "r", START, samples=10, keys=["loss"])
    assert 7.0 in [r["loss"] for r in rows]
