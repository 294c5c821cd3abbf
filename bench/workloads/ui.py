"""The web UI (issue 15), in a real headless Chromium (Debian chromium + chromedriver, Selenium):

- table: first load of a 20,000-run experiment's run table (/experiments/<id>): navigation
  start -> the first page of 100 rows drawn (HTML, scripts, the column keys and the sorted page
  read from the server, the table built), from the page's own `performance.mark`; a fresh page
  load each time. Target p50 <= 500 ms.
- run page: a run with 10 keys of 1,000,000 points each (/runs/<id>): navigation start -> all
  10 charts drawn from bucket summaries (one bucket per chart pixel). Target <= 1 s. Shown for
  the first view (nothing known about the series: one sample) and for later views (the server
  keeps each answer until the run's points change).
- bucket API: GET /api/runledger/v1/metrics/history-buckets of a 1M-point key, 1,000 buckets,
  from a Python client: the key alone in its run with no kept answer (target p50 <= 50 ms),
  the same with the kept answer, and the first request of each of the 10 keys logged together
  (each scan then reads the run's 10M points).

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


def _seed_points(url: str, run_id: str, per_key: int, clients: int = 4, keys: list[str] = KEYS) -> None:
    per_request = 20_000 // len(keys)   # per key: 20,000 points a request
    chunks = list(range(0, per_key, per_request))

    def work(w: int) -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            for lo in chunks[w::clients]:
                n = min(per_request, per_key - lo)
                steps = list(range(lo, lo + n))
                body = {"run_id": run_id, "keys": [k for k in keys for _ in steps],
                        "values": [((s * 7919 + i * 104729) % 1000) / 1000 + (5.0 if s % 9_973 == 0 else 0.0)
                                   for i, _ in enumerate(keys) for s in steps],
                        "timestamps": [T0_MS + s for _ in keys for s in steps], "steps": steps * len(keys)}
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


def _bucket_ms(http: httpx.Client, run_id: str, key: str, points: int, buckets: int, x: str = "step") -> float:
    t0 = time.perf_counter()
    r = http.get("/metrics/history-buckets", params={"run_id": run_id, "metric_key": key, "buckets": buckets, "x": x})
    dt = time.perf_counter() - t0
    body = r.json()
    if r.status_code != 200 or body["points"] != points or len(body["buckets"]["last"]) != buckets:
        raise RuntimeError(f"history-buckets answered {r.status_code}: {r.text[:300]}")
    if max(body["buckets"]["max"]) < 5.0:
        raise RuntimeError("history-buckets lost the spikes")
    return dt


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
            run_exp = c.create_experiment("ui-run")
            run_id = c.create_run(run_exp, run_name="ten-keys")
            alone_id = c.create_run(run_exp, run_name="one-key")
            t = time.monotonic()
            _seed_points(rl.url, run_id, per_key)
            _seed_points(rl.url, alone_id, per_key, keys=KEYS[:1])
            wait_applied(rl.url)
            ctx.log(f"ui: seeded 10 keys x {per_key:,} points (and one key alone) in {time.monotonic() - t:.1f}s")

        driver = browser.start_browser()
        try:
            table_url = f"{rl.url}/experiments/{exp_id}"
            rows_ok = ("return document.querySelectorAll('#run-table tbody tr').length === 100 && "
                       f"document.getElementById('run-count').textContent.endsWith('of {n_runs} runs')")
            _mark_ms(driver, table_url, "rl-table-drawn", rows_ok)   # warm-up (server, browser)
            table = [_mark_ms(driver, table_url, "rl-table-drawn", rows_ok) / 1000 for _ in range(loads * ctx.reps)]
            ctx.log(f"ui: table first load p50 {lat_summary(table)['p50_ms']:.0f} ms")
            run_url = f"{rl.url}/runs/{run_id}"
            charts_ok = ("const c = document.querySelectorAll('#charts .chart canvas'); return c.length === 10 && "
                         "[...document.querySelectorAll('#charts .chart .meta')].every((m) => m.textContent.includes('buckets'))")
            # The first view of the run: nothing about its series is known or kept yet.
            page_first = [_mark_ms(driver, run_url, "rl-charts-drawn", charts_ok) / 1000]
            page = [_mark_ms(driver, run_url, "rl-charts-drawn", charts_ok) / 1000 for _ in range(loads * ctx.reps)]
            ctx.log(f"ui: run page first view {page_first[0] * 1000:.0f} ms, again p50 {lat_summary(page)['p50_ms']:.0f} ms")
        finally:
            driver.quit()

        with httpx.Client(base_url=rl.url + NATIVE, timeout=60) as http:
            # One 1M-point key alone in its run. A different bucket count each time, so no kept
            # answer serves it (its bounds are remembered after the first request).
            _bucket_ms(http, alone_id, KEYS[0], per_key, 1000)
            api = [_bucket_ms(http, alone_id, KEYS[0], per_key, 1000 + i) for i in range(1, 1 + 7 * ctx.reps)]
            api_kept = [_bucket_ms(http, alone_id, KEYS[0], per_key, 1000) for _ in range(7 * ctx.reps)]
            # One of 10 keys logged together (10M points in the run): the first request of each
            # key by time (the page asked by step), nothing remembered or kept.
            api_mixed = [_bucket_ms(http, run_id, key, per_key, 1000, x="time") for key in KEYS]
        ctx.log(f"ui: bucket API p50 {lat_summary(api)['p50_ms']:.1f} ms (kept {lat_summary(api_kept)['p50_ms']:.1f}, "
                f"one of 10 keys, first request {lat_summary(api_mixed)['p50_ms']:.1f})")
    finally:
        ctx.stop(rl, "ui")

    ctx.details["ui"] = {"runs": n_runs, "points_per_key": per_key, "keys": len(KEYS),
                         "table_first_load": lat_summary(table), "run_page_first_view": lat_summary(page_first),
                         "run_page_again": lat_summary(page), "bucket_api": lat_summary(api),
                         "bucket_api_kept_answer": lat_summary(api_kept),
                         "bucket_api_one_of_ten_keys_first_request": lat_summary(api_mixed)}
    rows = []
    for case, size, samples, limit, label in (
            ("run table first load (headless Chromium)", f"{n_runs:,} runs, page of 100", table, 500, "p50 <= 500 ms"),
            ("run page, all charts drawn, first view", f"10 keys x {per_key:,} points, 1 sample", page_first, 1000,
             "<= 1 s"),
            ("run page, all charts drawn, viewed again", f"10 keys x {per_key:,} points", page, 1000, "p50 <= 1 s"),
            ("history-buckets, 1,000 buckets, no kept answer", f"one {per_key:,}-point key alone in its run", api, 50,
             "p50 <= 50 ms"),
            ("history-buckets, kept answer", f"one {per_key:,}-point key alone in its run", api_kept, 50, ""),
            ("history-buckets, first request", f"one of 10 keys logged together, {per_key:,} points each",
             api_mixed, 50, "")):
        s = lat_summary(samples)
        met = (s["p50_ms"] <= limit) if label and not ctx.quick else None
        rows.append(Row("ui", case, size, "ms", None, s, False, label, met))
    return rows
