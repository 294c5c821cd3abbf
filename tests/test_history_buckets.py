"""Bucketed history (query.history_buckets, GET /api/runledger/v1/metrics/history-buckets):
each bucket keeps the min, max and last value of its x-range, so a spike is never lost."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Iterator

import duckdb
import httpx
import mlflow
import pytest

from runledger.projector.schema import create_schema
from runledger.query import history_buckets
from runledger.query.history_buckets import bucket_history

NAN = float("nan")


@pytest.fixture()
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect(str(tmp_path / "buckets.duckdb"))
    create_schema(c)
    yield c
    c.close()


def _insert(con: duckdb.DuckDBPyConnection, rows: list[tuple[str, str, float, int, int]]) -> None:
    """Rows (run_id, key, value, timestamp, step)."""
    con.execute("INSERT INTO metrics SELECT * FROM (SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
                "unnest(?::DOUBLE[]), unnest(?::BIGINT[]), unnest(?::BIGINT[]))", [list(c) for c in zip(*rows)])


def _reference(points: list[tuple[float, int, int]], k: int, x: str) -> list[tuple]:
    """(x_first, x_last, min, max, last, count) per non-empty bucket, computed the plain way."""
    xi = 2 if x == "step" else 1
    tie = 1 if x == "step" else 2
    lo, hi = min(p[xi] for p in points), max(p[xi] for p in points)
    width = (hi - lo + 1) / k
    groups: dict[int, list] = {}
    for p in points:
        groups.setdefault(min(int((p[xi] - lo) // width), k - 1), []).append(p)
    out = []
    for b in sorted(groups):
        g = groups[b]
        real = [p[0] for p in g if not math.isnan(p[0])]
        last = max(g, key=lambda p: (p[xi], p[tie], p[0]))
        out.append((min(p[xi] for p in g), max(p[xi] for p in g), min(real) if real else None,
                    max(real) if real else None, last[0], len(g)))
    return out


def _columns(found) -> list[tuple]:
    return list(zip(found.x_first, found.x_last, found.min, found.max, found.last, found.count))


def test_a_spike_between_samples_is_kept_as_its_buckets_max(con: duckdb.DuckDBPyConnection) -> None:
    rows = [("r", "loss", 1.0, 1000 + s, s) for s in range(100_000)]
    rows[54_321] = ("r", "loss", 500.0, 1000 + 54_321, 54_321)
    _insert(con, rows)
    found = bucket_history(con.cursor(), "r", "loss", buckets=100)
    assert len(found.max) == 100 and found.points == 100_000 and not found.exact
    assert max(v for v in found.max if v is not None) == 500.0
    spike_bucket = found.max.index(500.0)
    assert found.x_first[spike_bucket] <= 54_321 <= found.x_last[spike_bucket]


def test_buckets_match_a_plain_reference_on_random_series_by_step_and_by_time(con: duckdb.DuckDBPyConnection) -> None:
    rng = random.Random(7)
    points = []
    for _ in range(5000):
        step = rng.randrange(0, 3000)
        v = NAN if rng.random() < 0.01 else rng.uniform(-10, 10)
        points.append((v, rng.randrange(0, 10**6), step))
    _insert(con, [("r", "k", v, ts, st) for v, ts, st in points] + [("other", "k", 99.0, 1, 1)])
    for x in ("step", "time"):
        found = bucket_history(con.cursor(), "r", "k", buckets=37, x=x)  # type: ignore[arg-type]
        expected = _reference(points, 37, x)
        got = _columns(found)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g[:4] == e[:4] and g[5] == e[5]
            assert (math.isnan(g[4]) and math.isnan(e[4])) or g[4] == e[4]


@pytest.mark.parametrize("growth", ["after", "before", "inside"])
def test_a_series_that_changed_since_it_was_last_summarised_gets_the_same_buckets_as_a_first_read(
        con: duckdb.DuckDBPyConnection, growth: str) -> None:
    """The remembered extent is only a guess: new points past either end, or between, must give
    exactly what a first read (bounds scanned afresh) gives."""
    _insert(con, [("r", "k", float(s % 13), s, s) for s in range(1000, 5000)])
    history_buckets._EXTENTS.clear()
    bucket_history(con.cursor(), "r", "k", buckets=50)
    new = {"after": range(5000, 5400), "before": range(600, 1000), "inside": range(1000, 5000, 7)}[growth]
    _insert(con, [("r", "k", 100.0 + s % 5, s + 1, s) for s in new])
    warm = bucket_history(con.cursor(), "r", "k", buckets=50)
    history_buckets._EXTENTS.clear()
    cold = bucket_history(con.cursor(), "r", "k", buckets=50)
    assert warm == cold and warm.points == 4000 + len(new)


def test_a_range_that_fits_returns_every_point_as_its_own_bucket(con: duckdb.DuckDBPyConnection) -> None:
    _insert(con, [("r", "k", float(s * s), 10 * s, s) for s in range(10_000)])
    found = bucket_history(con.cursor(), "r", "k", buckets=1000, start=500, end=599)
    assert found.exact and found.points == 100
    assert found.x_last == list(range(500, 600))
    assert found.last == [float(s * s) for s in range(500, 600)] == found.min == found.max


def test_an_all_nan_bucket_has_no_min_or_max_and_says_how_many_nans(con: duckdb.DuckDBPyConnection) -> None:
    _insert(con, [("r", "k", NAN if s < 50 else 1.0, s, s) for s in range(100)])
    found = bucket_history(con.cursor(), "r", "k", buckets=2)
    assert found.min == [None, 1.0] and found.nan == [50, 0]
    assert math.isnan(found.last[0]) and found.last[1] == 1.0


def test_an_unknown_key_gives_no_buckets(con: duckdb.DuckDBPyConnection) -> None:
    found = bucket_history(con.cursor(), "r", "nothing", buckets=10)
    assert found.points == 0 and found.x_last == [] and found.start is None


def test_the_route_summarises_a_series_logged_by_mlflow(server) -> None:
    mlflow.set_tracking_uri(server.url)
    client = mlflow.MlflowClient()
    exp = client.create_experiment("buckets-route")
    run = client.create_run(exp)
    from mlflow.entities import Metric
    client.log_batch(run.info.run_id, metrics=[Metric("acc", float(s % 7), 1000 + s, s) for s in range(500)])
    base = f"{server.url}/api/runledger/v1/metrics/history-buckets"
    body = httpx.get(base, params={"run_id": run.info.run_id, "metric_key": "acc", "buckets": 10}).json()
    assert body["points"] == 500 and body["exact"] is False
    assert body["buckets"]["max"] == [6.0] * 10 and body["buckets"]["min"] == [0.0] * 10
    assert sum(body["buckets"]["count"]) == 500 and body["buckets"]["x_last"][-1] == 499


def test_the_route_answers_404_for_an_unknown_run_and_400_for_bad_buckets(server) -> None:
    base = f"{server.url}/api/runledger/v1/metrics/history-buckets"
    missing = httpx.get(base, params={"run_id": "nope", "metric_key": "acc"})
    assert missing.status_code == 404 and "nope" in missing.json()["message"]
    bad = httpx.get(base, params={"run_id": "nope", "metric_key": "acc", "buckets": 0})
    assert bad.status_code == 400 and "buckets" in bad.json()["message"]


def test_the_route_answers_again_with_the_points_logged_since_its_last_answer(server) -> None:
    mlflow.set_tracking_uri(server.url)
    client = mlflow.MlflowClient()
    run = client.create_run(client.create_experiment("buckets-cache")).info.run_id
    from mlflow.entities import Metric
    base = f"{server.url}/api/runledger/v1/metrics/history-buckets"
    params = {"run_id": run, "metric_key": "loss", "buckets": 20}
    for total in (100, 250):
        client.log_batch(run, metrics=[Metric("loss", 1.0, 1, s) for s in range(total - (150 if total == 250 else 100), total)])
        first = httpx.get(base, params=params).json()
        again = httpx.get(base, params=params).json()   # the kept answer
        assert first == again and first["points"] == total and first["end"] == total - 1


def test_a_kept_answer_is_dropped_when_its_run_changes_and_never_kept_if_computed_across_a_change() -> None:
    cache = history_buckets.BucketCache()
    token = cache.token("r")
    cache.put("r", ("k",), token, b"old")
    assert cache.get("r", ("k",)) == b"old" and cache.get("other", ("k",)) is None
    cache.drop_runs({"r"})
    assert cache.get("r", ("k",)) is None
    stale = cache.token("r")
    cache.drop_runs({"r"})          # a batch applied while that answer was computed
    cache.put("r", ("k",), stale, b"computed before the batch")
    assert cache.get("r", ("k",)) is None


def test_kept_answers_stay_within_their_byte_budget_dropping_the_least_recently_used() -> None:
    cache = history_buckets.BucketCache(max_bytes=1000)
    for i in range(5):
        cache.put(f"r{i}", (), cache.token(f"r{i}"), b"x" * 100)
    assert cache.get("r0", ()) is not None      # r0 is now the most recently used
    for i in range(5, 12):
        cache.put(f"r{i}", (), cache.token(f"r{i}"), b"x" * 100)
    assert len(cache) == 10 and cache.get("r0", ()) is not None and cache.get("r1", ()) is None


@pytest.mark.parametrize("x", ["step", "time"])
@pytest.mark.parametrize("latest_step,latest_ts,start_time", [
    (4999, 14999, 0),          # the latest-metric tables tell the truth
    (4000, 12000, 0),          # ... or lag behind (a guess too low)
    (9000, 99999, 50_000),     # ... or point past the series, with a run start after its first point
])
def test_bounds_guessed_from_the_latest_metric_tables_give_the_answer_of_a_bounds_scan(
        con: duckdb.DuckDBPyConnection, x: str, latest_step: int, latest_ts: int, start_time: int) -> None:
    _insert(con, [("r", "k", float((s * 31) % 17), 10_000 + s, s) for s in range(1000, 5000)])
    history_buckets._EXTENTS.clear()
    scanned = bucket_history(con.cursor(), "r", "k", buckets=64, x=x)  # type: ignore[arg-type]
    con.execute("INSERT INTO runs (run_id, experiment_id, status, lifecycle_stage, start_time) "
                "VALUES ('r', '0', 'FINISHED', 'active', ?)", [start_time])
    con.execute("INSERT INTO latest_points VALUES ('r', 'k', 1.0, ?, 0, 1.0, 0, ?)", [latest_ts, latest_step])
    history_buckets._EXTENTS.clear()
    guessed = bucket_history(con.cursor(), "r", "k", buckets=64, x=x)  # type: ignore[arg-type]
    assert guessed == scanned and guessed.points == 4000


def test_bounds_far_off_cost_one_extra_bucket_not_one_per_point(con: duckdb.DuckDBPyConnection) -> None:
    """A remembered extent far from the points (say, timestamps before the run's start) must not
    make every point its own group before the true bounds are known."""
    _insert(con, [("r", "k", 1.0, s, s) for s in range(20_000)])
    history_buckets._EXTENTS.clear()
    history_buckets._remember(("r", "k", "step", None, None), (10**12, 10**12 + 5))
    summary = history_buckets._summary(con.cursor(), "FROM metrics WHERE run_id = ? AND key = ?", ["r", "k"],
                                       "step", "timestamp", 10**12, 10**12 + 5, 10)
    assert summary[0] == [-1] and summary[1] == [0] and summary[2] == [19_999]
    assert bucket_history(con.cursor(), "r", "k", buckets=10).x_last[-1] == 19_999
