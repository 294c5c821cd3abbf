"""Single-request latency, one client, requests back to back: create-run, log-metric,
log-parameter and get-run. p50/p95 over the samples of all repetitions.

- create-run: a new run in the benchmark's experiment each time;
- log-metric: one point on one run, the step increasing;
- log-parameter: a new key on one run each time (params are write-once);
- get-run: a run holding 20 params, 5 tags and 10 metric keys x 50 steps;
- get-run after a write: the same run read right after a log-metric to it (only the read is
  timed). Runledger answers repeated reads of an unchanged run from its rendered-run cache;
  this case reads a run the previous request changed, which the commit dropped from that
  cache: Runledger renders it from the projector's folded state, whether the write's commit
  is still under way ("memory") or has landed ("folded"); the row's note counts the ways the
  server took (GET /api/runledger/v1/read-paths), "duckdb"/"waited" being the slow ones.
- runs/search after a write: a page of the benchmark's experiment (max_results=100, default
  order) right after a log-metric to one of its runs (only the search is timed). Runledger
  answers without waiting for the commit when the search does not name what the write changed,
  rendering the written run from the projector's folded state.

For Runledger the reads right after a write are also taken apart phase by phase (the bench sends
each an X-Request-Id and matches it with GET /api/runledger/v1/request-timings; client and server
read the same monotonic clock): reaching the server, the ASGI task starting, middleware, routing
to the handler, the handler, the way back, the answer reaching the client; with the server's work
that overlapped the slowest requests (commits, the projector's fold, GC). Printed after the
rows are measured; in the JSON under details.latency.after_write_breakdown.

Issue 22's goals for reads right after a write: get-run <= 2.5 ms p50 and <= 5 ms p99,
runs/search <= 6 ms p50 (the rows print both p50 and p99).
"""

from __future__ import annotations

import time

import orjson

from common import API, T0_MS, Client, lat_summary, now_ms, pct
from context import Ctx, Row

TARGETS = {"create-run": 10.0, "log-metric": 10.0, "log-parameter": None, "get-run": 5.0,
           "get-run after a write": 2.5, "runs/search after a write": 6.0}
# p99 goals, where an issue set one
P99_TARGETS = {"get-run after a write": 5.0}


def _timed(c: Client, method: str, path: str, body: bytes | None = None, params: dict | None = None,
           clock: dict[str, tuple[float, float]] | None = None, rid: str = "") -> float:
    """Seconds the request took; with `clock`, its send and receive times go there under
    `rid`, sent as its X-Request-Id (matched with the server's phases: _breakdown)."""
    headers = {"x-request-id": rid} if clock is not None else {}
    t = time.perf_counter()
    if method == "POST":
        r = c.http.post(API + path, content=body, headers={"content-type": "application/json", **headers})
    else:
        r = c.http.get(API + path, params=params, headers=headers)
    t1 = time.perf_counter()
    dt = t1 - t
    if clock is not None:
        clock[rid] = (t, t1)
    if r.status_code != 200:
        raise RuntimeError(f"{path} -> {r.status_code}: {r.text[:300]}")
    return dt


def _read_paths(c: Client) -> dict[str, dict] | None:
    """Runledger's tally of how get-run reads were answered (GET /api/runledger/v1/read-paths:
    memory, folded, cache, duckdb, waited), None on a server without it (MLflow)."""
    r = c.http.get(c.base + "/api/runledger/v1/read-paths")
    return r.json()["get_run"] if r.status_code == 200 else None


def _path_counts(before: dict[str, dict] | None, after: dict[str, dict] | None, into: dict[str, int]) -> None:
    if before is not None and after is not None:
        for way, d in after.items():
            into[way] = into.get(way, 0) + d["count"] - before.get(way, {}).get("count", 0)


# The server's phases of a request (runledger.request_timing), in the order they happen; "reach"
# (client send -> first byte parsed) and "back" (last byte handed on -> client has the answer)
# come from the bench's own clock, which is the server's (CLOCK_MONOTONIC, same machine).
PHASES = ("reach", "queued", "middleware", "dispatch", "handler", "from_handler", "back")
TIMED_OPS = {"get-run after a write": "/runs/get", "runs/search after a write": "/runs/search"}


def _breakdown(c: Client, clock: dict[str, tuple[float, float]], path: str) -> dict | None:
    """Where the time of the requests in `clock` went: p50/p90/p99/max (ms) per phase, the same
    for the server's part alone ("server": first byte parsed -> last byte handed on), and the
    five slowest requests phase by phase with the server activity overlapping each (commits,
    the projector's fold, GC...). None on a server without GET /api/runledger/v1/request-timings."""
    r = c.http.get(c.base + "/api/runledger/v1/request-timings", params={"path": API + path})
    if r.status_code != 200:
        return None
    body = r.json()
    rows = []
    for q in body["requests"]:
        sent = clock.get(q["request_id"])
        if sent is None:
            continue
        ph = dict(q["phases_ms"])
        ph["reach"] = (q["arrived"] - sent[0]) * 1000
        ph["back"] = (sent[1] - q["done"]) * 1000
        ph["client"] = (sent[1] - sent[0]) * 1000
        ph["server"] = ph["total"]
        rows.append((ph, q["overlap_ms"]))
    if not rows:
        return None
    stats = {}
    for k in ("client", "server", *PHASES):
        v = [ph[k] for ph, _ in rows if k in ph]
        if v:
            stats[k] = {"p50": round(pct(v, 50), 3), "p90": round(pct(v, 90), 3), "p99": round(pct(v, 99), 3),
                        "max": round(max(v), 3)}
    slowest = sorted(rows, key=lambda r: -r[0]["client"])[:5]
    return {"n": len(rows), "phases_ms": stats, "activity": body.get("activity", {}),
            "slowest": [{"phases_ms": {k: round(v, 3) for k, v in ph.items()}, "overlap_ms": ov} for ph, ov in slowest]}


def _measure(url: str, n: int, after_n: int, reps: int, paths: dict[str, int] | None = None,
             breakdown: dict[str, dict] | None = None) -> dict[str, list[float]]:
    """The samples per op; `paths` gets the ways the server answered the get-runs right after a
    write (Runledger only); `breakdown` where the time of the reads right after a write went
    (Runledger only: _breakdown)."""
    samples: dict[str, list[float]] = {k: [] for k in TARGETS}
    paths = {} if paths is None else paths
    # per op timed phase by phase: request id -> (sent, answered), Runledger only
    clocks: dict[str, dict[str, tuple[float, float]] | None] = {
        op: ({} if breakdown is not None else None) for op in TIMED_OPS}
    with Client(url) as c:
        exp_id = c.create_experiment("latency")
        metric_run = c.create_run(exp_id, run_name="metric-target")
        param_run = c.create_run(exp_id, run_name="param-target")
        read_run = c.create_run(exp_id, run_name="read-target", tags=[{"key": f"t{i}", "value": f"v{i}"}
                                                                         for i in range(5)])
        c.post("/runs/log-batch", {"run_id": read_run,
                                   "params": [{"key": f"p{i}", "value": str(i)} for i in range(20)],
                                   "metrics": [{"key": f"m{k}", "value": s * 0.1, "timestamp": T0_MS + s, "step": s}
                                               for k in range(10) for s in range(50)]})
        # warm-up: each path once
        c.create_run(exp_id)
        c.post("/runs/log-metric", {"run_id": metric_run, "key": "warm", "value": 1, "timestamp": now_ms(), "step": 0})
        c.post("/runs/log-parameter", {"run_id": param_run, "key": "warm", "value": "1"})
        c.get("/runs/get", {"run_id": read_run})
        step = 0
        for rep in range(reps):
            for i in range(n):
                samples["create-run"].append(_timed(c, "POST", "/runs/create", orjson.dumps(
                    {"experiment_id": exp_id, "start_time": now_ms(), "run_name": f"r{rep}-{i}"})))
            for i in range(n):
                step += 1
                samples["log-metric"].append(_timed(c, "POST", "/runs/log-metric", orjson.dumps(
                    {"run_id": metric_run, "key": "loss", "value": step * 0.01, "timestamp": now_ms(), "step": step})))
            for i in range(n):
                samples["log-parameter"].append(_timed(c, "POST", "/runs/log-parameter", orjson.dumps(
                    {"run_id": param_run, "key": f"param_{rep}_{i}", "value": str(i)})))
            for i in range(n):
                samples["get-run"].append(_timed(c, "GET", "/runs/get", params={"run_id": read_run}))
            before = _read_paths(c)
            for i in range(after_n):
                c.post("/runs/log-metric", {"run_id": read_run, "key": "live", "value": i, "timestamp": now_ms(),
                                            "step": rep * after_n + i})
                samples["get-run after a write"].append(_timed(c, "GET", "/runs/get", params={"run_id": read_run},
                                                               clock=clocks["get-run after a write"],
                                                               rid=f"latency-get-{rep}-{i}"))
            _path_counts(before, _read_paths(c), paths)
            for i in range(after_n):
                c.post("/runs/log-metric", {"run_id": read_run, "key": "live2", "value": i, "timestamp": now_ms(),
                                            "step": rep * after_n + i})
                samples["runs/search after a write"].append(_timed(c, "POST", "/runs/search", orjson.dumps(
                    {"experiment_ids": [exp_id], "max_results": 100}), clock=clocks["runs/search after a write"],
                    rid=f"latency-search-{rep}-{i}"))
        if breakdown is not None:
            for op, path in TIMED_OPS.items():
                found = _breakdown(c, clocks[op] or {}, path)
                if found is not None:
                    breakdown[op] = found
    return samples


def run(ctx: Ctx) -> list[Row]:
    n = ctx.size(30, 60)
    after_n = ctx.size(100, 500)   # see the module docstring
    result: dict[str, dict[str, list[float]]] = {}
    paths: dict[str, int] = {}   # how Runledger answered the get-runs right after a write
    breakdown: dict[str, dict] = {}   # where the time of Runledger's reads right after a write went
    for name in ("mlflow", "runledger"):
        server = ctx.mlflow() if name == "mlflow" else ctx.runledger()
        try:
            result[name] = _measure(server.url, n, after_n, ctx.reps, paths if name == "runledger" else None,
                                    breakdown if name == "runledger" else None)
        finally:
            ctx.stop(server, "latency")
        for op, s in result[name].items():
            ctx.log(f"latency {name} {op}: {lat_summary(s)}")
    # p99 as well: issue 22 sets a p99 goal for get-run right after a write
    summary = {name: {op: {**lat_summary(s), "p99_ms": round(pct([x * 1000 for x in s], 99), 3)}
                      for op, s in ops.items()} for name, ops in result.items()}
    ctx.details["latency"] = {"requests_per_op_per_rep": n, "reads_after_a_write_per_rep": after_n,
                              "summary": summary, "get_run_after_write_paths": paths,
                              "after_write_breakdown": breakdown}
    ctx.log(f"latency runledger get-run after a write, answered by: {paths}")
    for op, b in breakdown.items():
        _log_breakdown(ctx, op, b)
    # in query.read_paths.PATHS order; memory and folded neither wait for a commit nor read DuckDB
    path_note = ", ".join(f"{way} {count}" for way, count in paths.items() if count)
    rows = []
    for op, target in TARGETS.items():
        server_p99 = breakdown.get(op, {}).get("phases_ms", {}).get("server", {}).get("p99")
        ml, rl = summary["mlflow"][op], summary["runledger"][op]
        p99 = P99_TARGETS.get(op)
        goal = (f"p50 <= {target:g} ms" + (f", p99 <= {p99:g} ms" if p99 else "")) if target else ""
        met = (rl["p50_ms"] <= target and (p99 is None or rl["p99_ms"] <= p99)) if target else None
        note = f"p99: MLflow {ml['p99_ms']:.2f} ms, Runledger {rl['p99_ms']:.2f} ms" if "after a write" in op else ""
        if server_p99 is not None:
            note += f"; Runledger server-side part p99 {server_p99:.2f} ms (request-timings)"
        if op == "get-run after a write" and path_note:
            note += f"; Runledger answered from: {path_note}"
        rows.append(Row("single-request latency", op, f"{n} requests x {ctx.reps} reps, 1 client, sequential", "ms",
                        ml, rl, False, goal, met, note=note))
    return rows


def _log_breakdown(ctx: Ctx, op: str, b: dict) -> None:
    """The phases of Runledger's `op` requests, one line each, then the slowest requests."""
    ctx.log(f"latency runledger {op}: where the time goes ({b['n']} requests, ms; reach/back include the client)")
    ctx.log(f"    {'phase':<13}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}")
    for k, s in b["phases_ms"].items():
        ctx.log(f"    {k:<13}{s['p50']:>8.3f}{s['p90']:>8.3f}{s['p99']:>8.3f}{s['max']:>8.3f}")
    for slow in b["slowest"]:
        ph = " ".join(f"{k}={slow['phases_ms'][k]:.2f}" for k in ("client", *PHASES) if k in slow["phases_ms"])
        ov = " ".join(f"{k}={v:.2f}" for k, v in slow["overlap_ms"].items()) or "-"
        ctx.log(f"    slow: {ph}; overlapped by: {ov}")
    act = ", ".join(f"{k} {a['count']:g}x mean {a['total_ms'] / a['count']:.2f} max {a['max_ms']:.2f}"
                    for k, a in sorted(b["activity"].items()) if a["count"])
    ctx.log(f"    server activity over the measurement (ms): {act}")
