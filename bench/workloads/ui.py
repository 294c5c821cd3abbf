"""The web UI (issue 15), in a real headless Chromium (Debian chromium + chromedriver, Selenium):

- table: first load of a 20,000-run experiment's run table (/experiments/<id>): navigation
  start -> the first page of 100 rows drawn (HTML, scripts, the column keys and the sorted page
  read from the server, the table built), from the page's own `performance.mark`; a fresh page
  load each time. Target p50 <= 500 ms.
- run page: a run with 10 keys of 1,000,000 points each (/runs/<id>): navigation start -> all
  10 charts drawn from 1,000-ish bucket summaries. Target <= 1 s (p50).
- bucket API: GET /api/runledger/v1/metrics/history-buckets of one 1M-point key, 1,000
  buckets, from a Python client (no browser). Target p50 <= 50 ms.

Runledger only (MLflow's UI is a different program). Seeding is not measured: the 20,000 runs
are appended as events with Runledger's producer (as the search workload does), the points are
sent through the streaming endpoint (20,000 points a request, all 10 keys interleaved).
Quick sizes: 2,000 runs, 10 keys x 50,000 points.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from common import T0_MS, Client, lat_summary, parallel
from context import Ctx, Row
from workloads.search import seed_runledger_log, wait_applied

NATIVE = "/api/runledger/v1"
KEYS = [f"metric_{k}" for k in range(10)]


def _seed_points(url: str, run_id: str, per_key: int, clients: int = 4) -> None:
    per_request = 2_000   # per key: 20,000 points a request
    chunks = list(range(0, per_key, per_request))

    def work(w: int) -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            for lo in chunks[w::clients]:
                n = min(per_request, per_key - lo)
                steps = list(range(lo, lo + n))
                body = {"run_id": run_id, "keys": [k for k in KEYS for _ in steps],
                        "values": [((s * 7919 + i * 104729) % 1000) / 1000 + (5.0 if s % 99_991 == 0 else 0.0)
                                   for i, _ in enumerate(KEYS) for s in steps],
                        "timestamps": [T0_MS + s for _ in KEYS for s in steps], "steps": steps * len(KEYS)}
                http.post(NATIVE + "/metrics/stream", content=orjson.dumps(body),
                          headers={"content-type": "application/json"}).raise_for_status()
    parallel(clients, work)


def _mark_ms(driver: Any, url: str, mark: str, ready: str, timeout: float = 60) -> float:
    """Load `url` fresh and return the page's own time to `mark` (ms since navigation start)."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")
    driver.get(url)
    WebDriverWait(driver, timeout, poll_frequency=0.02).until(
        lambda d: d.execute_script(f"return performance.getEntriesByName('{mark}').length > 0"))
    value = driver.execute_script(f"return performance.getEntriesByName('{mark}')[0].startTime")
    check = driver.execute_script(ready)
    if not check:
        raise RuntimeError(f"{url}: the page reached {mark} without showing what it should ({ready})")
    return float(value)


def run(ctx: Ctx) -> list[Row]:
    from runledger.ui import browser

    missing = browser.unavailable()
    if missing:
        ctx.log(f"ui: skipped, {missing}")
        return [Row("ui", "all", "-", "ms", None, None, False, note=f"not measured: {missing}")]
    n_runs = ctx.size(2_000, 20_000)
    per_key = ctx.size(50_000, 1_000_000)
    loads = ctx.size(3, 7)
    rl = ctx.runledger()
    try:
        with Client(rl.url) as c:
            exp_id = c.create_experiment("ui-table")
            t = time.monotonic()
            seed_runledger_log(rl, exp_id, "file:///tmp/bench-ui", 0, n_runs)
            ctx.log(f"ui: seeded {n_runs:,} runs in {time.monotonic() - t:.1f}s")
            run_id = c.create_run(c.create_experiment("ui-run"), run_name="ten-keys")
            t = time.monotonic()
            _seed_points(rl.url, run_id, per_key)
            wait_applied(rl.url)
            ctx.log(f"ui: seeded 10 keys x {per_key:,} points in {time.monotonic() - t:.1f}s")

        # The bucket API first (no browser running beside it).
        api: list[float] = []
        with httpx.Client(base_url=rl.url + NATIVE, timeout=60) as http:
            params = {"run_id": run_id, "metric_key": KEYS[3], "buckets": 1000}
            for i in range(3 + 7 * ctx.reps):
                t0 = time.perf_counter()
                r = http.get("/metrics/history-buckets", params=params)
                dt = time.perf_counter() - t0
                body = r.json()
                if r.status_code != 200 or body["points"] != per_key or len(body["buckets"]["last"]) != 1000:
                    raise RuntimeError(f"history-buckets answered {r.status_code}: {r.text[:300]}")
                if max(body["buckets"]["max"]) < 5.0:
                    raise RuntimeError("history-buckets lost the spikes")
                if i >= 3:   # warm-up first
                    api.append(dt)
        ctx.log(f"ui: bucket API p50 {lat_summary(api)['p50_ms']:.1f} ms")

        driver = browser.start_browser()
        try:
            table_url = f"{rl.url}/experiments/{exp_id}"
            rows_ok = ("return document.querySelectorAll('#run-table tbody tr').length === 100 && "
                       f"document.getElementById('run-count').textContent.endsWith('of {n_runs} runs')")
            _mark_ms(driver, table_url, "rl-table-drawn", rows_ok)   # warm-up (server caches, browser)
            table = [_mark_ms(driver, table_url, "rl-table-drawn", rows_ok) / 1000 for _ in range(loads * ctx.reps)]
            ctx.log(f"ui: table first load p50 {lat_summary(table)['p50_ms']:.0f} ms")
            run_url = f"{rl.url}/runs/{run_id}"
            charts_ok = ("const c = document.querySelectorAll('#charts .chart canvas'); return c.length === 10 && "
                         "[...document.querySelectorAll('#charts .chart .meta')].every((m) => m.textContent.includes('buckets'))")
            _mark_ms(driver, run_url, "rl-charts-drawn", charts_ok)
            page = [_mark_ms(driver, run_url, "rl-charts-drawn", charts_ok) / 1000 for _ in range(loads * ctx.reps)]
            ctx.log(f"ui: run page p50 {lat_summary(page)['p50_ms']:.0f} ms")
        finally:
            driver.quit()
    finally:
        ctx.stop(rl, "ui")

    ctx.details["ui"] = {"runs": n_runs, "points_per_key": per_key, "keys": len(KEYS),
                         "table_first_load": lat_summary(table), "run_page": lat_summary(page),
                         "bucket_api": lat_summary(api)}
    rows = []
    for case, size, samples, limit, label in (
            ("run table first load (headless Chromium)", f"{n_runs:,} runs, page of 100", table, 500, "p50 <= 500 ms"),
            ("run page, all charts drawn (headless Chromium)", f"10 keys x {per_key:,} points", page, 1000, "p50 <= 1 s"),
            ("history-buckets, 1,000 buckets", f"one {per_key:,}-point key", api, 50, "p50 <= 50 ms")):
        s = lat_summary(samples)
        met = s["p50_ms"] <= limit if not ctx.quick else None
        rows.append(Row("ui", case, size, "ms", None, s, False, label, met))
    return rows
