"""docs/design.md, invariant 3: SIGKILL the projector at any instant, restart, and every event has
been applied exactly once (offsets are committed in the same DuckDB transaction as the rows)."""

from __future__ import annotations

import math
import threading
import time
import uuid

import httpx
import pytest

from runledger.ingest.contract.events import Envelope, metrics_columns
from tests.conftest import RunledgerServer
from tests.log_tools import append_events

EVENTS = 300
POINTS_PER_EVENT = 200


def _metric_events(run_id: str, exp_id: str) -> list[Envelope]:
    events = []
    for e in range(EVENTS):
        points = [("loss", math.sin(e * POINTS_PER_EVENT + i), 1_700_000_000_000 + e, e * POINTS_PER_EVENT + i)
                  for i in range(POINTS_PER_EVENT)]
        events.append(Envelope(event_id=uuid.uuid4().hex, type="MetricsLogged", experiment_id=exp_id,
                               run_id=run_id, ingest_time=1, user="crash-test", payload=metrics_columns(points)))
    return events


def _history(server: RunledgerServer, run_id: str) -> list[dict]:
    r = httpx.get(f"{server.url}/api/2.0/mlflow/metrics/get-history",
                  params={"run_id": run_id, "metric_key": "loss"}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json().get("metrics", [])


def test_sigkill_during_ingest_loses_nothing_and_applies_nothing_twice(make_server, kafka_bootstrap: str) -> None:
    server = make_server(RUNLEDGER_LATEST_METRIC="timestamp")  # the latest checked below is by timestamp
    api = f"{server.url}/api/2.0/mlflow"
    exp_id = httpx.post(f"{api}/experiments/create", json={"name": "crash"}).json()["experiment_id"]
    run_id = httpx.post(f"{api}/runs/create", json={"experiment_id": exp_id}).json()["run"]["info"]["run_id"]
    events = _metric_events(run_id, exp_id)
    # A producer that re-sends some events (same event ids), as a retrying client would.
    resent = events[::7]

    def produce() -> None:
        for i in range(0, EVENTS, 20):
            append_events(kafka_bootstrap, server.topic, events[i:i + 20])
            time.sleep(0.05)
        append_events(kafka_bootstrap, server.topic, resent)

    producer = threading.Thread(target=produce)
    producer.start()
    kills = 0
    for delay in (0.7, 0.4, 0.9):  # kill the projector mid-stream, three times
        time.sleep(delay)
        server.kill()
        kills += 1
        server.start()
    producer.join(120)
    assert not producer.is_alive()

    expected_count = EVENTS * POINTS_PER_EVENT
    expected_sum = math.fsum(math.sin(n) for n in range(expected_count))
    deadline = time.monotonic() + 60
    history = _history(server, run_id)
    while len(history) < expected_count and time.monotonic() < deadline:
        time.sleep(0.3)
        history = _history(server, run_id)
    assert kills == 3
    assert len(history) == expected_count
    assert sorted(m["step"] for m in history) == list(range(expected_count))
    assert math.isclose(math.fsum(m["value"] for m in history), expected_sum, abs_tol=1e-6)
    run = httpx.get(f"{api}/runs/get", params={"run_id": run_id}).json()["run"]
    latest = {m["key"]: m for m in run["data"]["metrics"]}["loss"]
    assert latest["timestamp"] == 1_700_000_000_000 + EVENTS - 1
    assert latest["value"] == max(math.sin(n) for n in range((EVENTS - 1) * POINTS_PER_EVENT, expected_count))


@pytest.mark.parametrize("copies", [2, 3])
def test_the_same_log_batch_sent_again_stores_each_point_once(api: httpx.Client, copies: int) -> None:
    exp_id = api.post("experiments/create", json={"name": f"retry-{copies}"}).json()["experiment_id"]
    run_id = api.post("runs/create", json={"experiment_id": exp_id}).json()["run"]["info"]["run_id"]
    batch = {"run_id": run_id,
             "metrics": [{"key": "m", "value": v, "timestamp": 100 + i, "step": i}
                         for i, v in enumerate([0.1, 0.2, "NaN", 0.4])],
             "params": [{"key": "p", "value": "1"}], "tags": [{"key": "t", "value": "x"}]}
    for _ in range(copies):  # a client retry resends the identical request
        assert api.post("runs/log-batch", json=batch).status_code == 200
    history = api.get("metrics/get-history", params={"run_id": run_id, "metric_key": "m"}).json()["metrics"]
    assert [(m["step"], m["value"]) for m in history] == [(0, 0.1), (1, 0.2), (2, "NaN"), (3, 0.4)]


def test_an_exact_duplicate_within_one_request_is_stored_once(api: httpx.Client) -> None:
    exp_id = api.post("experiments/create", json={"name": "dup-in-batch"}).json()["experiment_id"]
    run_id = api.post("runs/create", json={"experiment_id": exp_id}).json()["run"]["info"]["run_id"]
    point = {"key": "m", "value": 1.5, "timestamp": 7, "step": 3}
    other_step = {**point, "step": 4}
    assert api.post("runs/log-batch", json={"run_id": run_id, "metrics": [point, point, other_step]}).status_code == 200
    history = api.get("metrics/get-history", params={"run_id": run_id, "metric_key": "m"}).json()["metrics"]
    assert [(m["step"], m["value"]) for m in history] == [(3, 1.5), (4, 1.5)]
