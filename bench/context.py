"""The benchmark's shared state (scratch folder, the Kafka broker, sizes) and its result rows."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from servers import Kafka, MlflowServer, RunledgerServer


@dataclasses.dataclass
class Row:
    """One line of the table. Values are a number, a {"p50", "p95"} dict, or None (n/a, see note)."""

    workload: str
    case: str
    size: str
    unit: str
    mlflow: Any
    runledger: Any
    higher_better: bool
    target: str = ""
    met: bool | None = None
    note: str = ""
    stats: str = "p50 / p95"   # what a {"p50_ms", "p95_ms"} value shows

    @property
    def ratio(self) -> float | None:
        """How many times better Runledger is (>1 better, <1 worse), on the headline number (p50)."""
        a, b = _headline(self.mlflow), _headline(self.runledger)
        if a is None or b is None or a == 0 or b == 0:
            return None
        return b / a if self.higher_better else a / b


def _headline(v: Any) -> float | None:
    if isinstance(v, dict):
        return v.get("p50_ms")
    return v if isinstance(v, (int, float)) else None


class Ctx:
    def __init__(self, scratch: Path, quick: bool, reps: int, mlflow_workers: int) -> None:
        self.scratch = scratch
        self.quick = quick
        self.reps = reps
        self.mlflow_workers = mlflow_workers
        self.kafka: Kafka | None = None
        self.server_stats: list[dict] = []   # every server's stats at stop: peak RSS, disk
        self.details: dict[str, Any] = {}    # per-workload raw numbers for the JSON file
        self.options: dict[str, Any] = {}     # workload switches from the command line
        self.replay_source: dict | None = None  # the history workload's Runledger data, replayed later
        self.started = time.monotonic()

    def log(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {msg}", file=sys.stderr, flush=True)

    def size(self, quick: Any, full: Any) -> Any:
        return quick if self.quick else full

    def ensure_kafka(self) -> Kafka:
        if self.kafka is None:
            self.log("starting the local Kafka broker ...")
            self.kafka = Kafka(self.scratch).start()
            self.log(f"Kafka ready on {self.kafka.bootstrap} in {self.kafka.startup_s:.1f}s")
        return self.kafka

    def mlflow(self, serve_artifacts: bool = False) -> MlflowServer:
        s = MlflowServer(self.scratch, workers=self.mlflow_workers, serve_artifacts=serve_artifacts).start()
        self.log(f"MLflow up on {s.url} in {s.startup_s:.1f}s")
        return s

    def runledger(self, **kw: Any) -> RunledgerServer:
        s = RunledgerServer(self.ensure_kafka(), self.scratch, **kw).start()
        self.log(f"Runledger up on {s.url} in {s.startup_s:.1f}s (topic {s.topic})")
        return s

    def stop(self, server: Any, workload: str, cleanup: bool = True) -> dict:
        stats = {"server": server.name, "workload": workload, **server.stop()}
        self.server_stats.append(stats)
        if cleanup:
            server.cleanup()
        return stats

    def close(self) -> None:
        if self.kafka is not None:
            self.kafka.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)
