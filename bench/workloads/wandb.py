"""W&B's public API (`wandb.Api`, unmodified, with its Go helper) against Runledger.

- `api.runs` over 20,000 runs with a filter (`config.optimizer = adam`, 25 %): time to the
  first page (50 runs) of a new `api.runs(...)`; target p50 <= 50 ms.
- `run.history(keys=["loss"], samples=1000)` of a 1,000,000-point key: target <= 100 ms.
- `run.scan_history()` of that run (1,000,000 rows): target >= 500,000 rows/s through the client.
  Measured twice: while the run is RUNNING (the client's Go helper pages `history`, 1,000 steps a
  request) and once it is FINISHED (the helper downloads the run's Parquet export, named by
  `parquetHistory`, and reads it locally; docs/wandb.md). The goal row is the finished run,
  `use_cache=False` (a download every scan; the server's export already made: the first scan
  after the run finished, which makes it, is its own row). Also the client's CPU seconds per 1M
  rows (the Python process plus its wandb-core helper), less sensitive to a loaded machine.

Seeding is not measured: the 20,000 runs are the search workload's (events appended with
Runledger's own producer); the 1M-point run is 100 RunBatchLogged events of 10,000 points.
No MLflow column: MLflow has no W&B API.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

from common import Client, lat_summary
from context import Ctx, Row
from workloads.search import seed_runledger_log, wait_applied

KEY = "bench-" + "b" * 40
START = 1_700_000_000_000


def _seed_long_run(server, exp_id: str, artifact_location: str, points: int) -> str:
    from runledger.ingest.contract.events import metrics_columns
    from runledger.ingest.producer import EventLog
    from runledger.ingest.writer import new_event

    rid = uuid.uuid4().hex
    t0 = START
    events = [new_event("RunCreated", {"run_name": "long", "start_time": t0, "user_id": "", "tags": [["mlflow.runName", "long"]],
                                       "artifact_uri": f"{artifact_location.rstrip('/')}/{rid}/artifacts"},
                        user="", run_id=rid, experiment_id=exp_id, event_id=rid)]
    chunk = 10_000
    for lo in range(0, points, chunk):
        pts = [("loss", 1.0 / (s + 1) + (5.0 if s % 99_991 == 0 else 0.0), t0 + s, s) for s in range(lo, min(points, lo + chunk))]
        events.append(new_event("RunBatchLogged", {"params": [], "tags": [], "metrics": metrics_columns(pts)},
                                user="", run_id=rid, experiment_id=exp_id))

    async def produce() -> None:
        log = EventLog(server.kafka.bootstrap, server.topic)
        await log.start()
        try:
            for j in range(0, len(events), 10):
                await log.append(events[j:j + 10])
        finally:
            await log.stop()

    asyncio.run(produce())
    wait_applied(server.url)
    return rid


def _finish(server, exp_id: str, run_id: str) -> None:
    from runledger.ingest.producer import EventLog
    from runledger.ingest.writer import new_event

    event = new_event("RunUpdated", {"status": "FINISHED", "end_time": START + 2_000_000, "run_name": None},
                      user="", run_id=run_id, experiment_id=exp_id)

    async def produce() -> None:
        log = EventLog(server.kafka.bootstrap, server.topic)
        await log.start()
        try:
            await log.append([event])
        finally:
            await log.stop()

    asyncio.run(produce())
    wait_applied(server.url)


def _helper_cpu() -> float:
    """CPU seconds so far of this process's wandb-core helper(s)."""
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            if "wandb-core" in child.name():
                t = child.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _cpu_of(pid: int) -> float:
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _scan(run, n_points: int, server_pid: int, **kwargs) -> tuple[float, float, float, float]:
    """(rows/s, client Python CPU s, helper CPU s, server CPU s) of one full scan."""
    cpu, helper, server = time.process_time(), _helper_cpu(), _cpu_of(server_pid)
    t = time.perf_counter()
    n = sum(1 for _ in run.scan_history(**kwargs))
    dt = time.perf_counter() - t
    if n != n_points:
        raise RuntimeError(f"scan_history returned {n} rows, expected {n_points}")
    return n / dt, time.process_time() - cpu, _helper_cpu() - helper, _cpu_of(server_pid) - server


def _client_conversion_rate(n: int = 10_000) -> float:
    from wandb.apis.public.history import HistoryScan
    from wandb.proto import wandb_api_pb2 as pb

    rows = []
    for step in range(n):
        row = pb.HistoryRow()
        for key, value in (("_step", str(step)), ("_timestamp", "1700000000.123"), ("_runtime", "12.5"),
                           ("loss", "0.123456789")):
            item = row.history_items.add()
            item.key, item.value_json = key, value
        rows.append(row)
    t = time.perf_counter()
    for row in rows:
        HistoryScan._convert_history_row_to_dict(row)
    return n / (time.perf_counter() - t)


_PAGE = """query HistoryPage($entity: String!, $project: String!, $run: String!, $minStep: Int64!, $maxStep: Int64!,
  $pageSize: Int!) { project(name: $project, entityName: $entity) { run(name: $run) {
  history(minStep: $minStep, maxStep: $maxStep, samples: $pageSize) } } }"""


def _server_pages_rate(url: str, project: str, run_id: str, n_points: int) -> float:
    import base64

    import httpx

    auth = {"Authorization": "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()}
    got = 0
    with httpx.Client(base_url=url, headers=auth, timeout=60) as c:
        t = time.perf_counter()
        for lo in range(0, n_points, 1000):
            r = c.post("/graphql", json={"query": _PAGE, "operationName": "", "variables": {
                "entity": "runledger", "project": project, "run": run_id, "minStep": lo, "maxStep": lo + 1000,
                "pageSize": 1000}})
            got += len(r.json()["data"]["project"]["run"]["history"])
        dt = time.perf_counter() - t
    if got != n_points:
        raise RuntimeError(f"HistoryPage returned {got} rows, expected {n_points}")
    return got / dt


def run(ctx: Ctx) -> list[Row]:
    n_runs = ctx.size(2000, 20000)
    n_points = int(os.environ.get("BENCH_WANDB_POINTS") or ctx.size(100_000, 1_000_000))
    reps = ctx.size(10, 30)
    rl = ctx.runledger()
    rows: list[Row] = []
    saved = {k: os.environ.get(k) for k in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_DIR", "WANDB_SILENT",
                                            "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR")}
    try:
        with Client(rl.url) as c:
            exp = c.create_experiment("wandb-bench")
            exp_name = c.get("/experiments/get", {"experiment_id": exp})["experiment"]["name"]
            art = c.get("/experiments/get", {"experiment_id": exp})["experiment"]["artifact_location"]
        t = time.monotonic()
        seed_runledger_log(rl, exp, art, 0, n_runs)
        long_id = _seed_long_run(rl, exp, art, n_points)
        ctx.log(f"wandb: seeded {n_runs:,} runs and a {n_points:,}-point run in {time.monotonic() - t:.1f}s")
        home = ctx.scratch / f"wandb-{uuid.uuid4().hex[:6]}"
        os.environ.update(WANDB_API_KEY=KEY, WANDB_BASE_URL=rl.url, WANDB_DIR=str(home), WANDB_SILENT="true",
                          WANDB_CONFIG_DIR=str(home / "config"), WANDB_CACHE_DIR=str(home / "cache"))
        import wandb

        api = wandb.Api(timeout=120)
        path = f"runledger/{exp_name}"

        def first_page() -> float:
            api.flush()  # the client keeps listings it already loaded: a new listing each time
            t = time.perf_counter()
            runs = api.runs(path, filters={"config.optimizer": "adam"}, per_page=50)
            next(iter(runs))  # loads the first page
            dt = time.perf_counter() - t
            if len(runs.objects) != 50 or len(runs) != n_runs // 4:
                raise RuntimeError(f"first page: {len(runs.objects)} runs of {len(runs)}, expected 50 of {n_runs // 4}")
            return dt

        first_page()
        lat = [first_page() for _ in range(reps)]
        s = lat_summary(lat)
        rows.append(Row("wandb", "api.runs first page, filter", f"{n_runs:,} runs", "ms", None, s, False,
                        "p50 <= 50 ms", s["p50_ms"] <= 50))

        run = api.run(f"{path}/{long_id}")

        def sampled() -> tuple[float, int]:
            t = time.perf_counter()
            got = run.history(keys=["loss"], samples=1000, pandas=False)
            return time.perf_counter() - t, len(got)

        sampled()
        hist = [sampled() for _ in range(max(reps // 3, 5))]
        s = lat_summary([h[0] for h in hist])
        rows.append(Row("wandb", "run.history(keys, samples=1000)", f"{n_points:,} points", "ms", None, s, False,
                        "<= 100 ms", s["p50_ms"] <= 100, note=f"{hist[0][1]} rows returned"))

        per_m = 1_000_000 / n_points

        def cpu_note(scans: list[tuple[float, float, float, float]]) -> str:
            py, core, srv = (sorted(x[i] for x in scans)[len(scans) // 2] * per_m for i in (1, 2, 3))
            return (f"CPU per 1M rows: client Python {py:.1f} s + wandb-core {core:.1f} s; "
                    f"server {srv:.1f} s")

        paged = [_scan(run, n_points, rl.proc.pid, use_cache=False) for _ in range(ctx.size(1, 1))]
        rate = sorted(p[0] for p in paged)[len(paged) // 2]
        rows.append(Row("wandb", "run.scan_history(), RUNNING run (history pages)", f"{n_points:,} rows", "rows/s",
                        None, round(rate), True, note=cpu_note(paged)))
        _finish(rl, exp, long_id)
        run = api.run(f"{path}/{long_id}")
        cold = _scan(run, n_points, rl.proc.pid, use_cache=False)
        rows.append(Row("wandb", "run.scan_history(), FINISHED run, first scan (server exports)", f"{n_points:,} rows",
                        "rows/s", None, round(cold[0]), True, note=cpu_note([cold])))
        warm = [_scan(run, n_points, rl.proc.pid, use_cache=False) for _ in range(ctx.size(1, 2))]
        rate = sorted(w[0] for w in warm)[len(warm) // 2]
        rows.append(Row("wandb", "run.scan_history(use_cache=False), FINISHED run (Parquet)", f"{n_points:,} rows",
                        "rows/s", None, round(rate), True, ">= 500,000 rows/s", rate >= 500_000, note=cpu_note(warm)))
        cached = _scan(run, n_points, rl.proc.pid)
        rows.append(Row("wandb", "run.scan_history(), FINISHED run, client's file cache", f"{n_points:,} rows",
                        "rows/s", None, round(cached[0]), True, note=cpu_note([cached])))
        rates = [p[0] for p in paged] + [cold[0]] + [w[0] for w in warm] + [cached[0]]
        # Where the scan's time goes: the client's own conversion of the rows it receives (a
        # json.loads per value, in wandb/apis/public/history.py) bounds the scan whatever the
        # server does; and the server alone, the same pages over HTTP without the client.
        ceiling = _client_conversion_rate()
        rows.append(Row("wandb", "scan ceiling: wandb's own row conversion", "10,000 rows", "rows/s", None,
                        round(ceiling), True, note="no server involved: the client's per-row cost"))
        server_rate = _server_pages_rate(rl.url, exp_name, long_id, n_points)
        rows.append(Row("wandb", "HistoryPage over HTTP, no client", f"{n_points:,} rows", "rows/s", None,
                        round(server_rate), True, note="the Go helper's page query, 1,000 steps a page"))
        ctx.details["wandb"] = {"first_page_s": lat, "history_s": [h[0] for h in hist], "scan_rows_per_s": rates}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        ctx.stop(rl, "wandb")
    return rows
