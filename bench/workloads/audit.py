"""Audit and time travel (issue 14). Runledger only: MLflow keeps no history of a run.

Data: one run with 1,000,000 metric points (20,000-point columnar stream requests) and 10,000
other events of its own (tags, 8 writers), plus a sentinel tag written last.

- as-of read at "now": `GET /api/runledger/v1/runs/{id}?as_of=<now>` of that run; nothing of it was
  applied since, so the live read model answers (X-Runledger-As-Of-Basis: live).
- as-of read in the past: `?as_of_position=` at positions spread over the run's trail (a fixed
  random sample): folded from the nearest checkpoint of the run's state before each (query/checkpoints.py),
  or from the run's creation before the first one. The basis of each answer is printed.
- trail page: `GET /runs/{id}/events?max_results=100`, first pages and a page deep in the trail.
- tail latency: 50 SSE clients on one run while a writer logs one point per synchronous
  log-metric (~20/s); latency = message received - write request sent, over all clients.
- ingest with 50 tails: 1-client log-batch (1,000 points a request) points/s with the 50 tails
  open on the runs being written, vs the same window with none; windows alternate (without, with)
  and the ratio is the median of the pairs' ratios, so a slow spell or the data's growth falls on
  both sides. The 50 tails read in a process of
  their own (asyncio, one connection each), as tailing users would on their own machines: threads in
  the writer's process would make the writer wait for the GIL, which measured the bench, not the server.
- verify: `runledger verify` while the server runs (replay of the whole topic into a temporary
  folder + checksums of both); points of the topic / wall time (median of --reps runs), with the
  CLI's CPU seconds and its own split of the wall time by phase in the note.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import orjson

from common import API, Client, T0_MS, batch_body, lat_summary, median, now_ms, parallel, pct
from context import Ctx, Row
from servers import ROOT, cpu_seconds

NATIVE = "/api/runledger/v1"


def seed_points_and_tags(url: str, run_id: str, points: int, events: int) -> None:
    """The audit data: `points` streamed points of one key, then `events` tag changes from 8
    writers, then a sentinel tag (its presence means everything before it is applied)."""
    per = 20_000
    with httpx.Client(base_url=url, timeout=300) as http:
        for lo in range(0, points, per):
            n = min(per, points - lo)
            body = {"run_id": run_id, "keys": ["loss"] * n, "values": [s * 0.5 for s in range(lo, lo + n)],
                    "timestamps": [T0_MS + s for s in range(lo, lo + n)], "steps": list(range(lo, lo + n))}
            http.post(NATIVE + "/metrics/stream", content=orjson.dumps(body),
                      headers={"content-type": "application/json"}).raise_for_status()

    def tags(w: int) -> None:
        with Client(url) as c:
            for i in range(w, events, 8):
                c.post("/runs/set-tag", {"run_id": run_id, "key": f"t{i % 500}", "value": str(i)})
    parallel(8, tags)
    with Client(url) as c:
        c.post("/runs/set-tag", {"run_id": run_id, "key": "sentinel", "value": "done"})


def _seed(ctx: Ctx, url: str, run_id: str, points: int, events: int) -> None:
    t = time.monotonic()
    seed_points_and_tags(url, run_id, points, events)
    ctx.log(f"audit seed: {points:,} points + {events:,} events in {time.monotonic() - t:.1f}s")


def _timed(fn: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _as_of_and_trail(ctx: Ctx, url: str, run_id: str, points: int) -> list[Row]:
    with httpx.Client(base_url=url + NATIVE, timeout=300) as http:
        moment = now_ms()

        def as_of() -> None:
            r = http.get(f"/runs/{run_id}", params={"as_of": moment})
            r.raise_for_status()
            assert any(t["key"] == "sentinel" for t in r.json()["run"]["data"]["tags"])
        as_of()
        as_of_s = _timed(as_of, ctx.size(3, 7))
        # Past moments: positions from the run's trail (all its events), a fixed sample.
        positions, token = [], None
        while True:
            page = http.get(f"/runs/{run_id}/events", params={"max_results": 1000, **({"page_token": token} if token else {})}).json()
            positions += [e["position"] for e in page["events"]]
            token = page.get("next_page_token")
            if not token:
                break
        picks = random.Random(14).sample(positions, min(len(positions), ctx.size(5, 15)))
        http.get(f"/runs/{run_id}", params={"as_of_position": picks[0]}).raise_for_status()  # starts the log reader
        past_s, bases = [], []
        for position in picks:
            t = time.perf_counter()
            r = http.get(f"/runs/{run_id}", params={"as_of_position": position})
            r.raise_for_status()
            past_s.append(time.perf_counter() - t)
            bases.append(r.headers.get("x-runledger-as-of-basis", "?"))
        ctx.log("as-of past: " + "; ".join(f"{p} {1000 * s:.0f} ms from {b}" for p, s, b in zip(picks, past_s, bases)))
        first = _timed(lambda: http.get(f"/runs/{run_id}/events", params={"max_results": 100}).raise_for_status(),
                       ctx.size(20, 50))
        token = None
        for _ in range(20):
            page = http.get(f"/runs/{run_id}/events", params={"max_results": 100, **({"page_token": token} if token else {})}).json()
            token = page.get("next_page_token")
        deep = _timed(lambda: http.get(f"/runs/{run_id}/events", params={"max_results": 100, "page_token": token})
                      .raise_for_status(), ctx.size(20, 50))
    size = f"{points:,} pts + {ctx.size(1_000, 10_000):,} events"
    a, f, d = lat_summary(as_of_s), lat_summary(first), lat_summary(deep)
    past = lat_summary(past_s)
    return [
        Row("audit", "as-of read at now (live model)", size, "ms", None, a, False, "p50 <= 100 ms", a["p50_ms"] <= 100),
        Row("audit", "as-of read in the past (checkpoints)", f"{len(picks)} positions", "ms", None, past, False,
            "p50 <= 100 ms", past["p50_ms"] <= 100, "fold from the nearest checkpoint; bases in the log"),
        Row("audit", "trail page of 100 (first)", size, "ms", None, f, False, "<= 10 ms", f["p50_ms"] <= 10),
        Row("audit", "trail page of 100 (page 21)", size, "ms", None, d, False, "<= 10 ms", d["p50_ms"] <= 10),
    ]


class _Tail(threading.Thread):
    def __init__(self, url: str, sent: dict[int, float], latencies: list[float], lock: threading.Lock) -> None:
        super().__init__(daemon=True)
        self.url, self.sent, self.latencies, self.lock = url, sent, latencies, lock
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=httpx.Timeout(60, read=None)) as response:
                for line in response.iter_lines():
                    if line.startswith("retry:"):
                        self.ready.set()
                    elif line.startswith("data: "):
                        received = time.perf_counter()
                        entry = json.loads(line[6:])
                        step = (entry.get("summary") or {}).get("step_min")
                        if entry["type"] == "MetricsLogged" and step in self.sent:
                            with self.lock:
                                self.latencies.append(received - self.sent[step])
                    if self.stop.is_set():
                        return
        except httpx.HTTPError:
            pass


def _tails(url: str, n: int, sent: dict[int, float], latencies: list[float]) -> list[_Tail]:
    lock = threading.Lock()
    tails = [_Tail(url, sent, latencies, lock) for _ in range(n)]
    for t in tails:
        t.start()
    for t in tails:
        t.ready.wait(30)
    return tails


def _close(tails: list[_Tail]) -> None:
    for t in tails:
        t.stop.set()


_TAIL_READERS = r"""
import asyncio, sys
import aiohttp, orjson

# An SSE client as a user would write one for this stream: aiohttp, and the event-stream format
# parsed by hand (fields up to a blank line; `:` lines are comments, such as pings). Each message's
# JSON is parsed and its position checked: per partition, offsets only grow, and the event id
# (the stream's cursor) carries the entry's own position.

async def main(url: str, n: int) -> None:
    ready = received = disordered = 0

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal ready, received, disordered
        last: dict[int, int] = {}
        rest = b""
        async with session.get(url) as response:
            response.raise_for_status()
            async for chunk in response.content.iter_any():
                *events, rest = (rest + chunk).split(b"\n\n")
                for event in events:
                    event_id = data = None
                    for line in event.split(b"\n"):
                        field, _, value = line.partition(b":")
                        value = value[1:] if value[:1] == b" " else value
                        if field == b"data":
                            data = value if data is None else data + b"\n" + value
                        elif field == b"id":
                            event_id = value
                        elif field == b"retry":
                            ready += 1
                            if ready == n:
                                print("ready", flush=True)
                    if data is None:
                        continue
                    entry = orjson.loads(data)
                    p, o = entry["partition"], entry["offset"]
                    if o <= last.get(p, -1) or event_id is None or f"{p}:{o}".encode() not in event_id.split(b","):
                        disordered += 1
                    last[p] = o
                    received += 1

    connector = aiohttp.TCPConnector(limit=n + 1)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(n)]
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        print(f"received {received} disordered {disordered}", flush=True)
        for t in tasks:
            t.cancel()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


class _TailReaders:
    """`n` SSE tails of `url` in a process of their own; `close()` returns the messages they got
    and how many came out of order (or with an event id that does not carry their position)."""

    def __init__(self, url: str, n: int) -> None:
        self._proc = subprocess.Popen([sys.executable, "-c", _TAIL_READERS, url, str(n)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if line.strip() != "ready":
            self._proc.kill()
            raise RuntimeError(f"tail readers did not start: {line!r}")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def close(self) -> tuple[int, int]:
        out, _ = self._proc.communicate("", timeout=30)
        words = out.split()
        if len(words) < 4:
            raise RuntimeError(f"tail readers ended without a count: {out!r}")
        return int(words[-3]), int(words[-1])


def _tail_rows(ctx: Ctx, url: str, server_pid: int) -> list[Row]:
    clients = 50
    with Client(url) as c:
        exp = c.create_experiment("tail")
        run_id = c.create_run(exp)
        sent: dict[int, float] = {}
        latencies: list[float] = []
        tails = _tails(f"{url}{NATIVE}/runs/{run_id}/tail", clients, sent, latencies)
        for step in range(ctx.size(50, 200)):
            sent[step] = time.perf_counter()
            c.post("/runs/log-metric", {"run_id": run_id, "key": "m", "value": 1.0, "timestamp": T0_MS + step,
                                        "step": step})
            time.sleep(0.05)
        time.sleep(1.0)
        _close(tails)
        # The tails end when their next message arrives: one more write wakes them.
        c.post("/runs/set-tag", {"run_id": run_id, "key": "end", "value": "1"})

        # CPU seconds per batch of the server (and of the tail readers' process), which say where
        # the cores went whatever else runs on the machine.
        cpu_per_batch: dict[str, list[float]] = {"server": [], "readers": []}

        def throughput(seconds: float, readers: "_TailReaders | None" = None) -> float:
            run = c.create_run(exp)
            step, points, t0 = 0, 0, time.monotonic()
            server0 = cpu_seconds(server_pid)
            readers0 = cpu_seconds(readers.pid) if readers else 0.0
            while time.monotonic() - t0 < seconds:
                c.post_raw(API + "/runs/log-batch", batch_body(run, step, 1000)).raise_for_status()
                step, points = step + 100, points + 1000
            elapsed = time.monotonic() - t0
            batches = points / 1000
            cpu_per_batch["server"].append(1000 * (cpu_seconds(server_pid) - server0) / batches)
            if readers:
                cpu_per_batch["readers"].append(1000 * (cpu_seconds(readers.pid) - readers0) / batches)
            return points / elapsed

        # Windows alternate, without then with, each pair on a database grown the same way: run
        # back to back (all "without" first), the "with" windows also paid for the data the first
        # ones wrote, and a slow spell of the machine fell on one side only. 6 s windows on a
        # 2-core machine vary by +-20%, so the ratio is of medians over at least five pairs.
        window = ctx.size(3.0, 6.0)
        without: list[float] = []
        with_tails: list[float] = []
        server_cpu: dict[bool, list[float]] = {False: [], True: []}
        tail_messages = disordered = 0
        for _ in range(max(ctx.reps, 5)):
            without.append(throughput(window))
            server_cpu[False].append(cpu_per_batch["server"].pop())
            readers = _TailReaders(f"{url}{NATIVE}/experiments/{exp}/tail", clients)
            with_tails.append(throughput(window, readers))
            server_cpu[True].append(cpu_per_batch["server"].pop())
            got, bad = readers.close()
            tail_messages, disordered = tail_messages + got, disordered + bad
        server_without = median(server_cpu[False])
        cpu_per_batch["server"] = server_cpu[True]
        c.post("/runs/set-tag", {"run_id": run_id, "key": "end", "value": "2"})
        c.create_run(exp)
    expected = ctx.size(50, 200) * clients
    lat = lat_summary(latencies)
    lat["p99_ms"] = round(pct([x * 1000 for x in latencies], 99), 3)
    ratio = median([w / wo for w, wo in zip(with_tails, without)])
    return [
        Row("audit", f"tail latency, {clients} clients", f"{len(latencies):,}/{expected:,} msgs", "ms", None,
            {"p50_ms": lat["p50_ms"], "p95_ms": lat["p99_ms"]}, False, "p99 <= 100 ms", lat["p99_ms"] <= 100,
            "write sent -> message received", stats="p50 / p99"),
        Row("audit", "log-batch ingest, no tails", "1 client", "points/s", None, median(without), True),
        Row("audit", f"log-batch ingest, {clients} tails on it", "1 client", "points/s", None, median(with_tails),
            True, ">= 90% of no tails", ratio >= 0.9 and disordered == 0,
            f"{ratio:.0%} of without (median of {len(without)} alternating pairs' ratios: "
            f"{', '.join(f'{w / wo:.0%}' for w, wo in zip(with_tails, without))}); the tails (own process) received {tail_messages:,} messages, "
            f"each parsed and checked: {disordered} out of order; CPU ms per batch: server "
            f"{server_without:.1f} without, {median(cpu_per_batch['server']):.1f} with, tail readers "
            f"{median(cpu_per_batch['readers']):.1f}"),
    ]


def _compile_sources() -> None:
    """Bytecode for the repository's own modules, as `pip install` writes for an installed
    package: this checkout is installed in editable mode, and with PYTHONDONTWRITEBYTECODE set
    (as in our CI and dev shells) every `runledger` command would compile them from source at
    start-up (~0.05 s of CPU for verify, measured with the bytecode present and absent)."""
    import compileall

    for package in ("runledger", "ingest", "projector", "query"):
        compileall.compile_dir(str(ROOT / package), quiet=1, workers=0)


def _verify_row(ctx: Ctx, server: Any, points: int) -> Row:
    env = {**os.environ, "RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS": server.kafka.bootstrap, "RUNLEDGER_TOPIC": server.topic,
           "RUNLEDGER_DATA_DIR": str(server.data_dir), "RUNLEDGER_PORT": str(server.port)}
    _compile_sources()
    runs = []   # (wall seconds, CPU seconds of the CLI process, its per-phase split, the process)
    for _ in range(ctx.reps):
        before = os.times()
        t = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "runledger.cli", "verify"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=1800)
        elapsed = time.monotonic() - t
        after = os.times()
        cpu = after.children_user - before.children_user + after.children_system - before.children_system
        # `verify` prints where its time went: "time <wall>, <cpu>: start-up ... · imports ... · ...".
        split = next((line for line in done.stdout.splitlines() if line.startswith("time ")), "no split printed")
        ctx.log(f"verify: exit {done.returncode} in {elapsed:.2f}s, {cpu:.2f}s CPU; {split}")
        runs.append((elapsed, cpu, split, done))
        if done.returncode != 0:
            break
    elapsed, cpu, split, done = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    ok = all(r[3].returncode == 0 for r in runs)
    rate = points / elapsed
    note = (f"wall time of the CLI, start-up included (median of {len(runs)}); {cpu:.2f}s CPU; {split}" if ok else
            f"verify failed: {done.stdout[-300:]}")
    return Row("audit", "runledger verify (replay + checksums)", f"{points:,} pts", "points/s", None,
               rate if ok else None, True, ">= 1,000,000 points/s", rate >= 1e6 if ok else None, note)


def run(ctx: Ctx) -> list[Row]:
    points, events = ctx.size(100_000, 1_000_000), ctx.size(1_000, 10_000)
    server = ctx.runledger()
    try:
        with Client(server.url) as c:
            run_id = c.create_run(c.create_experiment("audit"))
        _seed(ctx, server.url, run_id, points, events)
        rows = _as_of_and_trail(ctx, server.url, run_id, points)
        rows.append(_verify_row(ctx, server, points))
        rows += _tail_rows(ctx, server.url, server.proc.pid)
        return rows
    finally:
        ctx.stop(server, "audit")
