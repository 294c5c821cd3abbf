"""Synchronous writes are answered as soon as they are folded, before DuckDB has committed
them; any read that starts after the answer must still see the write (real Kafka + DuckDB)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import RunledgerServer


def ok(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 200, f"{resp.status_code} {resp.text[:300]}"
    return resp.json()


def test_every_write_is_visible_to_the_next_read(api: httpx.Client) -> None:
    exp_id = ok(api.post("/experiments/create", json={"name": "ryw"}))["experiment_id"]
    for i in range(40):
        run = ok(api.post("/runs/create", json={"experiment_id": exp_id, "start_time": 1}))["run"]
        run_id = run["info"]["run_id"]
        assert ok(api.get("/runs/get", params={"run_id": run_id}))["run"]["info"] == run["info"]
        ok(api.post("/runs/log-parameter", json={"run_id": run_id, "key": "i", "value": str(i)}))
        ok(api.post("/runs/log-metric", json={"run_id": run_id, "key": "m", "value": i, "timestamp": 5, "step": 0}))
        data = ok(api.get("/runs/get", params={"run_id": run_id}))["run"]["data"]
        assert data["params"] == [{"key": "i", "value": str(i)}]
        assert data["metrics"] == [{"key": "m", "value": i, "timestamp": 5, "step": 0}]
        found = ok(api.post("/runs/search", json={"experiment_ids": [exp_id], "filter": f"params.i = '{i}'"}))
        assert [r["info"]["run_id"] for r in found["runs"]] == [run_id]


def test_create_run_answers_with_what_get_run_returns(api: httpx.Client) -> None:
    run = ok(api.post("/runs/create", json={"experiment_id": "0", "start_time": 7, "run_name": "n",
                                            "user_id": "bob", "tags": [{"key": "b", "value": "2"},
                                                                       {"key": "a", "value": "1"}]}))["run"]
    assert ok(api.get("/runs/get", params={"run_id": run["info"]["run_id"]}))["run"] == run


def test_update_run_answers_with_the_updated_info(api: httpx.Client) -> None:
    run_id = ok(api.post("/runs/create", json={"experiment_id": "0"}))["run"]["info"]["run_id"]
    info = ok(api.post("/runs/update", json={"run_id": run_id, "status": "FINISHED", "end_time": 99,
                                             "run_name": "renamed"}))["run_info"]
    assert info == ok(api.get("/runs/get", params={"run_id": run_id}))["run"]["info"]
    assert (info["status"], info["end_time"], info["run_name"]) == ("FINISHED", 99, "renamed")


def test_a_restarted_server_answers_from_a_cold_cache(make_server: Any) -> None:
    server: RunledgerServer = make_server()
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=30) as api:
        run_id = ok(api.post("/runs/create", json={"experiment_id": "0"}))["run"]["info"]["run_id"]
        ok(api.post("/runs/log-parameter", json={"run_id": run_id, "key": "p", "value": "1"}))
    server.stop()
    server.start()
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=30) as api:
        # the run is not cached after a restart: the fold must load it to reject the conflict
        resp = api.post("/runs/log-parameter", json={"run_id": run_id, "key": "p", "value": "2"})
        assert resp.status_code == 400 and resp.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        ok(api.post("/runs/log-parameter", json={"run_id": run_id, "key": "p", "value": "1"}))
        resp = api.post("/runs/create", json={"experiment_id": "0"})
        ok(resp)
