"""Comet's REST v2 reads (docs/comet.md), as comet_ml's APIExperiment calls them:

- get_metrics of one key with 1,000,000 points: GET /api/rest/v2/experiment/metrics/get-metric
  (every point, one response; the answer is parsed and counted);
- get_metrics_summary for each of 2,000 runs of one project: GET .../experiment/metrics/summary,
  one call per run, as a script walking a project does (each run: 3 metrics, 5 params).

MLflow has no Comet API, so there is no MLflow column. The reference is Comet's own published
limit: it keeps 15,000 values per metric before downsampling, so its get_metrics never returns a
million points; Runledger returns them all.

Seeding is not measured: the 1M-point key through REST log-batch (1000 points a request, 8
clients), the 2,000 runs through the events the MLflow create-run and log-batch endpoints append
(the search workload's seeding).
"""

from __future__ import annotations

import time

import orjson

from common import Client, lat_summary
from context import Ctx, Row
from workloads.history import seed_runledger as seed_points
from workloads.search import seed_runledger_log

REST = "/api/rest/v2"
HEADERS = {"Authorization": "bench-key"}   # comet_ml's bare key header (not checked yet)


def _get_metric(c: Client, key: str, metric: str) -> tuple[float, int]:
    t = time.perf_counter()
    r = c.http.get(REST + "/experiment/metrics/get-metric", params={"experimentKey": key, "metricName": metric},
                   headers=HEADERS)
    body = r.content
    n = len(orjson.loads(body)["metrics"]) if r.status_code == 200 else -1
    dt = time.perf_counter() - t
    if r.status_code != 200:
        raise RuntimeError(f"get-metric -> {r.status_code}: {r.text[:300]}")
    return dt, n


def _summary(c: Client, key: str) -> tuple[float, int]:
    t = time.perf_counter()
    r = c.http.get(REST + "/experiment/metrics/summary", params={"experimentKey": key}, headers=HEADERS)
    body = r.content
    dt = time.perf_counter() - t
    if r.status_code != 200:
        raise RuntimeError(f"metrics/summary -> {r.status_code}: {r.text[:300]}")
    return dt, len(orjson.loads(body)["values"])


def run(ctx: Ctx) -> list[Row]:
    points = ctx.size(50_000, 1_000_000)
    runs = ctx.size(200, 2_000)
    rl = ctx.runledger()
    big: list[float] = []
    summaries: list[float] = []
    counts: set[int] = set()
    summary_sizes: set[int] = set()
    try:
        with Client(rl.url) as c:
            exp = c.create_experiment("comet-big")
            run_id = c.create_run(exp, run_name="big")
            t = time.monotonic()
            rate = seed_points(rl.url, run_id, {"loss": points})
            ctx.log(f"comet: seeded {points:,} points in {time.monotonic() - t:.1f}s ({rate:,.0f} points/s)")
            project = c.create_experiment("comet-project")
            art = c.get("/experiments/get", {"experiment_id": project})["experiment"]["artifact_location"]
            t = time.monotonic()
            seed_runledger_log(rl, project, art, 0, runs)
            ctx.log(f"comet: seeded {runs:,} runs in {time.monotonic() - t:.1f}s")
            name = c.get("/experiments/get", {"experiment_id": project})["experiment"]["name"]
            listed = c.http.get(REST + "/experiments", headers=HEADERS,
                                params={"workspaceName": "runledger", "projectName": name, "archived": "False"})
            keys = [e["experimentKey"] for e in listed.json()["experiments"]]
            if len(keys) != runs:
                raise RuntimeError(f"the project lists {len(keys)} experiments, expected {runs}")
            _get_metric(c, run_id, "loss")   # warm-up, not timed
            for rep in range(ctx.reps):
                dt, n = _get_metric(c, run_id, "loss")
                big.append(dt)
                counts.add(n)
                for key in keys:
                    dt, n = _summary(c, key)
                    summaries.append(dt)
                    summary_sizes.add(n)
                ctx.log(f"comet rep {rep + 1}: get-metric {big[-1] * 1000:.0f} ms, "
                        f"summary p50 {lat_summary(summaries)['p50_ms']:.1f} ms")
    finally:
        ctx.stop(rl, "comet")
    ctx.details["comet"] = {"points": points, "runs": runs, "seed_points_per_s": round(rate),
                            "get_metric": lat_summary(big), "summary": lat_summary(summaries),
                            "summary_total_s_per_pass": round(sum(summaries) / ctx.reps, 2),
                            "answer_counts": sorted(counts), "summary_sizes": sorted(summary_sizes)}
    notes = [] if counts == {points} else [f"returned {sorted(counts)} points, expected {points:,}"]
    reference = "MLflow: no Comet API. Comet keeps 15,000 values per metric before downsampling"
    return [
        Row("comet", f"get_metrics, {points:,}-point key, every point", f"{points:,} points, 1 x {ctx.reps} reps",
            "ms", None, lat_summary(big), False, "all points (Comet: <= 15,000)", counts == {points},
            "; ".join([reference, *notes]), "p50 / p95"),
        Row("comet", f"get_metrics_summary, each of {runs:,} runs", f"{runs:,} calls x {ctx.reps} reps "
            f"({sum(summaries) / ctx.reps:.1f} s per pass)", "ms", None, lat_summary(summaries), False, "", None,
            reference if summary_sizes == {3} else f"summaries had {sorted(summary_sizes)} metrics, expected 3",
            "p50 / p95"),
    ]
