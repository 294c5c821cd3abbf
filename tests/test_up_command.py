"""`runledger up` (what `make up` runs): starts its own Kafka and the server, prints where
things are, resumes with the same data, and Ctrl-C stops everything it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from runledger.kafka_local import LocalKafka, free_port, port_open
from tests.conftest import ROOT


def _free_kafka_port() -> int:
    """A free port whose next port is free too: `runledger up` puts the broker's controller on
    KAFKA_PORT + 1, and a port taken there failed a CI run."""
    while True:
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def _up(data_dir: Path, port: int, kafka_port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS")}
    env.update(DATA_DIR=str(data_dir), PORT=str(port), KAFKA_PORT=str(kafka_port))
    return subprocess.Popen([sys.executable, "-m", "runledger.cli", "up"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_healthy(url: str, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("runledger up did not become healthy")


def _interrupt(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    out, _ = proc.communicate(timeout=60)
    return out


def test_up_starts_kafka_and_server_resumes_data_and_ctrl_c_stops_both(tmp_path: Path) -> None:
    port, kafka_port = free_port(), _free_kafka_port()
    url = f"http://127.0.0.1:{port}"
    proc = _up(tmp_path, port, kafka_port)
    try:
        _wait_healthy(url, proc)
        created = httpx.post(f"{url}/api/2.0/mlflow/experiments/create", json={"name": "survives-restart"})
        assert created.status_code == 200, created.text
    finally:
        out = _interrupt(proc)
    assert proc.returncode == 0, out
    assert f"MLFLOW_TRACKING_URI={url}" in out and str(tmp_path.resolve()) in out
    broker = LocalKafka(home=(tmp_path / "kafka").resolve(), port=kafka_port, controller_port=kafka_port + 1)
    assert broker.running_pid() is None and not port_open("127.0.0.1", kafka_port)

    proc = _up(tmp_path, port, kafka_port)  # a second `make up` resumes with the same data
    try:
        _wait_healthy(url, proc)
        got = httpx.get(f"{url}/api/2.0/mlflow/experiments/get-by-name",
                        params={"experiment_name": "survives-restart"})
        assert got.status_code == 200 and got.json()["experiment"]["experiment_id"] == created.json()["experiment_id"]
    finally:
        out = _interrupt(proc)
    assert proc.returncode == 0, out
    assert not port_open("127.0.0.1", kafka_port)


def test_sigterm_stops_kafka_too(tmp_path: Path) -> None:
    # What `kill`, systemd and `docker stop` send. uvicorn re-raises the signal once it has shut
    # down; with the default handler the process then died before stopping its Kafka.
    port, kafka_port = free_port(), _free_kafka_port()
    proc = _up(tmp_path, port, kafka_port)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert "stopping Kafka" in out, out
    broker = LocalKafka(home=(tmp_path / "kafka").resolve(), port=kafka_port, controller_port=kafka_port + 1)
    assert broker.running_pid() is None and not port_open("127.0.0.1", kafka_port)


def test_a_second_up_on_the_same_data_folder_refuses_at_once_and_leaves_the_first_alone(tmp_path: Path) -> None:
    port, kafka_port = free_port(), _free_kafka_port()
    url = f"http://127.0.0.1:{port}"
    first = _up(tmp_path, port, kafka_port)
    try:
        _wait_healthy(url, first)
        broker = LocalKafka(home=(tmp_path / "kafka").resolve(), port=kafka_port, controller_port=kafka_port + 1)
        broker_pid = broker.running_pid()

        t0 = time.monotonic()
        second = _up(tmp_path, free_port(), kafka_port)
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 1, out
        assert time.monotonic() - t0 < 15, "refused only after starting something"
        assert "already using the data folder" in out and str(first.pid) in out, out
        assert "Traceback" not in out, out

        assert broker.running_pid() == broker_pid and port_open("127.0.0.1", kafka_port)
        written = httpx.post(f"{url}/api/2.0/mlflow/experiments/create", json={"name": "first-still-writes"})
        assert written.status_code == 200, written.text
    finally:
        out = _interrupt(first)
    assert first.returncode == 0, out
