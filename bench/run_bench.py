#!/usr/bin/env python
"""Runledger vs MLflow (SQLite): the same workloads through the same HTTP client.

    python bench/run_bench.py                 # full sizes (~10-15 min on 2 cores)
    python bench/run_bench.py --quick         # small sizes (~2-3 min), for development
    python bench/run_bench.py --only log_batch,latency --reps 5

Prints a table (medians of --reps repetitions; latencies are p50/p95 over the samples of all
repetitions) and writes the raw figures to bench/results/<timestamp>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from context import Ctx, Row  # noqa: E402
from report import sizes_and_notes, table  # noqa: E402
from servers import ensure_mlflow_venv, mlflow_version  # noqa: E402

# Order matters only for run time; each workload starts its own servers.
WORKLOADS = ["log_batch", "latency", "streaming", "search", "history", "replay", "sql", "audit", "auth", "comet",
             "wandb", "artifacts", "ui", "startup"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, a few seconds per workload")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per figure (median reported; default 3)")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(WORKLOADS)}")
    ap.add_argument("--out", default="", help="JSON output (default bench/results/<timestamp>.json)")
    ap.add_argument("--mlflow-workers", type=int, default=int(os.environ.get("BENCH_MLFLOW_WORKERS", "4")),
                    help="mlflow server --workers (default 4, MLflow's own default)")
    ap.add_argument("--search-seed", choices=["log", "rest"], default="log",
                    help="how Runledger's search runs are seeded: its event log (default) or REST")
    ap.add_argument("--scratch", default="", help="scratch folder (default: a new temp folder, removed at the end)")
    args = ap.parse_args(argv)

    selected = [w.strip() for w in args.only.split(",") if w.strip()] or WORKLOADS
    unknown = set(selected) - set(WORKLOADS)
    if unknown:
        ap.error(f"unknown workload(s) {sorted(unknown)}; choose from {WORKLOADS}")
    if args.reps < 1:
        ap.error("--reps must be >= 1")

    ensure_mlflow_venv(log=lambda m: print(m, file=sys.stderr, flush=True))
    scratch = Path(args.scratch) if args.scratch else Path(tempfile.mkdtemp(prefix="runledger-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(scratch, quick=args.quick, reps=args.reps, mlflow_workers=args.mlflow_workers)
    ctx.options["search_seed"] = args.search_seed
    ts = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_path = Path(args.out) if args.out else BENCH_DIR / "results" / f"{ts}.json"
    rows: list[Row] = []
    errors: dict[str, str] = {}
    timings: dict[str, float] = {}
    t_all = time.monotonic()
    load_before = os.getloadavg()
    try:
        for name in WORKLOADS:
            if name not in selected:
                continue
            ctx.log(f"=== {name}")
            t0 = time.monotonic()
            try:
                rows.extend(importlib.import_module(f"workloads.{name}").run(ctx))
            except Exception as e:  # noqa: BLE001 - one broken workload must not hide the others
                errors[name] = "".join(traceback.format_exception(e))[-3000:]
                ctx.log(f"{name} FAILED: {e!r}")
                rows.append(Row(name, "FAILED", "", "", None, None, True, note=f"failed: {e!r}"[:300]))
            timings[name] = round(time.monotonic() - t0, 1)
            ctx.log(f"{name} took {timings[name]:.0f}s")
        from workloads import footprint
        rows.extend(footprint.rows(ctx))
    finally:
        ctx.close()
    total = time.monotonic() - t_all

    header = (f"Runledger vs MLflow {mlflow_version()} (SQLite, {args.mlflow_workers} worker(s)), "
              f"{'QUICK' if args.quick else 'full'} sizes, median of {args.reps} reps "
              f"(latencies: p50 / p95 over all samples of all reps), {os.cpu_count()} CPUs, "
              f"run time {total / 60:.1f} min; load average (1 min) {load_before[0]:.1f} at start, "
              f"{os.getloadavg()[0]:.1f} at end")
    print(header)
    print()
    print(table(rows))
    print()
    print(sizes_and_notes(rows))
    if errors:
        print("\nFailed workloads (tracebacks in the JSON):", ", ".join(errors))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({
        "header": header, "quick": args.quick, "reps": args.reps, "mlflow_workers": args.mlflow_workers,
        "mlflow_version": mlflow_version(), "python": sys.version, "platform": platform.platform(),
        "cpus": os.cpu_count(), "run_time_s": round(total, 1), "workload_time_s": timings,
        "rows": [{**r.__dict__, "ratio": r.ratio} for r in rows],
        "servers": ctx.server_stats, "details": ctx.details, "errors": errors,
    }, indent=2, default=str))
    print(f"\nraw figures: {out_path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
