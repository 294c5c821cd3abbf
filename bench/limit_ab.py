"""Two servers with different settings, measured side by side under the same load (issue 22:
what a lower DuckDB memory limit costs log-batch and the audit reads).

    .venv/bin/python bench/limit_ab.py --a RUNLEDGER_DUCKDB_MEMORY_LIMIT=384MiB --b RUNLEDGER_DUCKDB_MEMORY_LIMIT=1GiB

Both servers run at once on the broker named by RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS (default
127.0.0.1:29092) and get the same work, interleaved request by request or window by window, so
whatever else loads the machine loads both alike (a back-to-back A/B on a shared machine
measures the neighbours as much as the change). Each is seeded like the bench's audit workload
(one run with `--points` points in 20,000-point stream requests, then `--events` tags from 8
writers); then, alternating A and B:

- as-of read at now and trail pages (first, and page 21) of that run: p50 per server;
- log-batch, 1 client, 1,000 points a request: `--rounds` windows of `--seconds` on each,
  alternating which goes first; server CPU ms per request and points/s, medians.

RSS (VmHWM, and VmRSS at the end) and DuckDB's memory (duckdb_memory(), through the memory
trace) are printed per server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from budget_probe import Server, cpu_s, split, status_mb  # noqa: E402
from common import API, T0_MS, Client, batch_body, parallel  # noqa: E402

NATIVE = "/api/runledger/v1"


def seed(url: str, points: int, events: int) -> str:
    from workloads.audit import seed_points_and_tags
    with Client(url) as c:
        run_id = c.create_run(c.create_experiment("ab"))
    seed_points_and_tags(url, run_id, points, events)
    return run_id


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", action="append", default=[], help="NAME=VALUE for server A (repeatable)")
    ap.add_argument("--b", action="append", default=[], help="NAME=VALUE for server B (repeatable)")
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--reads", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    bootstrap = os.environ.get("RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:29092")
    scratch = Path(tempfile.mkdtemp(prefix="rl-ab-"))
    envs = {"A": dict(e.split("=", 1) for e in args.a), "B": dict(e.split("=", 1) for e in args.b)}
    servers = {k: Server(bootstrap, scratch, env).start() for k, env in envs.items()}
    try:
        print(f"A: {envs['A']}  B: {envs['B']}; load average {os.getloadavg()[0]:.1f}", flush=True)
        t = time.monotonic()
        runs = dict(zip(servers, parallel(2, lambda i: seed(list(servers.values())[i].proc.url, args.points,
                                                                 args.events))))
        print(f"seeded both in {time.monotonic() - t:.0f}s", flush=True)
        time.sleep(2)
        http = {k: httpx.Client(base_url=s.proc.url + NATIVE, timeout=300) for k, s in servers.items()}
        moment = T0_MS * 2
        tokens = {}
        for k, h in http.items():
            token = None
            for _ in range(20):
                page = h.get(f"/runs/{runs[k]}/events", params={"max_results": 100,
                                                                 **({"page_token": token} if token else {})}).json()
                token = page.get("next_page_token")
            tokens[k] = token
        reads: dict[str, dict[str, list[float]]] = {k: {"as-of now": [], "trail first": [], "trail page 21": []}
                                                    for k in servers}
        for i in range(args.reads):
            for k in (("A", "B") if i % 2 == 0 else ("B", "A")):
                h, run = http[k], runs[k]
                for name, call in (("as-of now", lambda: h.get(f"/runs/{run}", params={"as_of": moment})),
                                   ("trail first", lambda: h.get(f"/runs/{run}/events", params={"max_results": 100})),
                                   ("trail page 21", lambda: h.get(f"/runs/{run}/events", params={
                                       "max_results": 100, "page_token": tokens[k]}))):
                    t0 = time.perf_counter()
                    call().raise_for_status()
                    reads[k][name].append(time.perf_counter() - t0)
        for name in reads["A"]:
            a, b = (statistics.median(reads[k][name]) * 1000 for k in ("A", "B"))
            print(f"{name:14s} p50: A {a:6.2f} ms   B {b:6.2f} ms   A/B {a / b:.2f}", flush=True)

        batch: dict[str, dict[str, list[float]]] = {k: {"cpu_ms": [], "pps": []} for k in servers}
        with Client(servers["A"].proc.url) as ca, Client(servers["B"].proc.url) as cb:
            clients = {"A": ca, "B": cb}
            lb_runs = {k: c.create_run(c.create_experiment("ab-lb")) for k, c in clients.items()}
            steps = {"A": 0, "B": 0}
            for r in range(args.rounds):
                for k in (("A", "B") if r % 2 == 0 else ("B", "A")):
                    c, pid = clients[k], servers[k].pid
                    c0, t0, n = cpu_s(pid), time.monotonic(), 0
                    while time.monotonic() - t0 < args.seconds:
                        c.post_raw(API + "/runs/log-batch", batch_body(lb_runs[k], steps[k], 1000)).raise_for_status()
                        steps[k] += 100
                        n += 1
                    batch[k]["cpu_ms"].append((cpu_s(pid) - c0) * 1000 / n)
                    batch[k]["pps"].append(n * 1000 / (time.monotonic() - t0))
        a, b = (statistics.median(batch[k]["cpu_ms"]) for k in ("A", "B"))
        print(f"log-batch server CPU per 1,000-point request, median of {args.rounds}: A {a:.2f} ms  B {b:.2f} ms  "
              f"A/B {a / b:.2f}  (A {[round(x, 1) for x in batch['A']['cpu_ms']]}, B "
              f"{[round(x, 1) for x in batch['B']['cpu_ms']]})", flush=True)
        a, b = (statistics.median(batch[k]["pps"]) for k in ("A", "B"))
        print(f"log-batch points/s, median: A {a:,.0f}  B {b:,.0f}  A/B {a / b:.2f}", flush=True)
        for k, s in servers.items():
            rows = s.samples()
            print(f"{k}: VmHWM {status_mb(s.pid, 'VmHWM'):.0f} MB, VmRSS {status_mb(s.pid, 'VmRSS'):.0f} MB; highest "
                  f"sample: {split(max(rows, key=lambda r: r['rss'], default={}))}", flush=True)
    finally:
        for s in servers.values():
            s.proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
