"""Replay: rebuild Runledger's read model from offset 0. Runledger only (MLflow has no log).

The data set is the history workload's topic (one run, a 50k-point and a 1M-point key, then a
sentinel tag written last in that run's partition); with --only replay it is seeded here the
same way. Each repetition: stop the server, delete its DuckDB file, spawn `runledger serve`
again on the same topic and time until the sentinel tag is visible through runs/get; then check
(untimed) that get-history returns every point of both keys.

Two figures: points / (spawn -> sentinel visible), which includes starting the process, and
the same net of the fixed start-up cost, measured each repetition by the same restart with the
DuckDB file kept (nothing to replay: spawn -> sentinel visible).

A third, at scale: the log of the streaming workload's last repetition (tens of millions of
points in 20,000-point events, four runs) replayed into a new data folder, spawn -> lag 0 and
every run's last point visible. Start-up is a small part of it, so no net figure is needed. It
needs the streaming workload in the same invocation.
"""

from __future__ import annotations

import time
from typing import Callable

import httpx

from common import API, Client, median
from context import Ctx, Row
from servers import RunledgerServer
from workloads.history import SENTINEL_TAG, _full, seed_runledger
from workloads.streaming import KEYS_PER_RUN, LAG


def _ensure_source(ctx: Ctx) -> dict:
    src = getattr(ctx, "replay_source", None)
    if src is not None:
        return src
    keys = {"hist_50k": ctx.size(5_000, 50_000), "hist_1m": ctx.size(50_000, 1_000_000)}
    rl = ctx.runledger()
    with Client(rl.url) as c:
        run_id = c.create_run(c.create_experiment("replay"), run_name="replay")
        seed_runledger(rl.url, run_id, keys)
        c.post("/runs/set-tag", {"run_id": run_id, "key": SENTINEL_TAG, "value": "done"})
    ctx.stop(rl, "replay-seed", cleanup=False)
    return {"server": rl, "run_id": run_id, "keys": keys, "points": sum(keys.values())}


def _seconds_until(s: RunledgerServer, t0: float, done: Callable[[httpx.Client], bool], timeout: float,
                   what: str, pause: float) -> float:
    """Seconds from `t0` (the spawn) until `done` holds; raises if the server exits or `timeout` passes."""
    with httpx.Client(base_url=s.url) as http:
        while not done(http):
            if s.proc.poll() is not None:
                raise RuntimeError(f"runledger exited during {what}:\n{s.log_path.read_text()[-3000:]}")
            if time.monotonic() > t0 + timeout:
                raise RuntimeError(f"{what} did not finish within {timeout:.0f} s")
            time.sleep(pause)
        return time.monotonic() - t0


def _sentinel_visible(http: httpx.Client, run_id: str) -> bool:
    try:
        r = http.get(API + "/runs/get", params={"run_id": run_id}, timeout=2)
    except httpx.HTTPError:
        return False
    if r.status_code != 200:
        return False
    tags = r.json()["run"]["data"].get("tags", [])
    return any(t["key"] == SENTINEL_TAG for t in tags)


def _time_until_visible(ctx: Ctx, old: RunledgerServer, src: dict, rebuild: bool) -> tuple[float, dict]:
    """Spawn a server on the old topic and data folder (DuckDB deleted first when `rebuild`);
    seconds from spawn until the sentinel is visible, and the server's stats."""
    if rebuild:
        for f in (old.duckdb_path, old.duckdb_path.with_name(old.duckdb_path.name + ".wal")):
            f.unlink(missing_ok=True)
    s = RunledgerServer(ctx.ensure_kafka(), ctx.scratch, topic=old.topic, data_dir=old.data_dir)
    t0 = s.spawn()
    try:
        elapsed = _seconds_until(s, t0, lambda http: _sentinel_visible(http, src["run_id"]), 600, "replay", 0.02)
        if rebuild:
            with Client(s.url) as c:
                got = {k: _full(c, src["run_id"], k)[1] for k in src["keys"]}
            if got != src["keys"]:
                raise RuntimeError(f"after replay get-history returned {got}, expected {src['keys']}")
    finally:
        stats = ctx.stop(s, "replay", cleanup=False)
    return elapsed, stats


def _caught_up(http: httpx.Client, src: dict) -> bool:
    """Lag 0 and every streamed run's last point visible (as the streaming workload checks)."""
    try:
        lag = http.get(LAG, timeout=2)
        if lag.status_code != 200 or int(lag.json().get("total_lag", 1)) != 0:
            return False
        for run_id, last in zip(src["runs"], src["last_steps"]):
            r = http.get(API + "/runs/get", params={"run_id": run_id}, timeout=5)
            if r.status_code != 200:
                return False
            latest = r.json()["run"]["data"].get("metrics", [])
            if len(latest) != KEYS_PER_RUN or {m["step"] for m in latest} != {last}:
                return False
    except httpx.HTTPError:
        return False
    return True


def _streamed_replay(ctx: Ctx, src: dict) -> tuple[float, dict]:
    """Seconds from spawning a server with an empty data folder on the streamed topic until it
    has applied all of it."""
    s = RunledgerServer(ctx.ensure_kafka(), ctx.scratch, topic=src["topic"])
    t0 = s.spawn()
    try:
        elapsed = _seconds_until(s, t0, lambda http: _caught_up(http, src), 900, "replay of the streamed log",
                                 0.1)
    finally:
        stats = ctx.stop(s, "replay")
    return elapsed, stats


def _streamed_rows(ctx: Ctx) -> list[Row]:
    src = getattr(ctx, "streamed_log", None)
    case = "streamed log (20,000-point events), spawn -> all applied"
    target = ">= 1,000,000 points/s"
    if src is None:
        return [Row("replay from offset 0", case, "-", "points/s", None, None, True, target, None,
                    "n/a: needs the streaming workload in the same invocation")]
    rates = []
    for rep in range(ctx.reps):
        elapsed, stats = _streamed_replay(ctx, src)
        rates.append(src["points"] / elapsed)
        ctx.log(f"replay of the streamed log rep {rep + 1}: {src['points']:,} points in {elapsed:.1f}s "
                f"({rates[-1]:,.0f} points/s); peak RSS {stats['peak_rss_mb']} MB")
    ctx.details["replay_streamed"] = {"points": src["points"], "points_per_s": rates}
    size = f"{src['points']:,} points (streaming workload's last rep: 4 runs x {KEYS_PER_RUN} keys), {ctx.reps} reps"
    return [Row("replay from offset 0", case, size, "points/s", None, median(rates), True, target,
                median(rates) >= 1e6, "MLflow has no event log to replay")]


def run(ctx: Ctx) -> list[Row]:
    rows = _history_rows(ctx)
    return rows + _streamed_rows(ctx)


def _history_rows(ctx: Ctx) -> list[Row]:
    src = _ensure_source(ctx)
    old: RunledgerServer = src["server"]
    gross, net, base, rebuild = [], [], [], []
    for rep in range(ctx.reps):
        # Same restart with the read model intact: nothing to replay, so this is the fixed cost
        # (imports, Kafka connection, seeking), subtracted for the "net" figure.
        b, _ = _time_until_visible(ctx, old, src, rebuild=False)
        r, stats = _time_until_visible(ctx, old, src, rebuild=True)
        base.append(b)
        rebuild.append(r)
        gross.append(src["points"] / r)
        # Below ~0.2 s of difference the net figure is start-up noise, not replay speed.
        net.append(src["points"] / (r - b) if r - b > 0.2 else None)
        ctx.log(f"replay rep {rep + 1}: rebuild {r:.2f}s for {src['points']:,} points ({gross[-1]:,.0f} points/s); "
                f"restart without rebuild {b:.2f}s; net {net[-1] or 0:,.0f} points/s; peak RSS {stats['peak_rss_mb']} MB")
    ctx.details["replay"] = {"points": src["points"], "gross_points_per_s": gross, "net_points_per_s": net,
                             "rebuild_s": rebuild, "restart_without_rebuild_s": base}
    size = (f"{src['points']:,} points (history workload's data: one run, 1,000-point log-batch events), "
            f"{ctx.reps} reps")
    nets = [x for x in net if x is not None]
    net_value = median(nets) if len(nets) * 2 > len(net) else None
    return [
        Row("replay from offset 0", "spawn -> all visible", size, "points/s", None, median(gross), True,
            ">= 1,000,000 points/s", median(gross) >= 1e6, "MLflow has no event log to replay"),
        Row("replay from offset 0", f"net of restart w/o rebuild ({median(base):.1f}s)", size, "points/s", None,
            net_value, True, ">= 1,000,000 points/s", None if net_value is None else net_value >= 1e6,
            "" if net_value is not None else
            f"n/a: rebuild ({median(rebuild):.2f}s) within 0.2 s of a plain restart ({median(base):.2f}s); "
            "the data set is too small to separate replay from start-up"),
    ]
