"""Metric history of one key: a 50,000-point key and a 1,000,000-point key, in one run.

- full:    GET metrics/get-history?run_id=&metric_key=        (the whole series, one response)
- sampled: GET metrics/get-history-bulk-interval?run_ids=&metric_key=&max_results=1000

Seeding is not measured. Runledger is seeded through REST log-batch (1000 points a request,
8 clients); its seeding rate is kept in the JSON as a large log-batch figure. MLflow is seeded
by inserting the same rows into its SQLite `metrics` and `latest_metrics` tables (through its
REST log-batch 1,050,000 points take ~2.5 minutes here). Both answers are checked: the full
history must have every point, and both sampled answers must have the same number of points.

Also measured here, on the same data: bytes on disk per metric point (Kafka topic, DuckDB file,
MLflow's SQLite file, each after a clean stop), and the data set the replay workload rebuilds.
"""

from __future__ import annotations

import sqlite3
import time

import orjson

from common import API, T0_MS, Client, lat_summary, parallel, single_key_batch
from context import Ctx, Row

SENTINEL_TAG = "bench.sentinel"


def seed_runledger(url: str, run_id: str, keys: dict[str, int], clients: int = 8) -> float:
    """Log every point of every key through log-batch; returns points/s."""
    chunks = [(key, lo, min(1000, n - lo)) for key, n in keys.items() for lo in range(0, n, 1000)]
    t = time.monotonic()

    def work(w: int) -> None:
        with Client(url) as c:
            for key, lo, size in chunks[w::clients]:
                c.post_raw(API + "/runs/log-batch", single_key_batch(run_id, key, lo, size)).raise_for_status()
    parallel(clients, work)
    return sum(keys.values()) / (time.monotonic() - t)


def seed_mlflow(db_path: str, run_id: str, keys: dict[str, int]) -> None:
    db = sqlite3.connect(db_path, timeout=60)
    with db:
        for key, n in keys.items():
            db.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,0)",
                           ((key, s * 0.5, T0_MS + s, run_id, s) for s in range(n)))
            last = n - 1
            db.execute("INSERT INTO latest_metrics (key, value, timestamp, run_uuid, step, is_nan) "
                       "VALUES (?,?,?,?,?,0)", (key, last * 0.5, T0_MS + last, run_id, last))
    db.close()


def _full(c: Client, run_id: str, key: str) -> tuple[float, int]:
    t = time.perf_counter()
    r = c.http.get(API + "/metrics/get-history", params={"run_id": run_id, "metric_key": key})
    body = r.content
    dt = time.perf_counter() - t
    if r.status_code != 200:
        raise RuntimeError(f"get-history {key} -> {r.status_code}: {r.text[:300]}")
    return dt, len(orjson.loads(body).get("metrics", []))


def _sampled(c: Client, run_id: str, key: str) -> tuple[float, int | None]:
    t = time.perf_counter()
    r = c.http.get(API + "/metrics/get-history-bulk-interval",
                   params={"run_ids": run_id, "metric_key": key, "max_results": 1000})
    body = r.content
    dt = time.perf_counter() - t
    if r.status_code == 404:
        return dt, None
    if r.status_code != 200:
        raise RuntimeError(f"get-history-bulk-interval {key} -> {r.status_code}: {r.text[:300]}")
    return dt, len(orjson.loads(body).get("metrics", []))


def run(ctx: Ctx) -> list[Row]:
    keys = {"hist_50k": ctx.size(5_000, 50_000), "hist_1m": ctx.size(50_000, 1_000_000)}
    labels = {"hist_50k": ctx.size("5k-point key (quick)", "50k-point key"),
              "hist_1m": ctx.size("50k-point key (quick)", "1M-point key")}
    total = sum(keys.values())
    full_per_rep = {"hist_50k": 3, "hist_1m": 1}
    sampled_per_rep = 3
    # A cell (server, key, full|sampled) stops repeating once its requests took this long in
    # total: MLflow's full 1M-point history takes minutes, so it is measured once.
    budget_s = ctx.size(20.0, 30.0)
    samples: dict[tuple[str, str, str], list[float]] = {}
    counts: dict[tuple[str, str, str], set] = {}
    disk: dict[str, dict] = {}

    ml = ctx.mlflow()
    rl = ctx.runledger()
    try:
        with Client(ml.url) as mc, Client(rl.url) as rc:
            ml_run = mc.create_run(mc.create_experiment("history"), run_name="history")
            rl_exp = rc.create_experiment("history")
            rl_run = rc.create_run(rl_exp, run_name="history")
            t = time.monotonic()
            seed_mlflow(str(ml.db_path), ml_run, keys)
            ctx.log(f"history: seeded MLflow with {total:,} points via SQLite in {time.monotonic() - t:.1f}s")
            rl_rate = seed_runledger(rl.url, rl_run, keys)
            # Written last in the run's partition: once it is visible after a replay, all is.
            rc.post("/runs/set-tag", {"run_id": rl_run, "key": SENTINEL_TAG, "value": "done"})
            ctx.log(f"history: seeded Runledger with {total:,} points via log-batch, {rl_rate:,.0f} points/s")
            # Warm-up (not timed): the sampled view of both keys, the small key's full history.
            for c, rid in ((mc, ml_run), (rc, rl_run)):
                for key in keys:
                    _sampled(c, rid, key)
                _full(c, rid, "hist_50k")
            for rep in range(ctx.reps):
                for key in keys:
                    for name, c, rid in (("mlflow", mc, ml_run), ("runledger", rc, rl_run)):
                        for mode, fn, per in (("full", _full, full_per_rep[key]), ("sampled", _sampled, sampled_per_rep)):
                            cell = samples.setdefault((name, key, mode), [])
                            for _ in range(per):
                                if sum(cell) > budget_s:
                                    break
                                dt, n = fn(c, rid, key)
                                cell.append(dt)
                                counts.setdefault((name, key, mode), set()).add(n)
                ctx.log(f"history rep {rep + 1}: " + ", ".join(
                    f"{n}/{k}/{m} {lat_summary(s)['p50_ms']:.0f}ms" for (n, k, m), s in samples.items()))
    finally:
        disk["mlflow"] = ctx.stop(ml, "history")
        disk["runledger"] = ctx.stop(rl, "history", cleanup=False)
    ctx.replay_source = {"server": rl, "run_id": rl_run, "keys": keys, "points": total}
    ctx.details["history"] = {
        "keys": keys, "runledger_seed_log_batch_points_per_s": round(rl_rate),
        "summary": {f"{n}/{k}/{m}": lat_summary(s) for (n, k, m), s in samples.items()},
        "answer_counts": {f"{n}/{k}/{m}": sorted(v, key=str) for (n, k, m), v in counts.items()},
    }
    ctx.details["disk"] = {
        "points": total,
        "mlflow_sqlite_bytes": disk["mlflow"]["db_bytes"],
        "runledger_duckdb_bytes": disk["runledger"]["duckdb_bytes"],
        "runledger_kafka_topic_bytes": disk["runledger"]["kafka_topic_bytes"],
        "what": f"one run, {len(keys)} keys, {total:,} points (history workload), files measured after a clean stop",
    }

    rows = []
    for key in keys:
        for mode in ("full", "sampled"):
            a = samples[("mlflow", key, mode)]
            b = samples[("runledger", key, mode)]
            ca, cb = counts[("mlflow", key, mode)], counts[("runledger", key, mode)]
            notes = []
            if mode == "full":
                for name, cs in (("MLflow", ca), ("Runledger", cb)):
                    if cs != {keys[key]}:
                        notes.append(f"{name} returned {sorted(cs, key=str)} points, expected {keys[key]:,}")
            else:
                if None in cb:
                    notes.append("Runledger has no get-history-bulk-interval")
                elif ca != cb:
                    notes.append(f"sampled sizes differ: MLflow {sorted(ca)} vs Runledger {sorted(cb)}")
            per = full_per_rep[key] if mode == "full" else sampled_per_rep
            for name, cell in (("MLflow", a), ("Runledger", b)):
                if len(cell) < per * ctx.reps:
                    notes.append(f"{name}: {len(cell)} sample(s), not {per * ctx.reps}: stopped after "
                                 f"{sum(cell):.0f}s (time budget {budget_s:.0f}s per cell)")
            case = f"{labels[key]}, {'full' if mode == 'full' else 'sampled to ~1000'}"
            rl_val = None if None in cb else lat_summary(b)
            target, met = "", None
            if key == "hist_50k" and mode == "full":
                target, met = "p50 <= 100 ms", lat_summary(b)["p50_ms"] <= 100
            size = (f"{keys[key]:,} points, " + ("GET metrics/get-history" if mode == "full" else
                    "GET metrics/get-history-bulk-interval max_results=1000") + f", {per} x {ctx.reps} reps")
            rows.append(Row("get-history", case, size, "ms", lat_summary(a), rl_val, False, target, met,
                            "; ".join(notes)))
    return rows
