"""Peak RSS of each server and bytes on disk per metric point, from what the workloads recorded.

- Peak RSS: the highest VmHWM of any server start of the run (MLflow: the sum over its process
  tree, i.e. `mlflow server`, uvicorn and its workers; Runledger: its one process). Summing
  VmHWM double-counts shared pages, so the peak of the summed PSS (sampled every 0.5 s) and
  MLflow's largest single process are shown too. Kafka's JVM is shown on its own row; it
  served every Runledger of the run.
- Idle after the workload: each Runledger start's RSS right after start-up against its RSS
  idling after its workload (the lowest over a few seconds before the stop); the worst start
  is shown (issue 22: within 20%).
- Disk: the history workload's data (one run, 1,050,000 points at full size), files measured
  after a clean stop: MLflow's SQLite file; Runledger's Kafka topic (all partitions) and its
  DuckDB file, apart. The streaming workload's data, when it ran, is reported too.
"""

from __future__ import annotations

from context import Ctx, Row
from servers import IDLE_WAIT_S


def rows(ctx: Ctx) -> list[Row]:
    out: list[Row] = []

    def peak(server: str, field: str) -> tuple[float, str] | None:
        best = None
        for s in ctx.server_stats:
            v = s.get(field)
            if s["server"] == server and v is not None and (best is None or v > best[0]):
                best = (v, s["workload"])
        return best

    ml, rl = peak("mlflow", "peak_rss_mb"), peak("runledger", "peak_rss_mb")
    if ml or rl:
        out.append(Row("peak memory", "peak RSS (VmHWM; MLflow: summed over its processes)",
                       "max over all workloads", "MB", ml and ml[0], rl and rl[0], False,
                       target="<= 600" if rl else "", met=(rl[0] <= 600) if rl else None,   # issue 22
                       note=(f"MLflow ({ctx.mlflow_workers} uvicorn worker(s)) peak in '{ml[1]}'; " if ml else "")
                       + (f"Runledger peak in '{rl[1]}'" if rl else "")
                       + "; summed VmHWM double-counts pages MLflow's processes share, see the PSS row"))
        mp, rp = peak("mlflow", "peak_pss_mb"), peak("runledger", "peak_pss_mb")
        out.append(Row("peak memory", "peak PSS (summed over process tree, sampled every 0.5 s)",
                       "max over all workloads", "MB", mp and mp[0], rp and rp[0], False))
        one = peak("mlflow", "largest_process_rss_mb")
        if one:
            out.append(Row("peak memory", "MLflow's largest single process (VmHWM) vs Runledger",
                           "max over all workloads", "MB", one[0], rl and rl[0], False))
    idle = [(s["idle_end_rss_mb"] / s["start_rss_mb"] - 1, s) for s in ctx.server_stats
            if s["server"] == "runledger" and s.get("idle_end_rss_mb") and s.get("start_rss_mb")]
    if idle:
        worst, w = max(idle, key=lambda x: x[0])
        out.append(Row("peak memory", "Runledger idle RSS after the workload vs after start-up (worst start)",
                       "every server start", "%", None, round(worst * 100, 1), False, target="<= 20",
                       met=worst <= 0.20,
                       note=f"'{w['workload']}': {w['start_rss_mb']:.0f} MB after start-up, "
                            f"{w['idle_end_rss_mb']:.0f} MB idle after it (lowest over "
                            f"{IDLE_WAIT_S:.0f} s); median over {len(idle)} starts "
                            f"{sorted(x for x, _ in idle)[len(idle) // 2] * 100:.1f}%"))
    out += per_workload_rows(ctx)
    if ctx.kafka is not None and ctx.kafka.rss is not None:
        ctx.kafka.rss.sample()
        out.append(Row("peak memory", "Kafka broker JVM RSS (Runledger only)", "shared by all Runledger servers",
                       "MB", None, round(ctx.kafka.rss.peak_mb, 1), False, target="<= 300",
                       met=ctx.kafka.rss.peak_mb <= 300, note=f"JVM heap {ctx.kafka.broker.heap}, serial GC"))
    disk = ctx.details.get("disk")
    if disk and disk["points"]:
        n = disk["points"]
        size = disk["what"]
        ml_b = disk["mlflow_sqlite_bytes"] / n
        kafka_b = disk["runledger_kafka_topic_bytes"] / n
        duck_b = disk["runledger_duckdb_bytes"] / n
        out.append(Row("disk per metric point", "MLflow SQLite vs Runledger DuckDB", size, "bytes/point", ml_b, duck_b,
                       False))
        out.append(Row("disk per metric point", "Runledger Kafka log", size, "bytes/point", None, kafka_b, False))
        out.append(Row("disk per metric point", "MLflow SQLite vs Runledger DuckDB + Kafka", size, "bytes/point",
                       ml_b, duck_b + kafka_b, False))
    stream = ctx.details.get("streaming", {}).get("reps", [])
    stream_disk = ctx.details.get("streaming_disk", [])
    pairs = [(r, d) for r, d in zip(stream, stream_disk) if r.get("points")]
    if pairs:
        r, d = pairs[0]
        size = f"streaming workload rep 1: {r['points']:,} points, files after a clean stop"
        out.append(Row("disk per metric point", "Runledger DuckDB (streamed data)", size, "bytes/point", None,
                       d["duckdb_bytes"] / r["points"], False))
        out.append(Row("disk per metric point", "Runledger Kafka log (streamed data)", size, "bytes/point", None,
                       d["kafka_topic_bytes"] / r["points"], False))
    return out


def per_workload_rows(ctx: Ctx) -> list[Row]:
    """Issue 22, per workload: the Runledger servers' highest peak RSS, their RSS after start-up
    and idling after the workload (worst start), so the quiet run shows where the peak and the
    idle excess come from. Replay servers are spawned, not started, so they have no start-up
    figure: their idle RSS is compared with the median start-up RSS of the other servers."""
    stats = [s for s in ctx.server_stats if s["server"] == "runledger"]
    starts = sorted(s["start_rss_mb"] for s in stats if s.get("start_rss_mb"))
    typical_start = starts[len(starts) // 2] if starts else None
    out: list[Row] = []
    for workload in dict.fromkeys(s["workload"] for s in stats):
        mine = [s for s in stats if s["workload"] == workload]
        peak = max((s["peak_rss_mb"] for s in mine if s.get("peak_rss_mb") is not None), default=None)
        pairs = [(s["idle_end_rss_mb"], s.get("start_rss_mb") or typical_start, bool(s.get("start_rss_mb")))
                 for s in mine if s.get("idle_end_rss_mb")]
        idle = max(pairs, key=lambda p: p[0] / p[1] if p[1] else 0, default=None)
        note = f"{len(mine)} server start(s)"
        if idle is not None and idle[1]:
            note += (f"; idle after the workload {idle[0]:.0f} MB vs {idle[1]:.0f} MB after start-up "
                     f"({(idle[0] / idle[1] - 1) * 100:+.1f}%"
                     + ("" if idle[2] else ", the median start-up of the other servers: this one was spawned")
                     + ", worst start)")
        out.append(Row("peak memory", f"Runledger peak RSS in '{workload}'", "per workload", "MB", None, peak, False,
                       target="<= 600", met=None if peak is None else peak <= 600, note=note))
    return out
