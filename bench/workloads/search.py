"""runs/search latency at two experiment sizes, five queries, max_results=100 (one page).

Every run has 5 params, 3 tags besides its name, and 3 metrics (one point each); values cycle
so each filter matches a known share of the runs:

- metric:   metrics.accuracy > 0.9                       (~10 %)
- param:    params.optimizer = 'adam'                    (25 %)
- tag LIKE: tags.model LIKE 'resnet%'                    (50 %)
- AND:      the three together                           (~1 %)
- order:    no filter, order_by metrics.loss ASC

Seeding is not measured, and both servers are seeded at their storage layer, because through
REST 20,000 runs (40,000 synchronous writes) take many minutes on a 2-core machine for either
server (Runledger's synchronous create-run + log-batch seeded ~15-25 runs/s here under load):

- Runledger: the events its create-run and log-batch endpoints would append (RunCreated,
  RunBatchLogged), appended to its topic with its own producer (ingest.producer.EventLog);
  the projector folds them as usual, and seeding ends when GET /lag says 0. `--search-seed
  rest` seeds through REST instead.
- MLflow: the same rows inserted straight into its SQLite tables (runs, tags, params, metrics,
  latest_metrics: the rows its create-run and log-batch write).

Every query's answer (the run names of the page, in order) is compared between the two
servers, so a seeding difference would show in the table.

The "Runledger" rows repeat each query with no write in between, so after the warm-up they are
answered from the search cache (query/search_cache.py: a first page kept until the next commit);
the "run cache off" rows (RUNLEDGER_RUN_CACHE_MB=0, which turns the search cache off too) are
what a search costs when a write landed since it was last answered.
"""

from __future__ import annotations

import sqlite3
import time
import uuid

import orjson

from common import API, T0_MS, Client, insert_mlflow_rows, lat_summary, parallel
from context import Ctx, Row

QUERIES = {
    "metric filter": {"filter": "metrics.accuracy > 0.9"},
    "param filter": {"filter": "params.optimizer = 'adam'"},
    "tag LIKE filter": {"filter": "tags.model LIKE 'resnet%'"},
    "AND of the three": {"filter": "metrics.accuracy > 0.9 and params.optimizer = 'adam' "
                                   "and tags.model LIKE 'resnet%'"},
    "order by metric": {"order_by": ["metrics.loss ASC"]},
}
OPTIMIZERS = ["adam", "sgd", "rmsprop", "adagrad"]
MODELS = ["resnet", "vit"]


def run_spec(i: int) -> dict:
    """Run i's content; deterministic. accuracy in [0, 1) spread by a multiplicative hash."""
    h = (i * 2654435761) % 2**32
    accuracy = (h % 10_000) / 10_000
    loss = ((h >> 7) % 100_000) / 100_000 + 0.000001 * (i % 1000)
    return {
        "name": f"run-{i:06d}",
        "start_time": T0_MS + i * 1000,
        "tags": {"team": f"team-{i % 10}", "model": f"{MODELS[(i // 4) % 2]}-{i % 50}", "stage": "bench"},
        "params": {"lr": str([0.001, 0.01, 0.1][i % 3]), "optimizer": OPTIMIZERS[i % 4],
                   "batch_size": str(32 << (i % 5)), "epochs": str(10 + i % 7), "seed": str(i)},
        "metrics": {"accuracy": accuracy, "loss": loss, "f1": (accuracy + loss) / 2},
    }


def seed_runledger_rest(url: str, exp_id: str, lo: int, hi: int, clients: int = 8) -> None:
    """Through the MLflow REST API (create-run + log-batch per run). Kept for --search-seed rest."""
    def work(w: int) -> None:
        with Client(url) as c:
            for i in range(lo + w, hi, clients):
                s = run_spec(i)
                run_id = c.create_run(exp_id, run_name=s["name"], start_time=s["start_time"],
                                      tags=[{"key": k, "value": v} for k, v in s["tags"].items()])
                c.post("/runs/log-batch", {
                    "run_id": run_id,
                    "params": [{"key": k, "value": v} for k, v in s["params"].items()],
                    "metrics": [{"key": k, "value": v, "timestamp": s["start_time"] + 1, "step": 0}
                                for k, v in s["metrics"].items()]})
    parallel(clients, work)


def seed_runledger_log(server, exp_id: str, artifact_location: str, lo: int, hi: int) -> None:
    """Append, with Runledger's own producer, the events its create-run and log-batch endpoints
    append (RunCreated, then RunBatchLogged, keyed by run id), then wait until the projector
    has applied them all (GET /api/runledger/v1/lag -> total_lag 0)."""
    import asyncio

    from runledger.ingest.contract.events import metrics_columns
    from runledger.ingest.producer import EventLog
    from runledger.ingest.writer import new_event

    events = []
    for i in range(lo, hi):
        s = run_spec(i)
        rid = uuid.uuid4().hex
        tags = [["mlflow.runName", s["name"]], *([k, v] for k, v in s["tags"].items())]
        events.append(new_event("RunCreated", {
            "run_name": s["name"], "start_time": s["start_time"], "user_id": "", "tags": tags,
            "artifact_uri": f"{artifact_location.rstrip('/')}/{rid}/artifacts"},
            user="", run_id=rid, experiment_id=exp_id, event_id=rid))
        events.append(new_event("RunBatchLogged", {
            "params": [[k, v] for k, v in s["params"].items()],
            "metrics": metrics_columns([(k, v, s["start_time"] + 1, 0) for k, v in s["metrics"].items()]),
            "tags": []}, user="", run_id=rid, experiment_id=exp_id))

    async def produce() -> None:
        log = EventLog(server.kafka.bootstrap, server.topic)
        await log.start()
        try:
            for j in range(0, len(events), 2000):
                await log.append(events[j:j + 2000])
        finally:
            await log.stop()

    asyncio.run(produce())
    wait_applied(server.url)


def wait_applied(url: str, timeout_s: float = 600) -> None:
    """Until the server's projector has applied its whole topic (GET .../lag -> total_lag 0)."""
    deadline = time.monotonic() + timeout_s
    with Client(url) as c:
        while c.http.get("/api/runledger/v1/lag").json().get("total_lag") != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the projector did not apply the seeded runs within {timeout_s:.0f} s")
            time.sleep(0.1)


def seed_mlflow(db_path: str, exp_id: str, artifact_root: str, lo: int, hi: int) -> None:
    runs, tags, params, metrics = [], [], [], []
    for i in range(lo, hi):
        s = run_spec(i)
        rid = uuid.uuid4().hex
        runs.append((rid, s["name"], "UNKNOWN", "", "", "", "RUNNING", s["start_time"], None, "", "active",
                     f"{artifact_root}/{rid}/artifacts", int(exp_id), None))
        tags.append(("mlflow.runName", s["name"], rid))
        tags.extend((k, v, rid) for k, v in s["tags"].items())
        params.extend((k, v, rid) for k, v in s["params"].items())
        metrics.extend((k, v, s["start_time"] + 1, rid, 0, 0) for k, v in s["metrics"].items())
    db = sqlite3.connect(db_path, timeout=60)
    with db:
        insert_mlflow_rows(db, runs, tags, params, metrics, metrics)
    db.close()


def _query(c: Client, exp_id: str, q: dict) -> tuple[float, list[str]]:
    body = orjson.dumps({"experiment_ids": [exp_id], "max_results": 100, **q})
    t = time.perf_counter()
    r = c.http.post(API + "/runs/search", content=body, headers={"content-type": "application/json"})
    dt = time.perf_counter() - t
    if r.status_code != 200:
        raise RuntimeError(f"runs/search {q} -> {r.status_code}: {r.text[:300]}")
    runs = orjson.loads(r.content).get("runs", [])
    return dt, [x["info"]["run_name"] for x in runs]


def run(ctx: Ctx) -> list[Row]:
    sizes = ctx.size([200, 1000], [2000, 20000])
    per_rep = ctx.size(5, 8)
    # A cell (server, size, query) stops repeating once its queries took this long in total:
    # MLflow orders 20,000 runs by a metric in ~17 s a query on this machine.
    budget_s = ctx.size(10.0, 30.0)
    ml = ctx.mlflow()
    rl = ctx.runledger()
    samples: dict[tuple[str, int, str], list[float]] = {}
    mismatches: list[str] = []
    try:
        with Client(ml.url) as mc, Client(rl.url) as rc:
            ml_exp = mc.create_experiment("search")
            rl_exp = rc.create_experiment("search")
            ml_art = mc.get("/experiments/get", {"experiment_id": ml_exp})["experiment"]["artifact_location"]
            rl_art = rc.get("/experiments/get", {"experiment_id": rl_exp})["experiment"]["artifact_location"]
            done = 0
            for n in sizes:
                t = time.monotonic()
                if ctx.options.get("search_seed") == "rest":
                    seed_runledger_rest(rl.url, rl_exp, done, n)
                else:
                    seed_runledger_log(rl, rl_exp, rl_art, done, n)
                ctx.log(f"search: seeded Runledger to {n:,} runs via its "
                        f"{ctx.options.get('search_seed', 'log')} in {time.monotonic() - t:.1f}s")
                t = time.monotonic()
                seed_mlflow(str(ml.db_path), ml_exp, ml_art, done, n)
                ctx.log(f"search: seeded MLflow to {n:,} runs via SQLite in {time.monotonic() - t:.1f}s")
                done = n
                for label, q in QUERIES.items():
                    _, a = _query(mc, ml_exp, q)      # warm-up, and the answers compared
                    _, b = _query(rc, rl_exp, q)
                    if a != b:
                        mismatches.append(f"{n} runs, {label}: MLflow {len(a)} runs {a[:3]}..., "
                                          f"Runledger {len(b)} runs {b[:3]}...")
                for rep in range(ctx.reps):
                    for label, q in QUERIES.items():
                        for name, c, exp in (("mlflow", mc, ml_exp), ("runledger", rc, rl_exp)):
                            cell = samples.setdefault((name, n, label), [])
                            for _ in range(per_rep):
                                if sum(cell) > budget_s:
                                    break
                                cell.append(_query(c, exp, q)[0])
                # The same queries on a server without the rendered-run cache (a new server
                # replaying the same log): what a search costs when none of its runs was read
                # since it last changed, e.g. every run of the page was just written to.
                uncached = ctx.runledger(topic=rl.topic, RUNLEDGER_RUN_CACHE_MB="0")
                try:
                    wait_applied(uncached.url)
                    with Client(uncached.url) as uc:
                        for label, q in QUERIES.items():
                            _query(uc, rl_exp, q)
                        for rep in range(ctx.reps):
                            for label, q in QUERIES.items():
                                cell = samples.setdefault(("runledger-uncached", n, label), [])
                                cell.extend(_query(uc, rl_exp, q)[0] for _ in range(per_rep))
                finally:
                    ctx.stop(uncached, "search (run cache off)")
                for label in QUERIES:
                    ctx.log(f"search {n:,} runs {label}: MLflow {lat_summary(samples[('mlflow', n, label)])} "
                            f"Runledger {lat_summary(samples[('runledger', n, label)])} "
                            f"run cache off {lat_summary(samples[('runledger-uncached', n, label)])}")
    finally:
        ctx.stop(ml, "search")
        ctx.stop(rl, "search")
    summary = {f"{name}/{n}/{label}": lat_summary(s) for (name, n, label), s in samples.items()}
    ctx.details["search"] = {"sizes": sizes, "queries_per_rep": per_rep, "queries": QUERIES,
                             "summary": summary, "answer_mismatches": mismatches}
    rows = []
    # Issue 22: every shape >= 15x MLflow at the smaller size (2,000 runs), and <= 15 ms p50 at
    # the larger one (20,000) with the run cache off (a page every write invalidated).
    min_ratio, uncached_target = 15.0, 15.0
    for idx, n in enumerate(sizes):
        target = 10.0 if idx == 0 else 30.0
        for label in QUERIES:
            a, b = lat_summary(samples[("mlflow", n, label)]), lat_summary(samples[("runledger", n, label)])
            note = "; ".join(m for m in mismatches if m.startswith(f"{n} runs, {label}:"))
            if note:
                note = "ANSWERS DIFFER: " + note
            for name, cell in (("MLflow", samples[("mlflow", n, label)]), ("Runledger", samples[("runledger", n, label)])):
                if len(cell) < per_rep * ctx.reps:
                    note += (("; " if note else "") + f"{name}: {len(cell)} sample(s), not {per_rep * ctx.reps}: "
                             f"stopped after {sum(cell):.0f}s (time budget {budget_s:.0f}s per cell)")
            ratio_goal = idx == 0
            met = b["p50_ms"] <= target and (not ratio_goal or a["p50_ms"] >= min_ratio * b["p50_ms"])
            rows.append(Row(f"runs/search {n:,} runs", label,
                            f"{n:,} runs, max_results=100, {per_rep} queries x {ctx.reps} reps per server",
                            "ms", a, b, False,
                            f"p50 <= {target:g} ms" + (f", >= {min_ratio:g}x MLflow" if ratio_goal else ""), met,
                            note=note))
            c = lat_summary(samples[("runledger-uncached", n, label)])
            off_target = target if idx == 0 else uncached_target
            rows.append(Row(f"runs/search {n:,} runs, run cache off", label,
                            f"as above, on a server replaying the same log with RUNLEDGER_RUN_CACHE_MB=0",
                            "ms", a, c, False, f"p50 <= {off_target:g} ms", c["p50_ms"] <= off_target))
    return rows
