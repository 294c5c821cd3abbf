"""Start and stop the two servers the benchmark compares, each in a scratch folder.

- MLflow: `mlflow server` from a scratch venv (bench/.venv-mlflow, created on first use with
  `pip install mlflow==<pinned>`), SQLite backend store, bound to 127.0.0.1.
- Runledger: `python -m runledger.cli serve` run by the interpreter running the benchmark,
  against one local Apache Kafka broker (runledger.kafka_local.LocalKafka) that the whole
  benchmark shares; every Runledger start gets a fresh topic and DATA_DIR unless told otherwise.

Peak RSS is sampled from /proc: VmHWM of every process in the server's process tree (MLflow
runs its workers as child processes), the per-process peaks summed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from runledger.kafka_local import LocalKafka, free_port
from runledger.server_process import ServerProcess

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
MLFLOW_VENV = BENCH_DIR / ".venv-mlflow"
MLFLOW_SPEC = os.environ.get("BENCH_MLFLOW_SPEC", "mlflow==3.17.2")
API = "/api/2.0/mlflow"


# ----- /proc helpers

def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    out.extend(int(c) for c in fh.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return out


def process_tree(pid: int) -> list[int]:
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo.extend(_children(p))
    return seen


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """utime+stime of a process (not its children), seconds."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Keeps the highest VmHWM seen for every process of a tree; peak = sum of those."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid = pid
        self.interval = interval
        self.hwm_kb: dict[int, int] = {}
        self.peak_pss_kb = 0   # the highest sum of Pss over the tree seen in one sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def sample(self) -> None:
        pss = 0
        for p in process_tree(self.pid):
            kb = _status_kb(p, "VmHWM")
            if kb:
                self.hwm_kb[p] = max(self.hwm_kb.get(p, 0), kb)
            pss += _pss_kb(p)
        self.peak_pss_kb = max(self.peak_pss_kb, pss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.sample()
        self._stop.set()
        self._thread.join(2)

    @property
    def peak_mb(self) -> float:
        return sum(self.hwm_kb.values()) / 1024

    @property
    def peak_pss_mb(self) -> float:
        return self.peak_pss_kb / 1024

    @property
    def max_process_mb(self) -> float:
        return max(self.hwm_kb.values(), default=0) / 1024

    @property
    def processes(self) -> int:
        return len(self.hwm_kb)


def dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                pass
    return total


def file_bytes(path: Path) -> int:
    """Allocated bytes of a file (st_blocks), 0 if absent."""
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


def _wait_http(url: str, proc: subprocess.Popen, timeout: float, log_path: Path) -> float:
    t0 = time.monotonic()
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{_tail(log_path)}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server did not answer {url} within {timeout}s:\n{_tail(log_path)}")


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _terminate(proc: subprocess.Popen, timeout: float = 20.0, group: bool = False) -> None:
    if proc.poll() is not None:
        return
    try:
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait(10)
    except ProcessLookupError:
        pass


# ----- MLflow

def ensure_mlflow_venv(log=print) -> Path:
    """bench/.venv-mlflow with MLFLOW_SPEC installed; returns its `mlflow` executable."""
    exe = MLFLOW_VENV / "bin" / "mlflow"
    stamp = MLFLOW_VENV / ".installed"
    if exe.exists() and stamp.exists() and stamp.read_text().strip() == MLFLOW_SPEC:
        return exe
    log(f"creating {MLFLOW_VENV} with {MLFLOW_SPEC} (first run only, ~1-2 min) ...")
    if not (MLFLOW_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
    pip = [str(MLFLOW_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, MLFLOW_SPEC], check=True)
    stamp.write_text(MLFLOW_SPEC + "\n")
    return exe


def mlflow_version() -> str:
    out = subprocess.run([str(MLFLOW_VENV / "bin" / "python"), "-c", "import mlflow; print(mlflow.__version__)"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "?"


class MlflowServer:
    name = "mlflow"

    def __init__(self, scratch: Path, workers: int = 1, serve_artifacts: bool = False) -> None:
        self.dir = scratch / f"mlflow-{uuid.uuid4().hex[:8]}"
        self.workers = workers
        self.serve_artifacts = serve_artifacts   # the artifacts workload: MLflow's own proxy
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.rss: RssSampler | None = None
        self.startup_s = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.dir / "mlflow.db"

    def start(self) -> "MlflowServer":
        exe = ensure_mlflow_venv()
        self.dir.mkdir(parents=True)
        self.log_path = self.dir / "server.log"
        cmd = [str(exe), "server",
               "--backend-store-uri", f"sqlite:///{self.db_path}",
               *(["--serve-artifacts", "--artifacts-destination", str(self.dir / "artifacts"),
                  "--default-artifact-root", "mlflow-artifacts:/"] if self.serve_artifacts else
                 ["--default-artifact-root", (self.dir / "artifacts").as_uri(), "--no-serve-artifacts"]),
               "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", str(self.workers)]
        env = {**os.environ, "MLFLOW_LOGGING_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.dir, env=env, start_new_session=True)
        # The first start migrates the SQLite schema, which takes several seconds.
        self.startup_s = _wait_http(f"{self.url}/health", self.proc, 180, self.log_path)
        self.rss = RssSampler(self.proc.pid)
        self.warm_up()
        return self

    def warm_up(self, connections: int = 16, rounds: int = 5) -> None:
        """Each uvicorn worker opens its SQLite store lazily on its first request, which takes
        seconds; touch every worker (many parallel connections) before anything is timed."""
        def hit(_: int) -> None:
            with httpx.Client(base_url=self.url, timeout=120) as http:
                for _ in range(rounds):
                    http.get(API + "/experiments/search", params={"max_results": 1}).raise_for_status()
        t = time.monotonic()
        with ThreadPoolExecutor(connections) as pool:
            list(pool.map(hit, range(connections)))
        self.warmup_s = time.monotonic() - t

    def stop(self) -> dict:
        """Stop the server; its peak RSS (sampled before) and its files' size (after) in a dict."""
        if self.rss is not None:
            self.rss.stop()
        if self.proc is not None:
            _terminate(self.proc, group=True)
        return self.stats()

    def stats(self) -> dict:
        return {"peak_rss_mb": round(self.rss.peak_mb, 1) if self.rss else None,
                "peak_pss_mb": round(self.rss.peak_pss_mb, 1) if self.rss else None,
                "largest_process_rss_mb": round(self.rss.max_process_mb, 1) if self.rss else None,
                "processes": self.rss.processes if self.rss else None,
                "db_bytes": file_bytes(self.db_path) + file_bytes(self.dir / "mlflow.db-wal"),
                "startup_s": round(self.startup_s, 2)}

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# ----- Runledger

class Kafka:
    """The one broker the benchmark's Runledger servers share."""

    def __init__(self, scratch: Path) -> None:
        self.broker = LocalKafka(home=scratch / "kafka", port=free_port(), controller_port=free_port())
        self.rss: RssSampler | None = None

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers

    def start(self) -> "Kafka":
        t0 = time.monotonic()
        self.broker.start()
        self.startup_s = time.monotonic() - t0
        pid = self.broker.running_pid()
        self.rss = RssSampler(pid, interval=1.0) if pid else None
        return self

    def topic_bytes(self, topic: str) -> int:
        logs = self.broker.home / "logs"
        return sum(dir_bytes(p) for p in logs.glob(f"{topic}-*") if p.is_dir())

    def stop(self) -> None:
        if self.rss is not None:
            self.rss.stop()
        self.broker.stop()


# Seconds a Runledger server idles before its stop, to measure the RSS it settles at.
IDLE_WAIT_S = float(os.environ.get("RUNLEDGER_BENCH_IDLE_S", "6"))


class RunledgerServer:
    name = "runledger"

    def __init__(self, kafka: Kafka, scratch: Path, topic: str | None = None, data_dir: Path | None = None,
                 **env: str) -> None:
        self.kafka = kafka
        # The process itself is the one the test suite starts (runledger.server_process).
        self.process = ServerProcess(kafka.bootstrap, data_dir or scratch / f"runledger-{uuid.uuid4().hex[:8]}",
                                     topic or f"bench-{uuid.uuid4().hex[:10]}", **env)
        self.rss: RssSampler | None = None
        self.startup_s = 0.0
        self.start_rss_kb = 0   # VmRSS right after start-up (start() only)
        self.idle_end_kb = 0    # VmRSS idling after the workload, before the stop

    topic = property(lambda self: self.process.topic)
    data_dir = property(lambda self: self.process.data_dir)
    port = property(lambda self: self.process.port)
    url = property(lambda self: self.process.url)
    duckdb_path = property(lambda self: self.process.duckdb_path)
    proc = property(lambda self: self.process.proc)
    log_path = property(lambda self: self.process.log_path)

    def spawn(self) -> float:
        """Start the process without waiting; returns the monotonic time it was spawned."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        t0 = self.process.spawn(cwd=ROOT)
        self.rss = RssSampler(self.process.proc.pid)
        return t0

    def wait_ready(self, timeout: float = 120.0) -> float:
        return self.process.wait_ready(timeout)

    def start(self) -> "RunledgerServer":
        t0 = self.spawn()
        self.wait_ready()
        self.startup_s = time.monotonic() - t0
        self.start_rss_kb = _status_kb(self.proc.pid, "VmRSS")
        return self

    def idle_rss_kb(self, wait_s: float = IDLE_WAIT_S) -> int:
        """RSS once the workload is over and the server idles: the lowest of samples taken over
        `wait_s` (the server hands freed memory back within 5 s of a burst, docs/memory.md)."""
        low = _status_kb(self.proc.pid, "VmRSS")
        deadline = time.monotonic() + wait_s
        while low and time.monotonic() < deadline:
            time.sleep(0.5)
            low = min(low, _status_kb(self.proc.pid, "VmRSS") or low)
        return low

    def stop(self) -> dict:
        """Stop the server; its peak RSS (sampled before) and its files' size (after) in a dict."""
        if self.rss is not None:
            self.rss.stop()
        if self.proc is not None and self.proc.poll() is None:
            # Servers spawned without start() (replays) have no start-up figure, but their idle
            # RSS is reported per workload too (issue 22).
            self.idle_end_kb = self.idle_rss_kb()
        if self.proc is not None:
            self.process.stop(timeout=30)
        return self.stats()

    def stats(self) -> dict:
        return {"peak_rss_mb": round(self.rss.peak_mb, 1) if self.rss else None,
                "peak_pss_mb": round(self.rss.peak_pss_mb, 1) if self.rss else None,
                "duckdb_bytes": file_bytes(self.duckdb_path) + file_bytes(Path(str(self.duckdb_path) + ".wal")),
                "kafka_topic_bytes": self.kafka.topic_bytes(self.topic),
                "startup_s": round(self.startup_s, 2),
                # issue 22: idle RSS after the workload within 20% of the RSS after start-up
                "start_rss_mb": round(self.start_rss_kb / 1024, 1) if self.start_rss_kb else None,
                "idle_end_rss_mb": round(self.idle_end_kb / 1024, 1) if self.idle_end_kb else None}

    def cleanup(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)
