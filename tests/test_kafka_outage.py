"""docs/design.md, invariant 8: a failure to reach Kafka is a 5xx the client can retry, never a
silent drop; once the broker is back, the same request succeeds and nothing is doubled."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from runledger.kafka_local import LocalKafka, free_port
from tests.conftest import RunledgerServer


def test_writes_fail_with_503_while_kafka_is_down_and_succeed_after(tmp_path: Path) -> None:
    broker = LocalKafka(home=tmp_path / "kafka", port=free_port(), controller_port=free_port())
    broker.start()
    server = RunledgerServer(broker.bootstrap_servers, tmp_path / "data", f"outage-{uuid.uuid4().hex[:8]}",
                             RUNLEDGER_KAFKA_TIMEOUT="4", RUNLEDGER_SYNC_TIMEOUT="20")
    try:
        server.start()
        api = f"{server.url}/api/2.0/mlflow"
        exp = httpx.post(f"{api}/experiments/create", json={"name": "outage"}).json()["experiment_id"]
        run_id = httpx.post(f"{api}/runs/create", json={"experiment_id": exp}).json()["run"]["info"]["run_id"]
        point = {"run_id": run_id, "key": "m", "value": 1.5, "timestamp": 1, "step": 0}

        broker.stop()
        down = httpx.post(f"{api}/runs/log-metric", json=point, timeout=60)
        assert down.status_code == 503
        assert down.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        assert httpx.get(f"{server.url}/health").status_code == 200  # reads keep working

        broker.start()
        for _ in range(30):  # the client's retry: same request again until the log takes it
            retry = httpx.post(f"{api}/runs/log-metric", json=point, timeout=60)
            if retry.status_code == 200:
                break
            assert retry.status_code in (503, 504), retry.text
        assert retry.status_code == 200
        history = httpx.get(f"{api}/metrics/get-history", params={"run_id": run_id, "metric_key": "m"}).json()
        assert [(m["value"], m["step"]) for m in history["metrics"]] == [(1.5, 0)]
    finally:
        server.stop()
        broker.stop()
