"""Server RSS through a streaming burst and a large history read (issue 11, item 6).

    .venv/bin/python bench/memory_probe.py [--server-root DIR] [--points 6000000] [--clients 2]

Starts a local Kafka broker (unless RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS is set) and one `runledger serve`
from --server-root (default: this checkout; point it at an export of another commit, with its
own .venv, to compare), then reports the server's RSS (VmRSS of the process) at each stage:

1. baseline, a few seconds after start;
2. peak during a streaming burst (--clients threads posting 50,000-point JSON requests to
   /api/runledger/v1/metrics/stream, --points in all, to one run and key), right after the
   projector caught up (lag 0), and --settle seconds later;
3. peak while reading the whole history of the burst's key (one run, every point), and
   --settle seconds after it.

When it starts its own broker, the broker's RSS is reported too: idle (after the server's
start), its peak during the burst and the history read, and after; `--broker-heap` and
`--broker-flags` replace the JVM options of `runledger.kafka_local` (to compare with the sizing
of before: `--broker-heap "-Xms256m -Xmx512m" --broker-flags "-XX:+UseG1GC -XX:MaxGCPauseMillis=20"`).
The server's idle RSS at the end is compared with its baseline (issue 22: within 20%).

Everything runs in a scratch folder that is removed afterwards; nothing is left running.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from runledger.kafka_local import DEV_HEAP, DEV_JVM_FLAGS, LocalKafka, free_port

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class PeakSampler:
    def __init__(self, pid: int, every: float = 0.05) -> None:
        self.pid, self.every, self.peak = pid, every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(self.every)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_for_lag_zero(base: str, timeout: float = 600) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        lag = httpx.get(f"{base}/api/runledger/v1/lag", timeout=30).json()
        if lag["total_lag"] == 0:
            return time.monotonic() - t0
        time.sleep(0.5)
    raise RuntimeError("projector did not catch up")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server-root", type=Path, default=ROOT)
    ap.add_argument("--points", type=int, default=6_000_000)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--settle", type=float, default=40)
    ap.add_argument("--broker-heap", default=DEV_HEAP)
    ap.add_argument("--broker-flags", default=" ".join(DEV_JVM_FLAGS))
    ap.add_argument("--skip-history", action="store_true", help="stream only (no whole-history read)")
    ap.add_argument("--replay", action="store_true",
                    help="then start a second server on the same topic with an empty data folder and report its "
                         "peak RSS while it folds the whole log (the bench's replay at scale)")
    args = ap.parse_args()
    server_python = args.server_root / ".venv" / "bin" / "python"
    scratch = Path(tempfile.mkdtemp(prefix="rl-memprobe-"))
    broker = None
    proc = None
    try:
        bootstrap = os.environ.get("RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = LocalKafka(home=scratch / "kafka", port=free_port(), controller_port=free_port(),
                                heap=args.broker_heap, jvm_flags=tuple(args.broker_flags.split()))
            broker.start()
            bootstrap = broker.bootstrap_servers
        port = free_port()
        # Both spellings of the settings: older commits (compared with --server-root) read the short ones.
        env = {**os.environ, "RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
               "RUNLEDGER_DATA_DIR": str(scratch / "data"), "DATA_DIR": str(scratch / "data"),
               "RUNLEDGER_PORT": str(port), "PORT": str(port), "RUNLEDGER_TOPIC": f"memprobe-{uuid.uuid4().hex[:8]}"}
        proc = subprocess.Popen([str(server_python), "-m", "runledger.cli", "serve"], env=env, cwd=args.server_root,
                                stdout=open(scratch / "server.log", "wb"), stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        time.sleep(5)
        report: dict[str, float] = {"baseline_mb": rss_mb(proc.pid)}
        broker_pid = broker.running_pid() if broker is not None else None
        if broker_pid is not None:
            report["broker_idle_mb"] = rss_mb(broker_pid)
        broker_peak = PeakSampler(broker_pid).__enter__() if broker_pid is not None else None

        api = f"{base}/api/2.0/mlflow"
        exp = httpx.post(f"{api}/experiments/create", json={"name": "memprobe"}).json()["experiment_id"]
        run = httpx.post(f"{api}/runs/create", json={"experiment_id": exp, "start_time": 0}).json()["run"]["info"]["run_id"]
        sent = [0]
        lock = threading.Lock()
        requests = iter(range(args.points // 50_000))

        def client(worker: int) -> None:
            with httpx.Client(timeout=120) as c:
                while True:
                    with lock:
                        batch = next(requests, None)
                    if batch is None:
                        return
                    n = 50_000
                    start = batch * n
                    body = {"run_id": run, "keys": ["loss"] * n, "values": [float(i % 977) for i in range(n)],
                            "timestamps": [1_700_000_000_000 + start + i for i in range(n)],
                            "steps": [start + i for i in range(n)]}
                    r = c.post(f"{base}/api/runledger/v1/metrics/stream", content=json.dumps(body),
                               headers={"content-type": "application/json"})
                    r.raise_for_status()
                    with lock:
                        sent[0] += n

        t0 = time.monotonic()
        with PeakSampler(proc.pid) as burst:
            threads = [threading.Thread(target=client, args=(w,)) for w in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            report["catch_up_s"] = wait_for_lag_zero(base)
        report["burst_s"] = time.monotonic() - t0
        report["burst_points"] = sent[0]
        report["burst_peak_mb"] = burst.peak
        report["burst_server_cpu_s"] = _cpu_seconds(proc.pid)
        report["after_burst_lag0_mb"] = rss_mb(proc.pid)
        time.sleep(args.settle)
        report["after_burst_settled_mb"] = rss_mb(proc.pid)
        if args.replay:
            _replay(report, server_python, args.server_root, env, scratch, run, sent[0])

        if args.skip_history:
            return _finish(report, proc.pid, broker_pid, broker_peak, args.settle)
        with PeakSampler(proc.pid) as read:
            t0 = time.monotonic()
            size = 0
            with httpx.stream("GET", f"{api}/metrics/get-history", params={"run_id": run, "metric_key": "loss"},
                              timeout=600) as r:
                r.raise_for_status()
                for chunk in r.iter_bytes():
                    size += len(chunk)
            report["history_read_s"] = time.monotonic() - t0
        report["history_bytes"] = size
        report["history_peak_mb"] = read.peak
        report["after_history_mb"] = rss_mb(proc.pid)
        time.sleep(args.settle)
        report["after_history_settled_mb"] = rss_mb(proc.pid)
        return _finish(report, proc.pid, broker_pid, broker_peak, 0)
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if broker is not None:
            broker.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def _replay(report: dict[str, float], python: Path, root: Path, env: dict[str, str], scratch: Path, run: str,
            points: int) -> None:
    """A second server on the same topic, from an empty data folder: its peak RSS until it has
    folded every point of the burst (the history count of the run's key is `points`)."""
    port = free_port()
    env = {**env, "RUNLEDGER_DATA_DIR": str(scratch / "data2"), "DATA_DIR": str(scratch / "data2"),
           "RUNLEDGER_PORT": str(port), "PORT": str(port)}
    t0 = time.monotonic()
    proc = subprocess.Popen([str(python), "-m", "runledger.cli", "serve"], env=env, cwd=root,
                            stdout=open(scratch / "server2.log", "wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        with PeakSampler(proc.pid) as peak:
            while time.monotonic() - t0 < 900:
                try:
                    lag = httpx.get(f"{base}/api/runledger/v1/lag", timeout=30).json()
                    got = httpx.get(f"{base}/api/2.0/mlflow/runs/get", params={"run_id": run}, timeout=30)
                    steps = [m["step"] for m in got.json()["run"]["data"].get("metrics", [])] if got.is_success else []
                    if lag["total_lag"] == 0 and steps and max(steps) == points - 1:
                        break
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                time.sleep(0.2)
        report["replay_s"] = time.monotonic() - t0
        report["replay_points_per_s"] = points / report["replay_s"]
        report["replay_peak_mb"] = peak.peak
        report["replay_cpu_s"] = _cpu_seconds(proc.pid)
        report["after_replay_mb"] = rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _finish(report: dict[str, float], pid: int, broker_pid: int | None, broker_peak: PeakSampler | None,
            settle: float) -> int:
    time.sleep(settle)
    report["idle_end_mb"] = rss_mb(pid)
    report["idle_end_vs_baseline_pct"] = (report["idle_end_mb"] / report["baseline_mb"] - 1) * 100
    if broker_pid is not None and broker_peak is not None:
        broker_peak.__exit__()
        report["broker_peak_mb"] = broker_peak.peak
        report["broker_end_mb"] = rss_mb(broker_pid)
    for k, v in report.items():
        print(f"{k:28s} {v:,.1f}" if isinstance(v, float) else f"{k:28s} {v:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
