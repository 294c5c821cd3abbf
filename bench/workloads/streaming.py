"""Streaming ingest (Runledger only): sustained points/s end to end, and projector lag.

Runledger's streaming endpoint answers once Kafka has acknowledged; the projector applies the
points afterwards. Per repetition, on a fresh server and topic:

- SENDERS threads, each with its own connection and run, POST /api/runledger/v1/metrics/stream
  back to back for DURATION seconds, POINTS_PER_REQUEST points each (10 keys, rising steps,
  timestamps rising with the steps), the columnar body of the streaming contract;
- a sampler GETs /api/runledger/v1/lag every 100 ms (oldest_unapplied_age_ms, total_lag);
- after the last send, wait until total_lag == 0 and every run's latest metric is its last
  step (runs/get), then check one key's full history count (untimed).

points/s = points acknowledged / (first send -> lag 0 and last points visible): "accepted ->
queryable". The acknowledged-only rate (points / send window) is kept in the JSON. Lag p50/p99
are over the samples taken while sending. MLflow has no streaming path; the ratio compares with
MLflow's best log-batch figure from the log-batch workload (when it ran in the same invocation).

Until the endpoint exists (404), the rows say n/a.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pyarrow as pa

from common import T0_MS, Client, Ticker, median, parallel, pct
from context import Ctx, Row
from servers import cpu_seconds

STREAM = "/api/runledger/v1/metrics/stream"
LAG = "/api/runledger/v1/lag"
SENDERS = 4
KEYS_PER_RUN = 10
POINTS_PER_REQUEST = 20_000


def _columns(first_step: int, n: int) -> tuple[list[str], list[float], list[int], list[int]]:
    per_key = n // KEYS_PER_RUN
    keys, steps = [], []
    for k in range(KEYS_PER_RUN):
        keys += [f"s{k}"] * per_key
        steps += range(first_step, first_step + per_key)
    return keys, [s * 0.25 for s in steps], [T0_MS + s for s in steps], steps


def _request(run_id: str, first_step: int, n: int, arrow: bool) -> dict:
    """httpx.post keyword arguments for one request: JSON columns, or an Arrow IPC body. The
    same points as `_columns`, built from NumPy arrays and a cached key column: the senders
    share the 2 cores with the server and the broker, so they should spend as little as a
    client holding its metrics in arrays would (the JSON bytes are those of `_columns`)."""
    per_key = n // KEYS_PER_RUN
    steps = np.tile(np.arange(first_step, first_step + per_key, dtype=np.int64), KEYS_PER_RUN)
    values, timestamps = steps * 0.25, steps + T0_MS
    if not arrow:
        return {"content": orjson.dumps({"run_id": run_id, "keys": _keys(per_key), "values": values,
                                         "timestamps": timestamps, "steps": steps}, option=orjson.OPT_SERIALIZE_NUMPY),
                "headers": {"content-type": "application/json"}}
    table = pa.table({"key": _key_dictionary(per_key), "value": pa.array(values), "timestamp": pa.array(timestamps),
                      "step": pa.array(steps)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return {"content": sink.getvalue().to_pybytes(), "params": {"run_id": run_id},
            "headers": {"content-type": "application/vnd.apache.arrow.stream"}}


@functools.lru_cache(maxsize=4)
def _keys(per_key: int) -> list[str]:
    return [f"s{k}" for k in range(KEYS_PER_RUN) for _ in range(per_key)]


@functools.lru_cache(maxsize=4)
def _key_dictionary(per_key: int) -> pa.Array:
    return pa.array(_keys(per_key)).dictionary_encode()


def _probe(url: str) -> str | None:
    """None if both endpoints answer, else why not."""
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.get(LAG)
        if r.status_code == 404:
            return f"endpoint missing: GET {LAG} -> 404"
        r = http.post(STREAM, content=orjson.dumps({"run_id": "0" * 32, "keys": [], "values": [],
                                                    "timestamps": [], "steps": []}),
                      headers={"content-type": "application/json"})
        if r.status_code in (404, 405) and "RESOURCE_DOES_NOT_EXIST" not in r.text:
            return f"endpoint missing: POST {STREAM} -> {r.status_code}"
    return None


def _one_rep(ctx: Ctx, duration: float, arrow: bool) -> dict:
    server = ctx.runledger()
    try:
        why = _probe(server.url)
        if why:
            return {"missing": why}
        with Client(server.url) as c:
            exp = c.create_experiment("stream")
            runs = [c.create_run(exp, run_name=f"stream-{i}") for i in range(SENDERS)]
        lag_samples: list[tuple[float, int, float]] = []
        lag_http = httpx.Client(base_url=server.url, timeout=5)

        def sample() -> None:
            r = lag_http.get(LAG)
            if r.status_code == 200:
                j = r.json()
                lag_samples.append((time.monotonic(), int(j.get("total_lag", 0)),
                                    float(j.get("oldest_unapplied_age_ms") or 0)))

        sent_steps = [0] * SENDERS
        # CPU seconds of the server and of the broker over sending + draining, per million
        # points: where the 2 cores go (the senders, in this process, share them too).
        server_pid, broker_pid = server.proc.pid, ctx.kafka.broker.running_pid() if ctx.kafka else None
        cpu0 = (cpu_seconds(server_pid), cpu_seconds(broker_pid) if broker_pid else 0.0, time.process_time())
        start = time.monotonic()
        stop_at = start + duration
        ticker = Ticker(0.1, sample).start()

        def sender(i: int) -> int:
            points, step = 0, 0
            with httpx.Client(base_url=server.url, timeout=60) as http:
                while time.monotonic() < stop_at:
                    n = POINTS_PER_REQUEST
                    r = http.post(STREAM, **_request(runs[i], step, n, arrow))
                    if r.status_code != 200:
                        raise RuntimeError(f"stream -> {r.status_code}: {r.text[:300]}")
                    got = r.json().get("points", n)
                    if got != n:
                        raise RuntimeError(f"stream acknowledged {got} points of {n}")
                    points += n
                    step += n // KEYS_PER_RUN
            sent_steps[i] = step
            return points

        points = sum(parallel(SENDERS, sender))
        sent_done = time.monotonic()
        stop_sampling_at = sent_done
        # Drain: lag 0, and every run's latest point visible.
        deadline = sent_done + max(120.0, duration * 2)
        caught_up = None
        with Client(server.url) as c:
            while time.monotonic() < deadline:
                r = lag_http.get(LAG)
                if r.status_code == 200 and int(r.json().get("total_lag", 1)) == 0:
                    ok = True
                    for i, rid in enumerate(runs):
                        latest = {m["key"]: m["step"] for m in c.get("/runs/get", {"run_id": rid})["run"]["data"]
                                  .get("metrics", [])}
                        if len(latest) != KEYS_PER_RUN or any(s != sent_steps[i] - 1 for s in latest.values()):
                            ok = False
                            break
                    if ok:
                        caught_up = time.monotonic()
                        break
                time.sleep(0.05)
        cpu1 = (cpu_seconds(server_pid), cpu_seconds(broker_pid) if broker_pid else 0.0, time.process_time())
        ticker.stop()
        lag_http.close()
        if caught_up is None:
            return {"error": f"not caught up {deadline - sent_done:.0f}s after the last send",
                    "points": points, "send_s": sent_done - start}
        with Client(server.url) as c:
            hist = orjson.loads(c.http.get("/api/2.0/mlflow/metrics/get-history",
                                           params={"run_id": runs[0], "metric_key": "s0"}).content)
            count = len(hist.get("metrics", []))
        # The replay workload rebuilds a read model from this log (the topic outlives the server).
        ctx.streamed_log = {"topic": server.topic, "points": points, "runs": runs,
                            "last_steps": [n - 1 for n in sent_steps]}
        during = [s for s in lag_samples if s[0] <= stop_sampling_at]
        ages = [s[2] for s in during]
        return {
            "points": points,
            "send_s": sent_done - start,
            "end_to_end_s": caught_up - start,
            "acked_points_per_s": points / (sent_done - start),
            "points_per_s": points / (caught_up - start),
            "drain_s": caught_up - sent_done,
            "lag_age_ms_p50": pct(ages, 50), "lag_age_ms_p99": pct(ages, 99),
            "lag_age_ms_max": max(ages) if ages else None,
            "lag_events_max": max((s[1] for s in during), default=None),
            "lag_samples": len(during), "sampler_errors": ticker.errors[:3],
            "history_count_s0_run0": count, "history_expected": sent_steps[0],
            **_slow_commits(server.log_path),
            "server_cpu_s_per_M": (cpu1[0] - cpu0[0]) / points * 1e6,
            "broker_cpu_s_per_M": (cpu1[1] - cpu0[1]) / points * 1e6,
            "bench_client_cpu_s_per_M": (cpu1[2] - cpu0[2]) / points * 1e6,
        }
    finally:
        stats = ctx.stop(server, "streaming")
        ctx.details.setdefault("streaming_disk", []).append(stats)


_SLOW = re.compile(r"slow commit: (\d+) points, ([\d.]+)s(?: \(rows ([\d.]+)s, COMMIT ([\d.]+)s\))?(.*checkpointed)?")


def _slow_commits(log_path: Path) -> dict:
    """The projector's slow commits (>= 0.5 s) in the server log: the lag peaks are these, and
    their count and length depend much less on the machine's load than the wall-clock lag does
    (issue 22: read them next to lag p99). `checkpoint_commit_max_s`: the longest COMMIT of the
    commits in which DuckDB checkpointed its WAL (the whole commit for older servers)."""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return {}
    slow = [m for m in _SLOW.finditer(text)]
    took = [float(m.group(2)) for m in slow]
    checkpoints = [float(m.group(4) or m.group(2)) for m in slow if m.group(5)]
    return {"slow_commits": len(took), "slow_commit_max_s": max(took, default=0.0),
            "slow_commit_sum_s": sum(took), "checkpoint_commits": len(checkpoints),
            "checkpoint_commit_max_s": max(checkpoints, default=0.0)}


def run(ctx: Ctx) -> list[Row]:
    # JSON columns first (the workload, and the log the replay workload rebuilds is then
    # the Arrow variant's: the log holds Arrow points either way), then the same with Arrow bodies.
    return _variant(ctx, arrow=False) + _variant(ctx, arrow=True)


def _variant(ctx: Ctx, arrow: bool) -> list[Row]:
    duration = ctx.size(5.0, 60.0)
    body = "Arrow body" if arrow else "JSON body"
    reps = []
    for rep in range(ctx.reps):
        r = _one_rep(ctx, duration, arrow)
        reps.append(r)
        if "missing" in r:
            ctx.log(f"streaming: {r['missing']}")
            break
        if "error" in r:
            ctx.log(f"streaming ({body}) rep {rep + 1}: {r['error']}")
            continue
        ctx.log(f"streaming ({body}) rep {rep + 1}: {r['points']:,} points, {r['points_per_s']:,.0f} points/s "
                f"end to end ({r['acked_points_per_s']:,.0f} acked/s, drain {r['drain_s']:.1f}s), lag age p50 "
                f"{r['lag_age_ms_p50']:.0f} ms p99 {r['lag_age_ms_p99']:.0f} ms; CPU s per million points: server "
                f"{r['server_cpu_s_per_M']:.2f}, broker {r['broker_cpu_s_per_M']:.2f}, "
                f"senders {r['bench_client_cpu_s_per_M']:.2f}; slow commits (>= 0.5 s) {r.get('slow_commits', '?')}, "
                f"longest {r.get('slow_commit_max_s', 0):.2f}s, in a DuckDB checkpoint {r.get('checkpoint_commit_max_s', 0):.2f}s")
    ctx.details["streaming_arrow" if arrow else "streaming"] = {
        "duration_s": duration, "senders": SENDERS, "points_per_request": POINTS_PER_REQUEST, "reps": reps}
    goal = 1_500_000 if arrow else 1_000_000   # issue 22
    target = f">= {goal:,} points/s"
    size = (f"{duration:.0f}s of sending per rep, {SENDERS} senders x {POINTS_PER_REQUEST} points/request "
            f"({body}), fresh server per rep")
    if reps and "missing" in reps[0]:
        note = f"n/a ({reps[0]['missing']})"
        return [Row("streaming ingest", f"end to end points/s, {body}", size, "points/s", None, None, True,
                    target, None, note),
                Row("streaming ingest", f"projector lag age p50 / p99, {body}", size, "ms", None, None, False,
                    "p99 < 1,000 ms", None, note)]
    good = [r for r in reps if "points_per_s" in r]
    lb = ctx.details.get("log_batch", {}).get("points_per_s", {}).get("mlflow", {})
    ml_best = max((median(v) for v in lb.values()), default=None)
    if not good:
        note = "; ".join(r.get("error", "") for r in reps)
        return [Row("streaming ingest", f"end to end points/s, {body}", size, "points/s", ml_best, None, True,
                    target, False, note)]
    pps = median([r["points_per_s"] for r in good])
    p50 = median([r["lag_age_ms_p50"] for r in good])
    p99 = median([r["lag_age_ms_p99"] for r in good])
    notes = []
    if len(good) < len(reps):
        notes.append(f"{len(reps) - len(good)} rep(s) failed: " + "; ".join(r.get("error", "") for r in reps))
    bad = [r for r in good if r["history_count_s0_run0"] != r["history_expected"]]
    if bad:
        notes.append(f"history count mismatch in {len(bad)} rep(s): "
                     f"{[(r['history_count_s0_run0'], r['history_expected']) for r in bad]}")
    notes.append("CPU s per million points (median): server "
                 f"{median([r['server_cpu_s_per_M'] for r in good]):.2f}, broker "
                 f"{median([r['broker_cpu_s_per_M'] for r in good]):.2f}, bench senders "
                 f"{median([r['bench_client_cpu_s_per_M'] for r in good]):.2f}")
    notes.append(f"MLflow column = MLflow's best log-batch points/s; acked-only rate "
                 f"{median([r['acked_points_per_s'] for r in good]):,.0f} points/s; "
                 f"total points/rep ~{median([r['points'] for r in good]):,.0f}")
    return [
        Row("streaming ingest", f"end to end points/s (accepted -> queryable), {body}", size, "points/s", ml_best,
            pps, True, target, pps >= goal, "; ".join(notes)),
        Row("streaming ingest", f"projector lag age p50 / p99, {body}", size, "ms", None,
            {"p50_ms": p50, "p95_ms": p99}, False, "p99 < 1,000 ms", p99 < 1000,
            stats="p50 / p99",
            note=f"p50 / p99 of oldest_unapplied_age_ms, median over reps of each rep's percentile; slow commits "
                 f"(>= 0.5 s, server log) per rep {[r.get('slow_commits') for r in good]}, longest per rep "
                 f"{[round(r.get('slow_commit_max_s', 0), 2) for r in good]} s; GET /lag polled "
                 f"back to back (every >= 100 ms) while sending, "
                 f"~{median([r['lag_samples'] for r in good]):.0f} samples/rep; max "
                 f"{max(r['lag_age_ms_max'] or 0 for r in good):,.0f} ms"),
    ]
