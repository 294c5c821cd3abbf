"""runledger.client.MetricStream straight to Kafka (runledger.kafka_transport): the events the
stream endpoint would append, read back through a real server (real Kafka, real DuckDB)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from runledger.client import MetricStream
from runledger.kafka_transport import KafkaTransport
from tests.conftest import RunledgerServer
from tests.test_client import TS, history, new_run, poll, wait_applied

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def api(server: RunledgerServer) -> Any:
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=60) as client:
        yield client


def test_points_produced_straight_to_kafka_are_applied_like_streamed_ones(server: RunledgerServer,
                                                                         kafka_bootstrap: str, api: httpx.Client) -> None:
    _, run = new_run(api)
    with MetricStream(None, run, bootstrap_servers=kafka_bootstrap, topic=server.topic, max_points=1000) as stream:
        for step in range(2500):
            stream.log("loss", 1 / (step + 1), step=step, timestamp=TS + step)
        stream.log("acc", float("nan"), step=0, timestamp=TS)
    points = poll(lambda: history(server.url, run, "loss"), lambda h: len(h) >= 2500)
    assert [(m["step"], m["timestamp"], m["value"]) for m in points] == [
        (s, TS + s, 1 / (s + 1)) for s in range(2500)]
    assert [m["value"] for m in poll(lambda: history(server.url, run, "acc"), bool)] == ["NaN"]


def test_a_chunk_produced_twice_is_applied_once(server: RunledgerServer, kafka_bootstrap: str,
                                                api: httpx.Client) -> None:
    _, run = new_run(api)
    transport = KafkaTransport(kafka_bootstrap, server.topic, timeout=30, user="test")
    try:
        attempt = transport.prepare(run, uuid.uuid4().hex, (["m"] * 100, [1.0] * 100, [TS] * 100, list(range(100))))
        assert attempt() is None
        assert attempt() is None  # a retry after a lost acknowledgement: same event id
    finally:
        transport.close()
    wait_applied(server.url)
    assert len(history(server.url, run, "m")) == 100


def test_points_for_a_run_that_does_not_exist_are_listed_as_rejections(server: RunledgerServer,
                                                                      kafka_bootstrap: str) -> None:
    ghost = uuid.uuid4().hex
    with MetricStream(None, ghost, bootstrap_servers=kafka_bootstrap, topic=server.topic) as stream:
        stream.log("m", 1.0, step=0, timestamp=TS)
    got = poll(lambda: httpx.get(f"{server.url}/api/runledger/v1/rejections", params={"run_id": ghost}).json()
               ["rejections"], bool)
    assert [(r["type"], r["error_code"]) for r in got] == [("MetricsLogged", "RESOURCE_DOES_NOT_EXIST")]


def test_a_stream_goes_either_through_the_server_or_straight_to_kafka() -> None:
    with pytest.raises(ValueError, match="either base_url"):
        MetricStream(None, "r")
    with pytest.raises(ValueError, match="either base_url"):
        MetricStream("http://127.0.0.1:1", "r", bootstrap_servers="127.0.0.1:1")
    with pytest.raises(ValueError, match="max_points"):
        MetricStream(None, "r", bootstrap_servers="127.0.0.1:1", max_points=50_001)
