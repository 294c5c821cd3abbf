"""Issue 21, cluster: three Kafka brokers on this machine, the partition leader SIGKILLed under load.

The event topic has three replicas and min.insync.replicas=2, the producer acks=all with
idempotence. While 8 clients log batches and 4 stream points (each repeating a request, identical,
until it is answered 200, as the MLflow client does), the broker leading the run's partition is
SIGKILLed. Then: every acknowledged point is present exactly once, writes resumed within a
bounded time (measured), and the killed broker, started again, rejoins every partition's in-sync
replicas (it caught up).

Slow (three JVMs): marked `cluster`, left out of `make test`; run it with `make cluster-test`.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.partitioner import DefaultPartitioner

from runledger.kafka_local import LocalKafkaCluster, port_open
from tests.conftest import RunledgerServer

pytestmark = pytest.mark.cluster

NATIVE = "/api/runledger/v1"
BATCH = 20
RESUME_BOUND_S = 30     # writes must flow again this soon after the leader died
CATCH_UP_BOUND_S = 90   # and the restarted broker be back in every ISR this soon


def _free_base() -> int:
    """A port with the five after it free too (three brokers, a controller each)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000, 2)
        if not any(port_open("127.0.0.1", base + i, 0.05) for i in range(6)):
            try:
                socks = []
                for i in range(6):
                    s = socket.socket()
                    s.bind(("127.0.0.1", base + i))
                    socks.append(s)
                return base
            except OSError:
                continue
            finally:
                for s in socks:
                    s.close()
    raise RuntimeError("no six consecutive free ports")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalKafkaCluster]:
    c = LocalKafkaCluster(tmp_path / "kafka", brokers=3, port=_free_base())
    c.start()
    try:
        yield c
    finally:
        c.stop()


def _describe(bootstrap: str, topic: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    async def run() -> tuple[list[dict[str, Any]], dict[str, str]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            [t] = await admin.describe_topics([topic])
            [resp] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            return t["partitions"], {e[0]: e[1] for e in resp.resources[0][4]}
        finally:
            await admin.close()
    return asyncio.run(run())


class Writer(threading.Thread):
    """Repeats each request until it is answered 200; records when each was acknowledged."""

    def __init__(self, url: str, request: Callable[[int], tuple[str, dict[str, Any]]], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.request, self.stop = url, request, stop
        self.acked_at: list[float] = []
        self.failures: dict[Any, int] = {}

    def run(self) -> None:
        with httpx.Client(timeout=120) as client:
            i = 0
            while not self.stop.is_set():
                path, body = self.request(i)
                while True:
                    try:
                        status: Any = client.post(f"{self.url}{path}", json=body).status_code
                    except httpx.HTTPError as e:
                        status = type(e).__name__
                    if status == 200:
                        break
                    self.failures[status] = self.failures.get(status, 0) + 1
                    time.sleep(0.1)
                self.acked_at.append(time.monotonic())
                i += 1


def test_killing_the_partition_leader_loses_no_acknowledged_point_and_writes_resume(
        cluster: LocalKafkaCluster, tmp_path: Path) -> None:
    server = RunledgerServer(cluster.bootstrap_servers, tmp_path / "data", f"cluster-{uuid.uuid4().hex[:8]}",
                             RUNLEDGER_KAFKA_TIMEOUT="10", RUNLEDGER_SYNC_TIMEOUT="30")
    server.start()
    stop = threading.Event()
    writers: dict[str, Writer] = {}
    try:
        partitions, config = _describe(cluster.bootstrap_servers, server.topic)
        assert all(len(p["replicas"]) == 3 for p in partitions) and config["min.insync.replicas"] == "2"
        api = f"{server.url}/api/2.0/mlflow"
        exp_id = httpx.post(f"{api}/experiments/create", json={"name": "cluster"}).json()["experiment_id"]
        run_id = httpx.post(f"{api}/runs/create", json={"experiment_id": exp_id}).json()["run"]["info"]["run_id"]

        def log_batch(key: str) -> Callable[[int], tuple[str, dict[str, Any]]]:
            return lambda i: ("/api/2.0/mlflow/runs/log-batch", {"run_id": run_id, "metrics": [
                {"key": key, "value": s / 3, "timestamp": s, "step": s} for s in range(i * BATCH, (i + 1) * BATCH)]})

        def stream(key: str) -> Callable[[int], tuple[str, dict[str, Any]]]:
            def request(i: int) -> tuple[str, dict[str, Any]]:
                steps = list(range(i * BATCH, (i + 1) * BATCH))
                return (f"{NATIVE}/metrics/stream", {"run_id": run_id, "event_id": f"{key}-{run_id}-{i}",
                                                      "keys": [key] * BATCH, "values": [s / 7 for s in steps],
                                                      "timestamps": steps, "steps": steps})
            return request

        writers = {f"lb{n}": Writer(server.url, log_batch(f"lb{n}"), stop) for n in range(8)}
        writers |= {f"st{n}": Writer(server.url, stream(f"st{n}"), stop) for n in range(4)}
        for w in writers.values():
            w.start()
        time.sleep(5)

        # The broker leading the partition that holds the run's events.
        ordered = sorted(p["partition"] for p in partitions)
        partition = DefaultPartitioner()(run_id.encode(), ordered, ordered)
        leader = next(p["leader"] for p in _describe(cluster.bootstrap_servers, server.topic)[0]
                      if p["partition"] == partition)
        before_kill = {k: len(w.acked_at) for k, w in writers.items()}
        killed_at = time.monotonic()
        cluster.node(leader).kill()
        time.sleep(RESUME_BOUND_S)
        # Each writer's longest pause between two acknowledgements around the kill (an answer
        # already on its way when the leader died does not count as a resumed write).
        def stall(w: Writer) -> float:
            around = [killed_at] + [t for t in w.acked_at if t > killed_at]
            return max(b - a for a, b in zip(around, around[1:])) if len(around) > 1 else float("inf")

        resumed = {k: stall(w) for k, w in writers.items()}
        assert all(r < RESUME_BOUND_S for r in resumed.values()), resumed
        new_leader = next(p["leader"] for p in _describe(cluster.bootstrap_servers, server.topic)[0]
                          if p["partition"] == partition)

        restarted_at = time.monotonic()
        cluster.node(leader).start()
        caught_up = None
        while time.monotonic() - restarted_at < CATCH_UP_BOUND_S:
            if all(leader in p["isr"] for p in _describe(cluster.bootstrap_servers, server.topic)[0]):
                caught_up = time.monotonic() - restarted_at
                break
            time.sleep(0.5)
        assert caught_up is not None, f"broker {leader} did not rejoin the ISRs within {CATCH_UP_BOUND_S}s"
        time.sleep(3)
    finally:
        stop.set()
        for w in writers.values():
            w.join(180)
    try:
        assert not any(w.is_alive() for w in writers.values())
        deadline = time.monotonic() + 120
        while httpx.get(f"{server.url}{NATIVE}/lag", timeout=30).json()["total_lag"]:
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.3)
        lost = doubled = acknowledged = 0
        for key, w in writers.items():
            history = httpx.get(f"{server.url}/api/2.0/mlflow/metrics/get-history",
                                params={"run_id": run_id, "metric_key": key}, timeout=60).json()["metrics"]
            steps = [m["step"] for m in history]
            acked = set(range(len(w.acked_at) * BATCH))
            acknowledged += len(acked)
            lost += len(acked - set(steps))
            doubled += len(steps) - len(set(steps))
        print(f"\n[cluster] 3 brokers, RF 3, min.insync.replicas 2; killed leader {leader} of partition {partition} "
              f"(new leader {new_leader}); {acknowledged} acknowledged points by 8 log-batch + 4 stream clients "
              f"({sum(before_kill.values())} requests before the kill); lost {lost}, doubled {doubled}")
        print(f"[cluster] longest pause between acknowledged writes after the kill, per client: "
              f"max {max(resumed.values()):.2f} s, median {sorted(resumed.values())[len(resumed) // 2]:.2f} s; failed attempts "
              f"{ {k: w.failures for k, w in writers.items() if w.failures} }")
        print(f"[cluster] killed broker back in every ISR {caught_up:.1f} s after its restart")
        assert lost == 0 and doubled == 0
    finally:
        server.stop()
