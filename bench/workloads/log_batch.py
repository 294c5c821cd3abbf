"""log-batch ingest: points/s with 1 client and with 8 concurrent clients, 1000 points a request.

Each client has its own run and its own HTTP connection and sends log-batch requests back to
back for a fixed window; every request carries 1000 new points (10 keys x 100 steps). Points/s
is the points of all completed requests over the time from the first send to the last answer.
Both servers answer a log-batch only once it is durable and readable (Runledger: applied by the
projector), so the figure is "accepted and queryable" throughput for both.
"""

from __future__ import annotations

import time

from common import Client, batch_body, median, parallel
from context import Ctx, Row

POINTS_PER_REQUEST = 1000


def one_rep(url: str, exp_id: str, clients: int, window: float, tag: str | None = None) -> tuple[float, int]:
    """`clients` writers each log-batching 1,000 points per request into its own new run for
    `window` seconds; (points/s, points)."""
    tag = tag or f"lb-{clients}"
    with Client(url) as c:
        run_ids = [c.create_run(exp_id, run_name=f"{tag}-{i}") for i in range(clients)]
    start = time.monotonic()
    deadline = start + window

    def client(i: int) -> tuple[int, float]:
        sent, step = 0, 0
        with Client(url) as c:
            while time.monotonic() < deadline:
                c.post_raw("/api/2.0/mlflow/runs/log-batch", batch_body(run_ids[i], step, POINTS_PER_REQUEST)) \
                    .raise_for_status()
                step += POINTS_PER_REQUEST // 10
                sent += POINTS_PER_REQUEST
        return sent, time.monotonic()

    results = parallel(clients, client)
    points = sum(r[0] for r in results)
    elapsed = max(r[1] for r in results) - start
    return points / elapsed, points


def run(ctx: Ctx) -> list[Row]:
    window = ctx.size(2.0, 6.0)
    figures: dict[str, dict[int, list[float]]] = {}
    totals: dict[str, dict[int, list[int]]] = {}
    for name in ("mlflow", "runledger"):
        server = ctx.mlflow() if name == "mlflow" else ctx.runledger()
        try:
            with Client(server.url) as c:
                exp_id = c.create_experiment("logbatch")
            # Warm-up, not recorded: 8 clients for a short window, then 1.
            one_rep(server.url, exp_id, 8, min(window, 3.0))
            one_rep(server.url, exp_id, 1, 1.0)
            figures[name], totals[name] = {}, {}
            for clients in (1, 8):
                for rep in range(ctx.reps):
                    pps, pts = one_rep(server.url, exp_id, clients, window)
                    figures[name].setdefault(clients, []).append(pps)
                    totals[name].setdefault(clients, []).append(pts)
                    ctx.log(f"log-batch {name} {clients} client(s) rep {rep + 1}: {pps:,.0f} points/s ({pts:,} points)")
        finally:
            ctx.stop(server, "log_batch")
    ctx.details["log_batch"] = {"window_s": window, "points_per_s": figures, "points_sent": totals}
    rows = []
    for clients, want in ((1, 5), (8, 20)):
        ml, rl = median(figures["mlflow"][clients]), median(figures["runledger"][clients])
        size = (f"{POINTS_PER_REQUEST} pts/req, {window:.0f}s window/rep, "
                f"~{median(totals['runledger'][clients]):,.0f} RL / ~{median(totals['mlflow'][clients]):,.0f} MLflow pts")
        rows.append(Row("log-batch ingest", f"{clients} client{'s' if clients > 1 else ''}", size, "points/s",
                        ml, rl, True, f">= {want}x MLflow", rl >= want * ml))
    return rows
