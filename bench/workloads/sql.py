"""Analytical SQL (issue 13): the ten worked questions of docs/sql.md, three ways.

- Runledger: POST /api/runledger/v1/sql (JSON), the SQL exactly as docs/sql.md has it.
- MLflow, the way an MLflow user answers the same question today: the `mlflow` client against
  `mlflow server` (search_runs for every run of the experiment, plus a get_metric_history call
  per run when the question is about points, not the latest values), aggregated in Python
  (pandas is not installed in this venv; the aggregation is a small share of the time). The
  event-log questions (who changed what, refused writes) have no MLflow equivalent: n/a.
  A question needing one history call per run stops after BUDGET_S and is extrapolated
  linearly to all runs (the note says so and from how many runs).
- DuckDB in-process on a Parquet export of the same views (exported through the endpoint, which
  also gives the export rate of `metrics`): the practical limit for the same SQL.

Seeding (not measured): Runledger gets the events its endpoints would append (RunCreated,
RunBatchLogged with params, tags and the final accuracy, MetricsLogged with each run's loss
curve, RunUpdated for finished runs), produced straight to its topic; MLflow gets the same rows
in its SQLite tables. Runs alternate between two acting users for the event-log questions.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import sqlite3
import statistics
import time
import uuid
from pathlib import Path

import httpx
import orjson

from common import T0_MS, insert_mlflow_rows, lat_summary
from context import Ctx, Row
from workloads.search import wait_applied

DOC = Path(__file__).resolve().parents[2] / "docs" / "sql.md"
LRS = ["0.001", "0.01", "0.1"]
MODELS = ["cnn", "mlp", "vit"]
BUDGET_S = 60.0
VIEWS = ["experiments", "runs", "params", "tags", "metrics", "latest_metrics", "run_activity", "events", "rejections"]


def questions() -> dict[int, tuple[str, str]]:
    found = re.findall(r"^### (\d+)\. (.+?)\n.*?```sql\n(.*?)```", DOC.read_text(), re.S | re.M)
    return {int(n): (title, q) for n, title, q in found}


def run_spec(i: int, steps: int) -> dict:
    h = (i * 2654435761) % 2**32
    lr = LRS[i % 3]
    finished = i % 10 != 0
    start = T0_MS + i * 1000
    rate = 0.002 + (h % 1000) / 200_000 * (1 + LRS.index(lr))
    loss = [1.0 / (1 + rate * s) + ((h >> (s % 13)) % 100) / 10_000 for s in range(steps)]
    return {"name": f"run-{i:06d}", "lr": lr, "batch_size": str(32 << (i % 3)), "model": MODELS[(i // 3) % 3],
            "start": start, "loss": loss, "accuracy": 0.5 + (h % 5000) / 10_000,
            "finished": finished, "end": start + steps + 10, "late": finished and i % 100 == 1,
            "user": "alice" if i % 2 else "bob"}


def seed_runledger(server, exp_id: str, artifact: str, n: int, steps: int) -> None:
    from runledger.ingest.contract.events import metrics_columns
    from runledger.ingest.producer import EventLog
    from runledger.ingest.writer import new_event

    def events_of(i: int) -> list:
        s = run_spec(i, steps)
        rid = uuid.uuid4().hex
        kw = {"user": s["user"], "run_id": rid, "experiment_id": exp_id}
        out = [new_event("RunCreated", {"run_name": s["name"], "start_time": s["start"], "user_id": s["user"],
                                        "tags": [["mlflow.runName", s["name"]], ["model", s["model"]]],
                                        "artifact_uri": f"{artifact.rstrip('/')}/{rid}/artifacts"}, **kw),
               new_event("RunBatchLogged", {"params": [["lr", s["lr"]], ["batch_size", s["batch_size"]]],
                                            "metrics": metrics_columns([("accuracy", s["accuracy"], s["start"] + steps, steps - 1)]),
                                            "tags": []}, **kw),
               new_event("MetricsLogged", metrics_columns(
                   [("loss", v, s["start"] + k, k) for k, v in enumerate(s["loss"])]), **kw)]
        if s["finished"]:
            out.append(new_event("RunUpdated", {"status": "FINISHED", "end_time": s["end"], "run_name": None}, **kw))
        if s["late"]:
            out.append(new_event("MetricsLogged", metrics_columns([("late", 1.0, s["end"] + 5, 0)]), **kw))
        return out

    async def produce() -> None:
        log = EventLog(server.kafka.bootstrap, server.topic)
        await log.start()
        try:
            batch: list = []
            for i in range(n):
                batch.extend(events_of(i))
                if len(batch) >= 400:
                    await log.append(batch)
                    batch = []
            if batch:
                await log.append(batch)
        finally:
            await log.stop()

    asyncio.run(produce())
    wait_applied(server.url, timeout_s=3600)


def seed_mlflow(db_path: str, exp_id: str, artifact: str, n: int, steps: int) -> None:
    db = sqlite3.connect(db_path, timeout=60)
    with db:
        for lo in range(0, n, 1000):
            runs, tags, params, metrics, latest = [], [], [], [], []
            for i in range(lo, min(n, lo + 1000)):
                s = run_spec(i, steps)
                rid = uuid.uuid4().hex
                runs.append((rid, s["name"], "UNKNOWN", "", "", s["user"], "FINISHED" if s["finished"] else "RUNNING",
                             s["start"], s["end"] if s["finished"] else None, "", "active",
                             f"{artifact}/{rid}/artifacts", int(exp_id), None))
                tags += [("mlflow.runName", s["name"], rid), ("model", s["model"], rid)]
                params += [("lr", s["lr"], rid), ("batch_size", s["batch_size"], rid)]
                pts = [("loss", v, s["start"] + k, rid, k, 0) for k, v in enumerate(s["loss"])]
                pts.append(("accuracy", s["accuracy"], s["start"] + steps, rid, steps - 1, 0))
                if s["late"]:
                    pts.append(("late", 1.0, s["end"] + 5, rid, 0, 0))
                metrics += pts
                last: dict[str, tuple] = {}
                for p in pts:
                    if p[0] not in last or (p[4], p[2], p[1]) > (last[p[0]][4], last[p[0]][2], last[p[0]][1]):
                        last[p[0]] = p
                latest += last.values()
            insert_mlflow_rows(db, runs, tags, params, metrics, latest)
    db.close()


# ----- the MLflow way: the mlflow client and Python

class MlflowWay:
    def __init__(self, url: str, exp_id: str) -> None:
        from mlflow.tracking import MlflowClient
        self.client = MlflowClient(tracking_uri=url)
        self.exp_id = exp_id
        self.extrapolated: str = ""

    def all_runs(self, filter_string: str = "") -> list:
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.exp_id], filter_string, max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def histories(self, runs: list, key: str) -> tuple[dict[str, list], float]:
        """One get_metric_history call per run, within BUDGET_S; returns the histories fetched
        and the seconds the calls not made would have taken at the measured rate."""
        out: dict[str, list] = {}
        t0 = time.monotonic()
        for r in runs:
            out[r.info.run_id] = self.client.get_metric_history(r.info.run_id, key)
            spent = time.monotonic() - t0
            if spent > BUDGET_S and len(out) < len(runs):
                self.extrapolated = f"stopped after {len(out):,} of {len(runs):,} runs, time extrapolated"
                return out, spent / len(out) * (len(runs) - len(out))
        return out, 0.0

    # Each question returns (answer, seconds of work skipped past the time budget).
    def q1(self) -> tuple[object, float]:
        best: dict[str, tuple[float, str]] = {}
        for r in self.all_runs():
            lr, loss = r.data.params.get("lr"), r.data.metrics.get("loss")
            if lr is not None and loss is not None and (lr not in best or loss < best[lr][0]):
                best[lr] = (loss, r.info.run_name)
        return sorted((lr, v[1], v[0]) for lr, v in best.items()), 0.0

    def q2(self) -> tuple[object, float]:
        hist, skipped_s = self.histories(self.all_runs(), "loss")
        by_step: dict[int, list[float]] = collections.defaultdict(list)
        for points in hist.values():
            for p in points:
                by_step[p.step].append(p.value)
        return {s: statistics.quantiles(v, n=10, method="inclusive") for s, v in by_step.items() if len(v) > 1}, skipped_s

    def q3(self) -> tuple[object, float]:
        hist, skipped_s = self.histories(self.all_runs(), "loss")
        rising = []
        for rid, points in hist.items():
            v = [p.value for p in sorted(points, key=lambda p: p.step)][-4:]
            if len(v) == 4 and all(b > a for a, b in zip(v, v[1:])):
                rising.append(rid)
        return sorted(rising), skipped_s

    def q4(self) -> tuple[object, float]:
        xs = [(float(r.data.params["lr"]), r.data.metrics["accuracy"]) for r in self.all_runs("attributes.status = 'FINISHED'")
              if "lr" in r.data.params and "accuracy" in r.data.metrics]
        return round(statistics.correlation(*zip(*xs)), 9), 0.0

    def q5(self) -> tuple[object, float]:
        runs = self.all_runs("attributes.status = 'FINISHED'")
        late, calls, t0 = [], 0, time.monotonic()
        keys_total = sum(len(r.data.metrics) for r in runs)
        for r in runs:
            for key in r.data.metrics:
                calls += 1
                if any(p.timestamp > r.info.end_time for p in self.client.get_metric_history(r.info.run_id, key)):
                    late.append((r.info.run_name, key))
            spent = time.monotonic() - t0
            if spent > BUDGET_S and calls < keys_total:
                self.extrapolated = f"stopped after {calls:,} of {keys_total:,} history calls, time extrapolated"
                return sorted(late), spent / calls * (keys_total - calls)
        return sorted(late), 0.0

    def q8(self) -> tuple[object, float]:
        cutoff = time.time() * 1000 - 3600_000
        quiet = [r.info.run_name for r in self.all_runs("attributes.status = 'RUNNING'")
                 if r.data._metric_objs and max(m.timestamp for m in r.data._metric_objs) < cutoff]
        return sorted(quiet), 0.0

    def q9(self) -> tuple[object, float]:
        groups: dict[str, list[float]] = collections.defaultdict(list)
        for r in self.all_runs():
            if "model" in r.data.tags and "accuracy" in r.data.metrics:
                groups[r.data.tags["model"]].append(r.data.metrics["accuracy"])
        return sorted((m, round(statistics.mean(v), 9)) for m, v in groups.items()), 0.0

    def q10(self) -> tuple[object, float]:
        top = self.client.search_runs([self.exp_id], "", order_by=["metrics.accuracy DESC", "attributes.run_name ASC"],
                                      max_results=3)
        return [r.info.run_name for r in top], 1.0


def _sql(http: httpx.Client, query: str) -> tuple[float, dict]:
    t = time.perf_counter()
    r = http.post("/api/runledger/v1/sql", json={"query": query})
    dt = time.perf_counter() - t
    if r.status_code != 200:
        raise RuntimeError(f"SQL failed after {dt:.1f}s: {r.status_code} {r.text[:300]}; query: {' '.join(query.split())[:200]}")
    return dt, orjson.loads(r.content)


def run(ctx: Ctx) -> list[Row]:
    import duckdb

    n_runs, steps = ctx.size((1_000, 100), (20_000, 500))
    # BENCH_SQL_RUNS / BENCH_SQL_STEPS override the sizes (e.g. a mid-size run on a busy machine).
    n_runs = int(os.environ.get("BENCH_SQL_RUNS", n_runs))
    steps = int(os.environ.get("BENCH_SQL_STEPS", steps))
    per_rep = ctx.size(3, 5)
    qs = questions()
    rl = ctx.runledger()
    ml = ctx.mlflow()
    samples: dict[tuple[str, int], list[float]] = collections.defaultdict(list)
    mlflow_ms: dict[int, float] = {}
    notes: dict[int, str] = collections.defaultdict(str)
    export: dict[str, float] = {}
    try:
        with httpx.Client(base_url=rl.url, timeout=600) as http:
            rl_exp = http.post("/api/2.0/mlflow/experiments/create", json={"name": "sql-docs"}).json()["experiment_id"]
            rl_art = http.get("/api/2.0/mlflow/experiments/get", params={"experiment_id": rl_exp}).json()[
                "experiment"]["artifact_location"]
            ml_exp = httpx.post(f"{ml.url}/api/2.0/mlflow/experiments/create", json={"name": "sql-docs"}).json()[
                "experiment_id"]
            t = time.monotonic()
            seed_runledger(rl, rl_exp, rl_art, n_runs, steps)
            ctx.log(f"sql: seeded Runledger with {n_runs:,} runs x {steps} points in {time.monotonic() - t:.0f}s")
            t = time.monotonic()
            seed_mlflow(str(ml.db_path), ml_exp, (ml.dir / "artifacts").as_uri(), n_runs, steps)
            ctx.log(f"sql: seeded MLflow's SQLite in {time.monotonic() - t:.0f}s")
            points = _sql(http, "SELECT count(*) FROM metrics")[1]["rows"][0][0]

            # Runledger, the endpoint
            answers: dict[int, dict] = {}
            for n, (_, q) in qs.items():
                answers[n] = _sql(http, q)[1]   # warm-up
            for _ in range(ctx.reps):
                for n, (_, q) in qs.items():
                    samples[("runledger", n)].extend(_sql(http, q)[0] for _ in range(per_rep))
            # The fixed cost of a request: a trivial query's round trip and the server's own
            # elapsed_ms for it (parse check, cursor, read-only transaction, result).
            for _ in range(20):
                _sql(http, "SELECT 1")
            for _ in range(200):
                dt, body = _sql(http, "SELECT 1")
                samples[("runledger", 0)].append(dt)
                samples[("server", 0)].append(body["elapsed_ms"] / 1000)
            ctx.log("sql: Runledger " + ", ".join(f"Q{n} {lat_summary(samples[('runledger', n)])['p50_ms']:.0f} ms"
                                                 for n in qs))

            # the Parquet export, then DuckDB in-process on it
            folder = ctx.scratch / f"sql-export-{uuid.uuid4().hex[:6]}"
            folder.mkdir()
            for view in VIEWS:
                t = time.perf_counter()
                with http.stream("POST", "/api/runledger/v1/sql",
                                 json={"query": f"SELECT * FROM {view}", "format": "parquet"}) as r:
                    with open(folder / f"{view}.parquet", "wb") as f:
                        for chunk in r.iter_bytes():
                            f.write(chunk)
                export[view] = time.perf_counter() - t
            con = duckdb.connect()
            for view in VIEWS:
                con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet('{folder / (view + '.parquet')}')")
            for n, (_, q) in qs.items():
                con.sql(q).to_arrow_table()
            for _ in range(ctx.reps):
                for n, (_, q) in qs.items():
                    for _ in range(per_rep):
                        t = time.perf_counter()
                        con.sql(q).to_arrow_table()
                        samples[("inprocess", n)].append(time.perf_counter() - t)
            con.close()

            # the MLflow way, once per question (it is slow)
            way = MlflowWay(ml.url, ml_exp)
            for n in qs:
                fn = getattr(way, f"q{n}", None)
                if fn is None:
                    notes[n] = "MLflow has no event log: no MLflow way"
                    continue
                way.extrapolated = ""
                t = time.perf_counter()
                _, unmeasured_s = fn()   # history calls skipped past the budget, at the measured rate
                mlflow_ms[n] = (time.perf_counter() - t + unmeasured_s) * 1000
                if way.extrapolated:
                    notes[n] = "MLflow way " + way.extrapolated
                ctx.log(f"sql: MLflow way Q{n} {mlflow_ms[n]:.0f} ms {notes[n]}")
    finally:
        ctx.stop(ml, "sql")
        ctx.stop(rl, "sql")

    rate = points / export["metrics"]
    ctx.details["sql"] = {"runs": n_runs, "points": points, "export_s": export,
                          "metrics_export_rows_per_s": rate, "mlflow_way_ms": mlflow_ms,
                          "summary": {f"{w}/Q{n}": lat_summary(s) for (w, n), s in samples.items()}}
    size = f"{n_runs:,} runs, {points:,} points; {per_rep} x {ctx.reps} reps"
    rows = []
    for n, (title, _) in qs.items():
        mine, local = lat_summary(samples[("runledger", n)]), lat_summary(samples[("inprocess", n)])
        vs_local = mine["p50_ms"] / local["p50_ms"]
        a = mlflow_ms.get(n)
        met = mine["p50_ms"] <= 300 and vs_local <= 1.5 and (a is None or a / mine["p50_ms"] >= 100)
        note = f"DuckDB in-process on Parquet: p50 {local['p50_ms']:.1f} ms, Runledger {vs_local:.2f}x that"
        if notes.get(n):
            note += "; " + notes[n]
        rows.append(Row("sql", f"Q{n} {title}", size, "ms", a, mine, False,
                        ">=100x MLflow way, <=1.5x in-process, <=300 ms", met, note=note))
    trivial, server = lat_summary(samples[("runledger", 0)]), lat_summary(samples[("server", 0)])
    rows.append(Row("sql", "SELECT 1 round trip (fixed cost of a request)", "200 requests", "ms", None, trivial, False,
                    "server side well under 1 ms", server["p50_ms"] < 1.0,
                    note=f"server-side elapsed_ms p50 {server['p50_ms']:.2f} ms"))
    rows.append(Row("sql", "metrics export as Parquet", f"{points:,} points", "rows/s", None, rate, True,
                    ">= 5M rows/s", rate >= 5e6, note=f"{export['metrics']:.2f} s through the endpoint"))
    return rows
