"""`runledger serve` as a child process on its own port, data folder and topic: what the test
suite and the benchmarks start (and what a user's own integration tests can start too)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from runledger.kafka_local import free_port


class ServerStartError(RuntimeError):
    """The server exited or did not answer /health in time; the message ends with its log."""


class ServerProcess:
    def __init__(self, bootstrap: str, data_dir: Path, topic: str, **env: str) -> None:
        self.bootstrap = bootstrap
        self.data_dir = data_dir
        self.topic = topic
        self.port = free_port()
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def duckdb_path(self) -> Path:
        return self.data_dir / "runledger.duckdb"

    def spawn(self, cwd: Path | None = None) -> float:
        """Start the process without waiting for it; the monotonic time it was spawned."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
               "RUNLEDGER_DATA_DIR": str(self.data_dir), "RUNLEDGER_PORT": str(self.port),
               "RUNLEDGER_TOPIC": self.topic, **self.env}
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "runledger.cli", "serve"], env=env, cwd=cwd,
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return t0

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds until /health answered; ServerStartError if it exits or stays silent."""
        assert self.proc is not None, "spawn() first"
        t0 = time.monotonic()
        while time.monotonic() < t0 + timeout:
            if self.proc.poll() is not None:
                raise ServerStartError(f"runledger exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise ServerStartError(f"runledger did not answer within {timeout}s:\n{self.log_tail()}")

    def start(self, timeout: float = 60.0, cwd: Path | None = None) -> "ServerProcess":
        self.spawn(cwd)
        self.wait_ready(timeout)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if it does not exit in time."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def log_tail(self, n: int = 5000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""
