"""/health is liveness; /health/ready says whether the server can do its job: 503 while Kafka does
not answer or the read model is still catching up with the log (and how far behind), else 200."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx

from runledger.kafka_local import LocalKafka, free_port
from runledger.readiness import CatchUp, Readiness
from tests.conftest import RunledgerServer


class FoldingProjector:
    """Stands in for the projector's offsets only (no Kafka, no DuckDB): a log of `ends` events,
    of which `applied_offsets` are folded so far."""

    def __init__(self, ends: dict[int, int]) -> None:
        self.ends = ends
        self.applied_offsets: dict[int, int] = {}
        self.points_folded = 0

    async def lag(self) -> dict[int, tuple[int, int]]:
        return {p: (end, self.applied_offsets.get(p, 0)) for p, end in self.ends.items()}


def test_a_fresh_server_is_ready(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    ready = httpx.get(f"{server.url}/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and ready.json()["events_behind"] == 0
    assert httpx.get(f"{server.url}/health").text == "OK"


def test_not_ready_while_catching_up_with_how_far_behind_then_ready() -> None:
    projector = FoldingProjector({0: 600, 1: 400})

    async def scenario() -> None:
        readiness = Readiness(projector, CatchUp(projector, await projector.lag()))
        ok, body = await readiness.check()
        assert not ok and body["status"] == "catching_up"
        assert body["events_behind"] == 1000 and body["partitions_behind"] == {"0": 600, "1": 400}
        assert "0 of 1,000 events" in body["progress"]

        projector.applied_offsets = {0: 600, 1: 150}
        projector.points_folded = 70_000
        ok, body = await readiness.check()
        assert not ok and body["events_behind"] == 250 and body["partitions_behind"] == {"1": 250}
        assert "750 of 1,000 events (75%)" in body["progress"] and "points/s" in body["progress"]
        assert "position 0:600 1:150" in body["progress"] and "ETA" in body["progress"]

        projector.applied_offsets = {0: 600, 1: 400}
        readiness.started_work_done = True
        ok, body = await readiness.check()
        assert ok and body["status"] == "ready"

    asyncio.run(scenario())


def test_not_ready_while_kafka_is_unreachable_and_ready_again_after(tmp_path: Path) -> None:
    broker = LocalKafka(home=tmp_path / "kafka", port=free_port(), controller_port=free_port())
    broker.start()
    server = RunledgerServer(broker.bootstrap_servers, tmp_path / "data", f"ready-{uuid.uuid4().hex[:8]}")
    try:
        server.start()
        assert httpx.get(f"{server.url}/health/ready", timeout=30).status_code == 200
        broker.stop()
        down = httpx.get(f"{server.url}/health/ready", timeout=30)
        assert down.status_code == 503 and down.json()["status"] == "kafka_unreachable", down.text
        assert httpx.get(f"{server.url}/health").status_code == 200   # alive all the same
        broker.start()
        deadline = time.monotonic() + 60
        while (again := httpx.get(f"{server.url}/health/ready", timeout=30)).status_code != 200:
            assert time.monotonic() < deadline, again.text
            time.sleep(0.5)
        assert again.json()["status"] == "ready"
    finally:
        server.stop()
        broker.stop()


def test_a_removed_read_model_is_rebuilt_on_start_with_progress_and_then_ready(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"rebuild-{uuid.uuid4().hex[:8]}"
    first = RunledgerServer(kafka_bootstrap, tmp_path / "data", topic).start()
    try:
        run_id = httpx.post(f"{first.url}/api/2.0/mlflow/runs/create", json={"experiment_id": "0"}
                            ).json()["run"]["info"]["run_id"]
        for i in range(20):
            n = 5000
            sent = httpx.post(f"{first.url}/api/runledger/v1/metrics/stream", timeout=60, json={
                "run_id": run_id, "keys": ["loss"] * n, "values": [0.5] * n, "timestamps": [1] * n,
                "steps": list(range(i * n, (i + 1) * n))})
            assert sent.status_code == 200, sent.text
    finally:
        first.stop()
    for path in (tmp_path / "data").glob("runledger.duckdb*"):
        path.unlink()

    second = RunledgerServer(kafka_bootstrap, tmp_path / "data", topic).start()
    try:
        deadline = time.monotonic() + 120
        while (ready := httpx.get(f"{second.url}/health/ready", timeout=30)).status_code != 200:
            assert ready.status_code == 503 and ready.json()["status"] == "catching_up", ready.text
            assert time.monotonic() < deadline
            time.sleep(0.2)
        log = second.log_path.read_text()
        # 20 stream events, the run and the default experiment: 22 events, 100,000 points.
        assert "the read model is 22 events behind the log" in log
        assert "read model caught up: 22 events, 100,000 points" in log
        history = httpx.get(f"{second.url}/api/2.0/mlflow/metrics/get-history",
                            params={"run_id": run_id, "metric_key": "loss"}, timeout=60).json()["metrics"]
        assert len(history) == 100_000
    finally:
        second.stop()
