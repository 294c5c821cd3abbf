"""Issue 14 over HTTP against a real broker: who/how/when on every event, the trail with its
verdicts, as-of reads equal to what runs/get answered then, diffs and non-destructive rewind."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import httpx
import mlflow
import pytest
from mlflow import MlflowClient

from tests.conftest import RunledgerServer

NATIVE = "/api/runledger/v1"


@pytest.fixture
def native(server: RunledgerServer) -> httpx.Client:
    with httpx.Client(base_url=f"{server.url}{NATIVE}", timeout=60) as client:
        yield client


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _create_run(api: httpx.Client, name: str, **headers: str) -> str:
    exp = api.post("/experiments/create", json={"name": f"{name}-{time.time_ns()}"}, headers=headers)
    assert exp.status_code == 200, exp.text
    run = api.post("/runs/create", json={"experiment_id": exp.json()["experiment_id"], "user_id": "claimed-user"},
                   headers=headers)
    assert run.status_code == 200, run.text
    return run.json()["run"]["info"]["run_id"]


def _all_events(native: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    out, token = [], None
    while True:
        page = native.get(path, params={**params, **({"page_token": token} if token else {})})
        assert page.status_code == 200, page.text
        out += page.json()["events"]
        token = page.json().get("next_page_token")
        if not token:
            return out


def test_request_id_is_returned_and_a_sane_incoming_one_is_kept(api: httpx.Client) -> None:
    fresh = api.get("/experiments/get", params={"experiment_id": "0"})
    assert len(fresh.headers["x-request-id"]) == 32
    kept = api.get("/experiments/get", params={"experiment_id": "0"}, headers={"X-Request-Id": "trace-42.a"})
    assert kept.headers["x-request-id"] == "trace-42.a"
    insane = api.get("/experiments/get", params={"experiment_id": "0"}, headers={"X-Request-Id": "a b\tc" * 50})
    assert insane.headers["x-request-id"] != "a b\tc" * 50 and len(insane.headers["x-request-id"]) == 32
    error = api.get("/runs/get", params={"run_id": "nope"}, headers={"X-Request-Id": "err-1"})
    assert error.status_code == 404 and error.headers["x-request-id"] == "err-1"


def test_trail_shows_mlflow_stream_and_rejected_writes_with_who_how_and_verdicts(
        server: RunledgerServer, api: httpx.Client, native: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # The unmodified mlflow client, claiming a user through basic auth (as MLFLOW_TRACKING_USERNAME does).
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ada")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "unchecked")
    client = MlflowClient(tracking_uri=server.url)
    exp_id = client.create_experiment(f"trail-{time.time_ns()}")
    run_id = client.create_run(exp_id).info.run_id
    client.log_param(run_id, "lr", "0.1")
    client.log_metric(run_id, "loss", 0.5, step=1)
    streamed = native.post("/metrics/stream", headers={"X-Request-Id": "stream-req-1", "X-Runledger-User": "bob"},
                           json={"run_id": run_id, "keys": ["loss"] * 10 + ["acc"] * 5,
                                 "values": [0.1] * 15, "timestamps": [1] * 15,
                                 "steps": list(range(2, 12)) + list(range(0, 5))})
    assert streamed.status_code == 200, streamed.text
    rejected = api.post("/runs/log-parameter", json={"run_id": run_id, "key": "lr", "value": "0.2"},
                        headers={"X-Request-Id": "bad-param"})
    assert rejected.status_code == 400
    # The streamed points are applied asynchronously; a synchronous write after them is applied after them.
    client.set_tag(run_id, "done", "yes")

    trail = _all_events(native, f"/runs/{run_id}/events")
    types = [e["type"] for e in trail]
    assert types == ["RunCreated", "ParamsLogged", "MetricsLogged", "MetricsLogged", "ParamsLogged", "TagsSet"]
    offsets = [e["offset"] for e in trail]
    assert offsets == sorted(offsets) and len({e["partition"] for e in trail}) == 1
    created, param, metric, stream, bad, tag = trail
    assert created["actor"] == {"name": "ada", "verified": False} and created["api"] == "mlflow"
    assert stream["api"] == "stream" and stream["actor"]["name"] == "bob"
    assert stream["request_id"] == "stream-req-1"
    assert stream["summary"] == {"points": 15, "keys": ["acc", "loss"], "key_count": 2, "step_min": 0,
                                 "step_max": 11}
    assert metric["summary"]["points"] == 1 and metric["verdict"] == {"status": "applied", "error_code": None,
                                                                       "reason": None}
    assert bad["request_id"] == "bad-param" and bad["verdict"]["status"] == "rejected"
    assert bad["verdict"]["error_code"] == "INVALID_PARAMETER_VALUE" and "0.2" in bad["verdict"]["reason"]
    assert all(e["request_id"] for e in trail) and len({e["request_id"] for e in trail}) == len(trail)
    assert all(e["position"] == f"{e['partition']}:{e['offset']}" for e in trail)

    # Filters and paging.
    assert [e["type"] for e in _all_events(native, f"/runs/{run_id}/events", type="MetricsLogged")] == \
        ["MetricsLogged", "MetricsLogged"]
    assert [e["actor"]["name"] for e in _all_events(native, f"/runs/{run_id}/events", actor="bob")] == ["bob"]
    assert [e["offset"] for e in _all_events(native, f"/runs/{run_id}/events", max_results=2)] == offsets
    assert [e["type"] for e in _all_events(native, f"/runs/{run_id}/events", verdict="rejected")] == ["ParamsLogged"]
    since = _all_events(native, f"/runs/{run_id}/events", since=str(bad["time"]))
    assert since[0]["event_id"] == bad["event_id"]
    until = _all_events(native, f"/runs/{run_id}/events", until=_iso(bad["time"]))
    assert until[-1]["event_id"] == bad["event_id"] and len(until) == 5
    exp_trail = _all_events(native, f"/experiments/{exp_id}/events")
    assert exp_trail[0]["type"] == "ExperimentCreated" and {e["event_id"] for e in trail} <= {
        e["event_id"] for e in exp_trail}
    everything = _all_events(native, "/events", type="ExperimentCreated", actor="ada")
    assert exp_id in {e["experiment_id"] for e in everything}

    for bad_params in ({"max_results": 0}, {"page_token": "xyz"}, {"since": "yesterday"}, {"verdict": "maybe"}):
        answer = native.get(f"/runs/{run_id}/events", params=bad_params)
        assert answer.status_code == 400 and answer.json()["error_code"] == "INVALID_PARAMETER_VALUE", bad_params


def test_as_of_each_moment_equals_what_runs_get_answered_then(api: httpx.Client, native: httpx.Client) -> None:
    run_id = _create_run(api, "asof")
    writes = [
        ("/runs/log-parameter", {"key": "lr", "value": "0.1"}),
        ("/runs/log-metric", {"key": "loss", "value": 0.9, "timestamp": 1000, "step": 0}),
        ("/runs/set-tag", {"key": "stage", "value": "dev"}),
        ("/runs/log-metric", {"key": "loss", "value": 0.5, "timestamp": 2000, "step": 1}),
        ("/runs/log-parameter", {"key": "lr", "value": "0.3"}),   # rejected: nothing changes
        ("/runs/set-tag", {"key": "stage", "value": "prod"}),
        ("/runs/log-batch", {"metrics": [{"key": "acc", "value": 0.7, "timestamp": 3000, "step": 2}],
                             "params": [{"key": "epochs", "value": "3"}], "tags": [{"key": "x", "value": "1"}]}),
        ("/runs/delete-tag", {"key": "x"}),
        ("/runs/update", {"status": "FINISHED", "end_time": 5000}),
        ("/runs/delete", {}),
        ("/runs/restore", {}),
    ]
    recorded: list[tuple[int, dict[str, Any]]] = []
    for path, body in writes:
        api.post(path, json={"run_id": run_id, **body})
        got = api.get("/runs/get", params={"run_id": run_id}).json()
        recorded.append((time.time_ns() // 1_000_000, got))
        time.sleep(0.003)  # the next write's ingest time is later than the moment recorded
    for moment, expected in recorded:
        answer = native.get(f"/runs/{run_id}", params={"as_of": moment})
        assert answer.status_code == 200, answer.text
        assert answer.json() == expected, moment
    # By position: the trail's positions, and ISO 8601 times.
    trail = _all_events(native, f"/runs/{run_id}/events")
    at_third = native.get(f"/runs/{run_id}", params={"as_of_position": trail[3]["position"]}).json()
    assert at_third == recorded[2][1]
    assert native.get(f"/runs/{run_id}", params={"as_of": _iso(recorded[-1][0])}).json() == recorded[-1][1]
    before = native.get(f"/runs/{run_id}", params={"as_of": trail[0]["time"] - 1})
    assert before.status_code == 404 and before.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    # metrics/get-history as of a moment.
    history = native.get("/metrics/get-history", params={"run_id": run_id, "metric_key": "loss",
                                                          "as_of": recorded[1][0]}).json()
    assert [m["value"] for m in history["metrics"]] == [0.9]


def test_mlflow_get_history_takes_as_of_too(api: httpx.Client) -> None:
    run_id = _create_run(api, "asof-mlflow")
    api.post("/runs/log-metric", json={"run_id": run_id, "key": "loss", "value": 0.9, "timestamp": 1000, "step": 0})
    time.sleep(0.003)
    then = time.time_ns() // 1_000_000
    time.sleep(0.003)
    api.post("/runs/log-metric", json={"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 2000, "step": 1})
    now = api.get("/metrics/get-history", params={"run_id": run_id, "metric_key": "loss"}).json()
    assert [m["value"] for m in now["metrics"]] == [0.9, 0.5]
    past = api.get("/metrics/get-history", params={"run_id": run_id, "metric_key": "loss", "as_of": then})
    assert past.status_code == 200, past.text
    assert [m["value"] for m in past.json()["metrics"]] == [0.9]
    both = api.get("/metrics/get-history", params={"run_id": run_id, "metric_key": "loss", "as_of": then,
                                                    "as_of_position": "0:0"})
    assert both.status_code == 400 and "not both" in both.json()["message"]


def test_diff_between_two_moments(api: httpx.Client, native: httpx.Client) -> None:
    run_id = _create_run(api, "diff")
    api.post("/runs/log-parameter", json={"run_id": run_id, "key": "lr", "value": "0.1"})
    api.post("/runs/set-tag", json={"run_id": run_id, "key": "stage", "value": "dev"})
    api.post("/runs/set-tag", json={"run_id": run_id, "key": "gone", "value": "soon"})
    time.sleep(0.003)
    t1 = time.time_ns() // 1_000_000
    time.sleep(0.003)
    api.post("/runs/log-parameter", json={"run_id": run_id, "key": "epochs", "value": "3"})
    api.post("/runs/set-tag", json={"run_id": run_id, "key": "stage", "value": "prod"})
    api.post("/runs/delete-tag", json={"run_id": run_id, "key": "gone"})
    api.post("/runs/log-batch", json={"run_id": run_id, "metrics": [
        {"key": "loss", "value": 1.0 / (s + 1), "timestamp": 1000 + s, "step": s} for s in range(5, 25)]})
    api.post("/runs/update", json={"run_id": run_id, "status": "FINISHED", "end_time": 9})
    time.sleep(0.003)
    t2 = time.time_ns() // 1_000_000
    diff = native.get(f"/runs/{run_id}/diff", params={"from": t1, "to": t2})
    assert diff.status_code == 200, diff.text
    d = diff.json()
    assert d["params"] == {"added": [{"key": "epochs", "value": "3"}], "changed": [], "removed": []}
    assert d["tags"]["changed"] == [{"key": "stage", "from": "dev", "to": "prod"}]
    assert d["tags"]["removed"] == [{"key": "gone", "value": "soon"}]
    assert d["info"]["status"] == {"from": "RUNNING", "to": "FINISHED"}
    assert d["metrics"] == [{"key": "loss", "points_added": 20, "step_min": 5, "step_max": 24}]
    assert [e["type"] for e in d["events"]] == ["ParamsLogged", "TagsSet", "TagDeleted", "RunBatchLogged",
                                                "RunUpdated"]
    assert d["from"] == {"time": t1, "position": None}
    backwards = native.get(f"/runs/{run_id}/diff", params={"from": t2, "to": t1})
    assert backwards.status_code == 400


def _history(api: httpx.Client, run_id: str, key: str) -> list[tuple[int, float]]:
    got = api.get("/metrics/get-history", params={"run_id": run_id, "metric_key": key}).json()
    return [(m["step"], m["value"]) for m in got.get("metrics", [])]


def test_rewind_hides_later_points_from_reads_but_not_from_the_past(api: httpx.Client, native: httpx.Client) -> None:
    run_id = _create_run(api, "rewind")
    api.post("/runs/log-batch", json={"run_id": run_id, "metrics": [
        {"key": "loss", "value": float(s), "timestamp": 1000 + s, "step": s} for s in range(10)] + [
        {"key": "late", "value": 7.0, "timestamp": 5000, "step": 8}]})
    time.sleep(0.003)
    before_rewind = time.time_ns() // 1_000_000
    time.sleep(0.003)
    answer = native.post(f"/runs/{run_id}/rewind", json={"step": 4})
    assert answer.status_code == 200, answer.text
    assert _history(api, run_id, "loss") == [(s, float(s)) for s in range(5)]
    assert _history(api, run_id, "late") == []
    run = api.get("/runs/get", params={"run_id": run_id}).json()["run"]
    assert run["data"]["metrics"] == [{"key": "loss", "value": 4.0, "timestamp": 1004, "step": 4}]
    # Steps after the rewind point can be logged again, even the very points hidden.
    api.post("/runs/log-metric", json={"run_id": run_id, "key": "loss", "value": 50.0, "timestamp": 1001, "step": 5})
    api.post("/runs/log-metric", json={"run_id": run_id, "key": "loss", "value": 6.0, "timestamp": 1006, "step": 6})
    assert sorted(_history(api, run_id, "loss")) == [*((s, float(s)) for s in range(5)), (5, 50.0), (6, 6.0)]
    run = api.get("/runs/get", params={"run_id": run_id}).json()["run"]
    assert run["data"]["metrics"] == [{"key": "loss", "value": 6.0, "timestamp": 1006, "step": 6}]
    found = api.post("/runs/search", json={"experiment_ids": [run["info"]["experiment_id"]],
                                           "filter": "metrics.loss < 7"}).json()
    assert [r["info"]["run_id"] for r in found["runs"]] == [run_id]
    # The past still shows everything; the trail shows the rewind.
    past = native.get(f"/runs/{run_id}", params={"as_of": before_rewind}).json()["run"]
    assert {m["key"]: m["value"] for m in past["data"]["metrics"]} == {"loss": 9.0, "late": 7.0}
    old_history = native.get("/metrics/get-history", params={"run_id": run_id, "metric_key": "loss",
                                                              "as_of": before_rewind}).json()
    assert [m["step"] for m in old_history["metrics"]] == list(range(10))
    trail = _all_events(native, f"/runs/{run_id}/events", type="RunRewound")
    assert [e["summary"] for e in trail] == [{"step": 4}]
    diff = native.get(f"/runs/{run_id}/diff", params={"from": before_rewind,
                                                       "to": time.time_ns() // 1_000_000 + 1}).json()
    assert diff["rewinds"] == [{"event_id": answer.json()["event_id"], "step": 4, "points_hidden": 6}]
    # SQL: the `metrics` view hides the rewound points, `events` shows every event with its provenance.
    def sql(query: str) -> list[dict[str, Any]]:
        answer = native.post("/sql", json={"query": query})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        names = [c["name"] for c in body["columns"]]
        return [dict(zip(names, row)) for row in body["rows"]]
    rows = sql(f"SELECT key, count(*) AS n, max(step) AS top FROM metrics WHERE run_id = '{run_id}' GROUP BY key")
    assert rows == [{"key": "loss", "n": 7, "top": 6}]
    events = sql(f"SELECT type, api, actor_verified, request_id FROM events WHERE run_id = '{run_id}' "
                 "AND type = 'RunRewound'")
    assert [(e["type"], e["api"], e["actor_verified"]) for e in events] == [("RunRewound", "runledger", False)]
    assert events[0]["request_id"]
    # Bad input.
    assert native.post(f"/runs/{run_id}/rewind", json={"step": "x"}).status_code == 400
    assert native.post("/runs/nope/rewind", json={"step": 1}).status_code == 404
