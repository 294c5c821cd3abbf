"""Shared fixtures: one real Kafka broker per session, Runledger servers as real processes.

Broker order (docs/design.md, "Tests"): KAFKA_BOOTSTRAP_SERVERS if set; else testcontainers
when a Docker engine answers; else the local broker provisioned from Maven jars. If none
works the session fails with the reason; nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest

# comet_ml (tests/test_comet_*.py) reads these when imported: without them it patches mlflow's
# fluent API to mirror every mlflow.start_run of later tests into offline Comet experiments
# (zip files in the working folder) and reports client errors to Comet's tracker.
os.environ.setdefault("COMET_DISABLE_AUTO_LOGGING", "1")
os.environ.setdefault("COMET_ERROR_TRACKING_ENABLE", "false")
os.environ.setdefault("COMET_DISABLE_ANNOUNCEMENT", "true")

from runledger.kafka_local import LocalKafka, free_port
from runledger.server_process import ServerProcess

ROOT = Path(__file__).resolve().parent.parent


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    broker = LocalKafka(home=tmp_path_factory.mktemp("kafka"), port=free_port(), controller_port=free_port())
    broker.start()  # raises KafkaProvisioningError with the broker log if it cannot start
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


class RunledgerServer(ServerProcess):
    """`runledger serve` in a child process, on its own port, data folder and topic."""

    def start(self, timeout: float = 60.0, cwd: Path | None = ROOT) -> "RunledgerServer":
        super().start(timeout, cwd)
        return self


@pytest.fixture
def make_server(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Factory: make_server(**env) -> a started server with a fresh topic and data folder."""
    started: list[RunledgerServer] = []

    def make(topic: str | None = None, data_dir: Path | None = None, **env: str) -> RunledgerServer:
        server = RunledgerServer(kafka_bootstrap, data_dir or tmp_path_factory.mktemp("data"),
                                 topic or f"test-{uuid.uuid4().hex[:12]}", **env)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunledgerServer]:
    """One server per test module (default settings), for tests that only add their own runs."""
    s = RunledgerServer(kafka_bootstrap, tmp_path_factory.mktemp("data"), f"test-{uuid.uuid4().hex[:12]}")
    s.start()
    yield s
    s.stop()


@pytest.fixture
def api(server: RunledgerServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=30) as client:
        yield client
