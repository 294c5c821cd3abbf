"""What every workload shares: the one HTTP client (httpx, MLflow REST JSON for both servers),
payload builders, and statistics."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import httpx
import orjson

API = "/api/2.0/mlflow"
T0_MS = 1_700_000_000_000


class BenchError(RuntimeError):
    pass


class Client:
    """A thin sync wrapper over one httpx.Client (keep-alive); bodies serialised with orjson."""

    def __init__(self, base_url: str, timeout: float = 300.0) -> None:
        self.base = base_url
        self.http = httpx.Client(base_url=base_url, timeout=timeout,
                                 limits=httpx.Limits(max_connections=4, max_keepalive_connections=4))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def post_raw(self, path: str, body: bytes) -> httpx.Response:
        return self.http.post(path, content=body, headers={"content-type": "application/json"})

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        r = self.post_raw(API + path, orjson.dumps(payload))
        return _ok(r)

    def get(self, path: str, params: Any = None) -> dict[str, Any]:
        return _ok(self.http.get(API + path, params=params))

    # ----- MLflow REST operations, identical for both servers

    def create_experiment(self, prefix: str = "bench") -> str:
        return self.post("/experiments/create", {"name": f"{prefix}-{uuid.uuid4().hex[:10]}"})["experiment_id"]

    def create_run(self, experiment_id: str, run_name: str | None = None, tags: list[dict] | None = None,
                   start_time: int | None = None) -> str:
        body: dict[str, Any] = {"experiment_id": experiment_id, "start_time": start_time or now_ms()}
        if run_name:
            body["run_name"] = run_name
        if tags:
            body["tags"] = tags
        return self.post("/runs/create", body)["run"]["info"]["run_id"]


def _ok(r: httpx.Response) -> dict[str, Any]:
    if r.status_code != 200:
        raise BenchError(f"{r.request.method} {r.request.url.path} -> {r.status_code}: {r.text[:500]}")
    return orjson.loads(r.content) if r.content else {}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def batch_body(run_id: str, first_step: int, n_points: int, n_keys: int = 10, key_prefix: str = "m") -> bytes:
    """A log-batch body of n_points metrics: n_keys keys x (n_points / n_keys) consecutive steps."""
    per_key = max(1, n_points // n_keys)
    metrics = []
    for k in range(n_keys):
        key = f"{key_prefix}{k}"
        for s in range(first_step, first_step + per_key):
            metrics.append({"key": key, "value": s * 0.001 + k, "timestamp": T0_MS + s, "step": s})
    return orjson.dumps({"run_id": run_id, "metrics": metrics[:n_points]})


def single_key_batch(run_id: str, key: str, first_step: int, n_points: int) -> bytes:
    metrics = [{"key": key, "value": s * 0.5, "timestamp": T0_MS + s, "step": s}
               for s in range(first_step, first_step + n_points)]
    return orjson.dumps({"run_id": run_id, "metrics": metrics})


def parallel(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(0..n-1) on n threads; re-raise the first failure."""
    with ThreadPoolExecutor(n) as pool:
        return [f.result() for f in [pool.submit(fn, i) for i in range(n)]]


def pct(samples: list[float], q: float) -> float:
    """Percentile with linear interpolation (q in 0..100)."""
    if not samples:
        return float("nan")
    s = sorted(samples)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def lat_summary(samples_s: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in samples_s]
    return {"p50_ms": round(pct(ms, 50), 3), "p95_ms": round(pct(ms, 95), 3), "n": len(ms)}


class Ticker:
    """Calls fn every `interval` seconds on a thread until stopped."""

    def __init__(self, interval: float, fn: Callable[[], None]) -> None:
        self.interval = interval
        self.fn = fn
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> "Ticker":
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                self.fn()
            except Exception as e:  # noqa: BLE001 - a sampling hiccup must not stop the workload
                self.errors.append(repr(e))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def insert_mlflow_rows(db: Any, runs: list[tuple], tags: list[tuple], params: list[tuple], metrics: list[tuple],
                       latest: list[tuple]) -> None:
    """Rows straight into an MLflow SQLite store (its own schema, created by `mlflow server`
    first), for the seeded search and SQL workloads; the caller holds the transaction."""
    db.executemany("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, "
                   "status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, "
                   "experiment_id, deleted_time) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", runs)
    db.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?,?,?)", tags)
    db.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?,?,?)", params)
    db.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,?)",
                   metrics)
    db.executemany("INSERT INTO latest_metrics (key, value, timestamp, run_uuid, step, is_nan) "
                   "VALUES (?,?,?,?,?,?)", latest)
