"""Issue 21, soak: stream at a steady rate for minutes with readers running, and check the
server neither grows nor falls behind.

- RSS of the server process, sampled every 2 s: after the warm-up, the largest sample is within
  10% of the smallest.
- Lag: GET /api/runledger/v1/lag's `oldest_unapplied_age_ms` (how long the oldest record not yet
  in the read model has been in the log), sampled every 250 ms: p99 under 1 s. A probe also
  streams one point every second and polls get-history until it shows; its figures are printed
  (they include the read's own time under the readers' load), not held to the bound.

Settings: RUNLEDGER_SOAK_SECONDS (600), RUNLEDGER_SOAK_WARMUP_SECONDS (a fifth of it),
RUNLEDGER_SOAK_POINTS_PER_S (2000, in requests of 500 points over 10 runs). The server takes its
settings from the environment as usual (e.g. RUNLEDGER_DUCKDB_MEMORY_LIMIT). `make soak` runs
it and prints the figures; it is not part of `make test`.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import RunledgerServer

pytestmark = pytest.mark.soak

NATIVE = "/api/runledger/v1"
MLFLOW = "/api/2.0/mlflow"
RUNS = 10
PER_REQUEST = 500


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _print_memory_accounts(trace: Path, warmup: float) -> None:
    """Where the RSS sat at the end of the warm-up and at the end: glibc malloc's live bytes,
    DuckDB's buffer manager by tag, Arrow's pool, and the anonymous rest (allocator caches,
    Python's arenas, thread stacks)."""
    if not trace.exists():
        return
    rows = [orjson.loads(line) for line in trace.read_text().splitlines() if line.strip()]
    if not rows:
        return
    t0 = rows[0]["t"] - 5
    after = [r for r in rows if r["t"] - t0 >= warmup] or rows
    for label, r in (("end of warm-up", after[0]), ("end", rows[-1])):
        m = r.get("malloc", {})
        duck = r.get("duckdb", {})
        rest = r["anon"] - m.get("in_use", 0) - m.get("free", 0) - m.get("mmapped", 0) - r.get("duckdb_total", 0)
        print(f"[soak] memory at {label}: RSS {r['rss'] >> 20} MB = files {r['file'] >> 20} + anonymous "
              f"{r['anon'] >> 20} (glibc in use {m.get('in_use', 0) >> 20}, glibc free {m.get('free', 0) >> 20}, "
              f"DuckDB {r.get('duckdb_total', 0) >> 20} "
              f"[{', '.join(f'{k} {v >> 20}' for k, v in sorted(duck.items(), key=lambda kv: -kv[1]) if v >> 20)}], "
              f"Arrow {r['arrow'] >> 20}, rest {rest >> 20}); WAL {r.get('database', {}).get('wal_size')}")


def test_steady_streaming_with_readers_keeps_rss_flat_and_lag_under_a_second(make_server: Any,
                                                                             tmp_path: Path) -> None:
    seconds = float(os.environ.get("RUNLEDGER_SOAK_SECONDS", "600"))
    warmup = float(os.environ.get("RUNLEDGER_SOAK_WARMUP_SECONDS", str(seconds / 5)))
    rate = float(os.environ.get("RUNLEDGER_SOAK_POINTS_PER_S", "2000"))
    trace = tmp_path / "memory-trace.jsonl"   # where the RSS sits (runledger.memory_trace), printed below
    server: RunledgerServer = make_server(RUNLEDGER_MEMORY_TRACE=str(trace), RUNLEDGER_MEMORY_TRACE_SECONDS="5")
    assert server.proc is not None
    api = httpx.Client(base_url=server.url, timeout=60)
    exp_id = api.post(f"{MLFLOW}/experiments/create", json={"name": "soak"}).json()["experiment_id"]
    run_ids = [api.post(f"{MLFLOW}/runs/create", json={"experiment_id": exp_id}).json()["run"]["info"]["run_id"]
               for _ in range(RUNS)]
    stop = threading.Event()
    errors: list[str] = []
    sent = {"points": 0, "requests": 0}
    reads = {"n": 0}
    lag_samples: list[tuple[float, float]] = []
    probe_ms: list[tuple[float, float]] = []
    rss: list[tuple[float, float]] = []
    t0 = time.monotonic()

    def streamer() -> None:
        interval = PER_REQUEST / rate
        with httpx.Client(base_url=server.url, timeout=60) as c:
            i, next_at = 0, time.monotonic()
            while not stop.is_set():
                run_id = run_ids[i % RUNS]
                step0 = (i // RUNS) * PER_REQUEST
                steps = list(range(step0, step0 + PER_REQUEST))
                r = c.post(f"{NATIVE}/metrics/stream", json={"run_id": run_id, "keys": ["loss"] * PER_REQUEST,
                                                             "values": [s * 1e-3 for s in steps], "timestamps": steps,
                                                             "steps": steps})
                if r.status_code != 200:
                    errors.append(f"stream {r.status_code} {r.text[:200]}")
                else:
                    sent["points"] += PER_REQUEST
                    sent["requests"] += 1
                i += 1
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))

    def reader(kind: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            i = 0
            while not stop.is_set():
                run_id = run_ids[i % RUNS]
                if kind == 0:
                    r = c.post(f"{MLFLOW}/runs/search", json={"experiment_ids": [exp_id], "max_results": 5,
                                                              "order_by": ["metrics.loss DESC"]})
                elif kind == 1:
                    r = c.get(f"{MLFLOW}/metrics/get-history-bulk-interval",
                              params={"run_ids": run_id, "metric_key": "loss", "max_results": 320})
                else:
                    r = c.post(f"{NATIVE}/sql", json={"query": "SELECT run_id, count(*), max(step) FROM metrics "
                                                               "GROUP BY run_id ORDER BY run_id"})
                if r.status_code != 200:
                    errors.append(f"read {kind} {r.status_code} {r.text[:200]}")
                reads["n"] += 1
                i += 1
                time.sleep(0.05)

    def sampler() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            last_rss = 0.0
            while not stop.is_set():
                now = time.monotonic() - t0
                r = c.get(f"{NATIVE}/lag")
                if r.status_code == 200:
                    lag_samples.append((now, float(r.json()["oldest_unapplied_age_ms"])))
                if now - last_rss >= 2:
                    rss.append((now, _rss_mb(server.proc.pid)))  # type: ignore[union-attr]
                    last_rss = now
                time.sleep(0.25)

    def probe() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            n = 0
            while not stop.is_set():
                sent_at = time.monotonic()
                r = c.post(f"{NATIVE}/metrics/stream", json={"run_id": run_ids[0], "keys": ["probe"], "values": [n],
                                                             "timestamps": [n], "steps": [n]})
                if r.status_code == 200:
                    while not stop.is_set():
                        h = c.get(f"{MLFLOW}/metrics/get-history", params={"run_id": run_ids[0], "metric_key": "probe"})
                        if h.status_code == 200 and len(h.json().get("metrics", [])) > n:
                            probe_ms.append((time.monotonic() - t0, (time.monotonic() - sent_at) * 1000))
                            break
                        time.sleep(0.01)
                    n += 1
                time.sleep(max(0.0, 1.0 - (time.monotonic() - sent_at)))

    threads = [threading.Thread(target=streamer, daemon=True), threading.Thread(target=sampler, daemon=True),
               threading.Thread(target=probe, daemon=True)]
    threads += [threading.Thread(target=reader, args=(k,), daemon=True) for k in range(3)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - t0
    api.close()

    after = [v for t, v in rss if t >= warmup]
    lag_after = [v for t, v in lag_samples if t >= warmup]
    probe_after = [v for t, v in probe_ms if t >= warmup]
    growth = max(after) / min(after) - 1
    print(f"\n[soak] {elapsed:.0f} s (warm-up {warmup:.0f} s): {sent['points']} points in {sent['requests']} stream "
          f"requests ({sent['points'] / elapsed:.0f} points/s, target {rate:.0f}), {reads['n']} reads, "
          f"{len(errors)} errors")
    print(f"[soak] RSS after warm-up: min {min(after):.0f} MB, max {max(after):.0f} MB, spread {growth * 100:.1f}% "
          f"(at the start {rss[0][1]:.0f} MB, at the end {rss[-1][1]:.0f} MB)")
    minutes = {}
    for t, v in rss:
        minutes.setdefault(int(t // 60), []).append(v)
    print("[soak] RSS per minute (median MB): " + ", ".join(f"{m}:{sorted(v)[len(v) // 2]:.0f}"
                                                          for m, v in sorted(minutes.items())))
    print(f"[soak] lag (oldest unapplied record's age) after warm-up: p50 {_p(lag_after, 0.5):.0f} ms, "
          f"p99 {_p(lag_after, 0.99):.0f} ms, max {max(lag_after):.0f} ms over {len(lag_after)} samples")
    print(f"[soak] streamed point visible in get-history: p50 {_p(probe_after, 0.5):.0f} ms, "
          f"p99 {_p(probe_after, 0.99):.0f} ms over {len(probe_after)} probes")
    _print_memory_accounts(trace, warmup)
    assert not errors, errors[:5]
    assert sent["points"] >= 0.9 * rate * seconds, "the streamer did not keep the rate"
    assert growth <= 0.10, f"RSS grew {growth * 100:.1f}% after warm-up"
    assert _p(lag_after, 0.99) < 1000
