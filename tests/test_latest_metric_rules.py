"""The "latest" metric shown by runs/get and used by search, under both rules.

RUNLEDGER_LATEST_METRIC=timestamp (MLflow's API reference): greatest timestamp, ties -> greater value.
Default, RUNLEDGER_LATEST_METRIC=step (what `mlflow server` shows): greatest (step, timestamp, value).
Both servers below fold the same topic, each into its own DuckDB file (two replicas).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest


def _post(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{base}/api/2.0/mlflow/{path}", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _latest(base: str, run_id: str) -> dict[str, Any]:
    r = httpx.get(f"{base}/api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=30)
    assert r.status_code == 200, r.text
    return {m["key"]: m for m in r.json()["run"]["data"].get("metrics", [])}


@pytest.fixture(scope="module")
def replicas(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from tests.conftest import RunledgerServer

    topic = f"test-rules-{uuid.uuid4().hex[:8]}"
    by_ts = RunledgerServer(kafka_bootstrap, tmp_path_factory.mktemp("ts"), topic,
                            RUNLEDGER_LATEST_METRIC="timestamp").start()
    by_step = RunledgerServer(kafka_bootstrap, tmp_path_factory.mktemp("step"), topic).start()
    yield by_ts, by_step
    by_ts.stop()
    by_step.stop()


def _run_with(replicas: Any, points: list[tuple[Any, int, int]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Log (value, timestamp, step) points for key "m" in one log-batch via one replica; read both."""
    by_ts, by_step = replicas
    exp = _post(by_ts.url, "experiments/create", {"name": f"rules-{uuid.uuid4().hex}"})["experiment_id"]
    run_id = _post(by_ts.url, "runs/create", {"experiment_id": exp})["run"]["info"]["run_id"]
    for value, ts, step in points:  # one request per point, so order across requests is the log order
        _post(by_ts.url, "runs/log-metric", {"run_id": run_id, "key": "m", "value": value,
                                             "timestamp": ts, "step": step})
    _wait_until_readable(by_step.url, run_id, len(points))
    return _latest(by_ts.url, run_id)["m"], _latest(by_step.url, run_id)["m"]


def _wait_until_readable(base: str, run_id: str, points: int, timeout: float = 20.0) -> None:
    """The second replica folds the same log on its own; wait until it holds all `points`."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{base}/api/2.0/mlflow/metrics/get-history",
                      params={"run_id": run_id, "metric_key": "m"}, timeout=30)
        if r.status_code == 200 and len(r.json().get("metrics", [])) == points:
            return
        time.sleep(0.05)
    raise AssertionError(f"replica {base} never showed {points} points of run {run_id}")


def test_higher_step_with_older_timestamp_wins_only_under_step_rule(replicas: Any) -> None:
    by_ts, by_step = _run_with(replicas, [(0.5, 500, 10), (0.9, 9000, 2)])
    assert (by_ts["value"], by_ts["step"]) == (0.9, 2)
    assert (by_step["value"], by_step["step"]) == (0.5, 10)


def test_timestamp_tie_goes_to_greater_value_under_both_rules(replicas: Any) -> None:
    by_ts, by_step = _run_with(replicas, [(0.7, 1000, 1), (0.3, 1000, 1), (0.5, 1000, 1)])
    assert by_ts["value"] == 0.7
    assert by_step["value"] == 0.7


def test_newest_timestamp_wins_even_with_smaller_value(replicas: Any) -> None:
    by_ts, by_step = _run_with(replicas, [(0.9, 1000, 5), (0.1, 2000, 5)])
    assert by_ts["value"] == 0.1
    assert by_step["value"] == 0.1


def test_nan_counts_as_zero_in_a_tie_and_is_latest_when_newest(replicas: Any) -> None:
    by_ts, by_step = _run_with(replicas, [(0.4, 1000, 1), ("NaN", 1000, 1)])
    assert by_ts["value"] == 0.4 and by_step["value"] == 0.4
    by_ts, by_step = _run_with(replicas, [(0.4, 1000, 1), ("NaN", 2000, 2)])
    assert by_ts["value"] == "NaN" and by_step["value"] == "NaN"


def test_stored_nan_loses_a_tie_to_a_positive_value(replicas: Any) -> None:
    # MLflow stores NaN as 0 with an is_nan flag, so a tying positive value replaces it.
    by_ts, by_step = _run_with(replicas, [("NaN", 1000, 1), (0.2, 1000, 1)])
    assert by_ts["value"] == 0.2 and by_step["value"] == 0.2
    by_ts, _ = _run_with(replicas, [("NaN", 1000, 1), (-0.2, 1000, 1)])
    assert by_ts["value"] == "NaN"


def test_search_order_by_metric_uses_the_configured_rule(replicas: Any) -> None:
    by_ts_server, by_step_server = replicas
    exp = _post(by_ts_server.url, "experiments/create", {"name": "rules-search"})["experiment_id"]
    ids = {}
    for name, points in {"x": [(0.5, 500, 10), (0.9, 9000, 2)], "y": [(0.7, 600, 3)]}.items():
        run_id = _post(by_ts_server.url, "runs/create", {"experiment_id": exp, "run_name": name})["run"]["info"]["run_id"]
        ids[name] = run_id
        for value, ts, step in points:
            _post(by_ts_server.url, "runs/log-metric",
                  {"run_id": run_id, "key": "m", "value": value, "timestamp": ts, "step": step})
    _wait_until_readable(by_step_server.url, ids["x"], 2)
    _wait_until_readable(by_step_server.url, ids["y"], 1)

    def order(base: str) -> list[str]:
        body = _post(base, "runs/search", {"experiment_ids": [exp], "order_by": ["metrics.m DESC"]})
        return [r["info"]["run_name"] for r in body["runs"]]

    assert order(by_ts_server.url) == ["x", "y"]    # x latest = 0.9 (newest timestamp)
    assert order(by_step_server.url) == ["y", "x"]  # x latest = 0.5 (highest step)


def test_nan_is_reported_as_the_string_nan(replicas: Any) -> None:
    by_ts, _ = _run_with(replicas, [("NaN", 5, 0)])
    assert by_ts["value"] == "NaN"

