"""metrics/get-history (complete and paged), get-history-bulk-interval and get-history-bulk."""

from __future__ import annotations

from typing import Any

import httpx
import pytest


def _run_with_points(api: httpx.Client, name: str, steps: range, key: str = "m") -> str:
    exp = api.post("experiments/create", json={"name": name}).json()["experiment_id"]
    run_id = api.post("runs/create", json={"experiment_id": exp}).json()["run"]["info"]["run_id"]
    points = [{"key": key, "value": float(s) / 10, "timestamp": 1000 + s, "step": s} for s in steps]
    for i in range(0, len(points), 1000):
        r = api.post("runs/log-batch", json={"run_id": run_id, "metrics": points[i:i + 1000]})
        assert r.status_code == 200, r.text
    return run_id


@pytest.fixture(scope="module")
def thirty(server: Any) -> str:
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=30) as api:
        return _run_with_points(api, "thirty", range(1, 31))


def test_full_history_is_complete_and_ordered_without_max_results(api: httpx.Client) -> None:
    run_id = _run_with_points(api, "full-3000", range(3000))
    body = api.get("metrics/get-history", params={"run_id": run_id, "metric_key": "m"}).json()
    assert [m["step"] for m in body["metrics"]] == list(range(3000))
    assert "next_page_token" not in body


def test_paged_history_returns_every_point_once(api: httpx.Client, thirty: str) -> None:
    steps, token = [], None
    while True:
        params = {"run_id": thirty, "metric_key": "m", "max_results": 7}
        if token:
            params["page_token"] = token
        body = api.get("metrics/get-history", params=params).json()
        steps += [m["step"] for m in body["metrics"]]
        token = body.get("next_page_token")
        if not token:
            break
    assert steps == list(range(1, 31))


def test_history_of_unknown_key_is_empty_object(api: httpx.Client, thirty: str) -> None:
    assert api.get("metrics/get-history", params={"run_id": thirty, "metric_key": "nope"}).json() == {}


def test_sampled_history_keeps_bucket_starts_and_the_last_point(api: httpx.Client, thirty: str) -> None:
    # Observed on MLflow 3.17: 30 points sampled to 5 -> steps 1, 7, 13, 19, 30.
    body = api.get("metrics/get-history-bulk-interval",
                   params={"run_ids": thirty, "metric_key": "m", "max_results": 5}).json()
    assert [m["step"] for m in body["metrics"]] == [1, 7, 13, 19, 30]
    assert all(m["run_id"] == thirty for m in body["metrics"])


def test_sampled_history_respects_the_step_range(api: httpx.Client, thirty: str) -> None:
    body = api.get("metrics/get-history-bulk-interval", params={
        "run_ids": thirty, "metric_key": "m", "max_results": 3, "start_step": 10, "end_step": 20}).json()
    steps = [m["step"] for m in body["metrics"]]
    assert steps[0] == 10 and steps[-1] == 20 and len(steps) == 3


def test_sampled_history_of_several_runs_follows_request_order(api: httpx.Client, thirty: str) -> None:
    other = _run_with_points(api, "other-10", range(10))
    body = api.get("metrics/get-history-bulk-interval",
                   params=[("run_ids", other), ("run_ids", thirty), ("metric_key", "m"), ("max_results", 100)]).json()
    runs = [m["run_id"] for m in body["metrics"]]
    assert runs == [other] * 10 + [thirty] * 30


@pytest.mark.parametrize("params, message", [
    ({"metric_key": "m"}, "Missing value for required parameter 'run_ids'"),
    ({"run_ids": "x", "metric_key": "m", "max_results": 0}, "between 1 and 2500"),
    ({"run_ids": "x", "metric_key": "m", "max_results": 2501}, "between 1 and 2500"),
    ({"run_ids": "x", "metric_key": "m", "start_step": 1}, "both must be specified"),
    ({"run_ids": "x", "metric_key": "m", "start_step": 5, "end_step": 1}, "greater than start_step"),
])
def test_sampled_history_rejects_bad_parameters(api: httpx.Client, params: dict, message: str) -> None:
    r = api.get("metrics/get-history-bulk-interval", params=params)
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert message in r.json()["message"]


def test_bulk_history_exists_only_under_ajax_api(server: Any, thirty: str) -> None:
    params = {"run_id": thirty, "metric_key": "m", "max_results": 4}
    ajax = httpx.get(f"{server.url}/ajax-api/2.0/mlflow/metrics/get-history-bulk", params=params)
    assert ajax.status_code == 200
    assert [(m["step"], m["run_id"]) for m in ajax.json()["metrics"]] == [(s, thirty) for s in (1, 2, 3, 4)]
    plain = httpx.get(f"{server.url}/api/2.0/mlflow/metrics/get-history-bulk", params=params)
    assert plain.status_code == 404 and plain.json()["error_code"] == "ENDPOINT_NOT_FOUND"
