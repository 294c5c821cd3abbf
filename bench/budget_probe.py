"""Throughput, server CPU per point and where the server's memory sits, for one workload under
given server settings (issue 22: what a DuckDB memory limit costs, and what makes up the peak).

    .venv/bin/python bench/budget_probe.py --workload log_batch --env RUNLEDGER_DUCKDB_MEMORY_LIMIT=384MiB
    .venv/bin/python bench/budget_probe.py --workload stream_arrow --seconds 20 [--replay] [--env ...]

Workloads, in the shapes of the bench's (bench/workloads/*.py):
- `log_batch`: 1,000-point log-batch requests back to back, each client on its own run, 1 then
  8 clients, `--reps` windows of `--seconds` each;
- `stream_json` / `stream_arrow`: 4 senders x 20,000 points per `metrics/stream` request for
  `--seconds`, then until the projector has applied everything (lag 0);
- `--replay` (after a stream): a second server with an empty data folder folds the same topic.

One `runledger serve` per server, on the broker named by RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS
(default 127.0.0.1:29092), with RUNLEDGER_MEMORY_TRACE sampling every second. Per phase it
prints points/s, the server's CPU seconds per million points (stays meaningful on a loaded
machine, unlike points/s), its RSS, and the memory trace's split (DuckDB by tag, glibc live and
free bytes, Arrow's pool) at the sample where RSS was highest; at the end, the RSS after idling
`--idle` seconds against the RSS after start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from common import Client, parallel  # noqa: E402

from runledger.server_process import ServerProcess  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")
MB = 1 << 20


def cpu_s(pid: int) -> float:
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Server:
    def __init__(self, bootstrap: str, scratch: Path, env: dict[str, str], topic: str | None = None) -> None:
        self.trace = scratch / f"trace-{uuid.uuid4().hex[:6]}.jsonl"
        env = {"RUNLEDGER_MEMORY_TRACE": str(self.trace), "RUNLEDGER_MEMORY_TRACE_SECONDS": "1", **env}
        self.topic = topic or f"probe-{uuid.uuid4().hex[:8]}"
        self.proc = ServerProcess(bootstrap, scratch / f"data-{uuid.uuid4().hex[:6]}", self.topic, **env)
        self.t0 = time.time()

    def start(self, wait: bool = True) -> "Server":
        self.t0 = time.time()
        self.proc.spawn()
        if wait:
            self.proc.wait_ready(120)
        return self

    @property
    def pid(self) -> int:
        assert self.proc.proc is not None
        return self.proc.proc.pid

    def samples(self, since: float = 0.0) -> list[dict[str, Any]]:
        try:
            rows = [json.loads(x) for x in self.trace.read_text().splitlines() if x.strip()]
        except OSError:
            return []
        return [r for r in rows if r.get("t", 0) >= since]

    def lag(self) -> int:
        return int(httpx.get(f"{self.proc.url}/api/runledger/v1/lag", timeout=30).json().get("total_lag", 1))


def split(sample: dict[str, Any]) -> str:
    """One trace sample as a short line: RSS, anonymous, DuckDB by tag, glibc, Arrow."""
    if not sample:
        return "(no trace sample)"
    duck = ", ".join(f"{k} {v / MB:.0f}" for k, v in sorted(sample.get("duckdb", {}).items(), key=lambda kv: -kv[1])
                     if v >= MB)
    m = sample.get("malloc", {})
    je = sample.get("jemalloc", {})
    jel = (f" | DuckDB's jemalloc live {je.get('allocated', 0) / MB:.0f}, resident {je.get('resident', 0) / MB:.0f}"
           if je else "")
    return (f"RSS {sample['rss'] / MB:.0f} (anon {sample['anon'] / MB:.0f}, files {sample['file'] / MB:.0f}) | "
            f"DuckDB {sample.get('duckdb_total', 0) / MB:.0f} [{duck}] | glibc in use "
            f"{m.get('in_use', 0) / MB:.0f} + mmapped {m.get('mmapped', 0) / MB:.0f}, free {m.get('free', 0) / MB:.0f} | "
            f"Arrow {sample.get('arrow', 0) / MB:.0f}{jel} | threads {sample.get('threads')}")


def peak_line(server: Server, since: float) -> str:
    rows = server.samples(since)
    top = max(rows, key=lambda r: r["rss"], default={})
    return f"peak sample: {split(top)}"


# ----- workloads

def log_batch_phase(url: str, exp_id: str, clients: int, window: float, tag: str) -> tuple[float, int]:
    from workloads.log_batch import one_rep
    return one_rep(url, exp_id, clients, window, tag)


def run_log_batch(server: Server, args: argparse.Namespace) -> None:
    url = server.proc.url
    with Client(url) as c:
        exp_id = c.create_experiment("probe")
    log_batch_phase(url, exp_id, 8, 3.0, "warm8")
    log_batch_phase(url, exp_id, 1, 1.0, "warm1")
    for clients in (1, 8):
        for rep in range(args.reps):
            t, c0 = time.time(), cpu_s(server.pid)
            pps, pts = log_batch_phase(url, exp_id, clients, args.seconds, f"c{clients}r{rep}")
            cpu = cpu_s(server.pid) - c0
            time.sleep(1.2)
            print(f"log-batch {clients} client(s) rep {rep + 1}: {pps:,.0f} points/s, server CPU "
                  f"{cpu / pts * 1e6:.2f} s per million points ({cpu / pts * 1e6:.0f} us/point); "
                  f"{peak_line(server, t)}", flush=True)


def run_stream(server: Server, args: argparse.Namespace, arrow: bool) -> dict[str, Any]:
    from workloads.streaming import KEYS_PER_RUN, POINTS_PER_REQUEST, SENDERS, STREAM, _request

    url = server.proc.url
    with Client(url) as c:
        exp = c.create_experiment("probe-stream")
        runs = [c.create_run(exp, run_name=f"s{i}") for i in range(SENDERS)]
    t, c0, split0 = time.time(), cpu_s(server.pid), cpu_split(server.pid)
    start = time.monotonic()
    stop_at = start + args.seconds

    def sender(i: int) -> int:
        points, step = 0, 0
        with httpx.Client(base_url=url, timeout=120) as http:
            while time.monotonic() < stop_at:
                r = http.post(STREAM, **_request(runs[i], step, POINTS_PER_REQUEST, arrow))
                r.raise_for_status()
                points += POINTS_PER_REQUEST
                step += POINTS_PER_REQUEST // KEYS_PER_RUN
        return points

    fast: list[tuple[float, float]] = []   # (seconds since start, RSS MB) every 20 ms: a spike between trace samples
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            fast.append((time.monotonic() - start, status_mb(server.pid, "VmRSS")))
    threading.Thread(target=sample, daemon=True).start()
    points = sum(parallel(SENDERS, sender))
    sent = time.monotonic()
    while server.lag() != 0:
        time.sleep(0.1)
    done = time.monotonic()
    stop.set()
    top = max(fast, key=lambda x: x[1], default=(0.0, 0.0))
    print(f"RSS sampled every 20 ms: highest {top[1]:.0f} MB at {top[0]:.1f}s (sending ended at {sent - start:.1f}s); "
          f"above 450 MB for {sum(0.02 for _, r in fast if r > 450):.1f}s", flush=True)
    cpu = cpu_s(server.pid) - c0
    user, system = (b - a for a, b in zip(split0, cpu_split(server.pid)))
    print(f"stream ({'Arrow' if arrow else 'JSON'}) {points:,} points: {points / (done - start):,.0f} points/s end "
          f"to end (sent in {sent - start:.1f}s, drained {done - sent:.1f}s), server CPU {cpu / points * 1e6:.2f} s "
          f"per million points (user {user / points * 1e6:.2f}, system {system / points * 1e6:.2f}); VmHWM {status_mb(server.pid, 'VmHWM'):.0f} MB; {peak_line(server, t)}", flush=True)
    return {"points": points, "runs": runs}


def run_replay(bootstrap: str, scratch: Path, env: dict[str, str], topic: str, points: int) -> Server:
    s = Server(bootstrap, scratch, env, topic=topic).start(wait=False)
    t0 = time.monotonic()
    s.proc.wait_ready(300)
    while True:
        try:
            if s.lag() == 0:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    elapsed = time.monotonic() - t0
    print(f"replay {points:,} points: {points / elapsed:,.0f} points/s (spawn -> lag 0, {elapsed:.1f}s), server CPU "
          f"{cpu_s(s.pid) / points * 1e6:.2f} s per million points (start-up included); VmHWM "
          f"{status_mb(s.pid, 'VmHWM'):.0f} MB; {peak_line(s, 0)}", flush=True)
    return s


def idle_report(server: Server, start_rss: float, idle: float, what: str) -> None:
    time.sleep(idle)
    low = status_mb(server.pid, "VmRSS")
    rows = server.samples(time.time() - 2)
    print(f"{what}: idle {idle:.0f}s: RSS {low:.0f} MB ({(low / start_rss - 1) * 100:+.0f}% vs {start_rss:.0f} MB "
          f"after start-up); VmHWM {status_mb(server.pid, 'VmHWM'):.0f} MB; now: {split(rows[-1] if rows else {})}",
          flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["log_batch", "stream_json", "stream_arrow"], default="log_batch")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server (repeatable)")
    ap.add_argument("--seconds", type=float, default=6.0, help="log-batch window per rep, or streaming time")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--replay", action="store_true", help="after a stream: a second server folds the same topic")
    ap.add_argument("--idle", type=float, default=8.0, help="seconds idled before the end (RSS after the idle trim)")
    args = ap.parse_args()
    env = dict(e.split("=", 1) for e in args.env)
    bootstrap = os.environ.get("RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:29092")
    scratch = Path(tempfile.mkdtemp(prefix="rl-budget-"))
    server = Server(bootstrap, scratch, env).start()
    replay: Server | None = None
    try:
        time.sleep(1.5)
        start_rss = status_mb(server.pid, "VmRSS")
        print(f"{args.workload} with {env or 'defaults'}; RSS after start-up {start_rss:.0f} MB; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        if args.workload == "log_batch":
            run_log_batch(server, args)
        else:
            got = run_stream(server, args, args.workload == "stream_arrow")
        idle_report(server, start_rss, args.idle, "after the workload")
        if args.replay and args.workload != "log_batch":
            server.proc.stop()
            replay = run_replay(bootstrap, scratch, env, server.topic, got["points"])
            idle_report(replay, start_rss, args.idle, "replay server")
    finally:
        server.proc.stop()
        if replay is not None:
            replay.proc.stop()
        threading.Thread(target=lambda: __import__("shutil").rmtree(scratch, ignore_errors=True)).start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
