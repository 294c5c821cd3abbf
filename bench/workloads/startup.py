"""Start-up: from `make up` (venv and the broker's jars already there) to the first answered
request.

`make up` runs `.venv/bin/runledger up`, which starts a local Kafka broker in the data folder
and then the server. Per repetition, in a fresh data folder on free ports:

- first start: the broker's storage is formatted and the event topic created;
- restart: the same folder again (a user's second `make up`), broker and topic already there.

Each is timed from spawning the command until GET /health answers 200. The command's own
output says when Kafka was ready ("Kafka ready ... after X s"), which splits the figure into
broker start and the rest (imports, DuckDB, projector start). The process group is stopped
with SIGTERM afterwards (the command stops the broker it started).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from common import median
from context import Ctx, Row
from runledger.kafka_local import free_port

_KAFKA_READY = re.compile(r"Kafka ready on \S+ after ([0-9.]+)s")
TARGET_S = 10.0


def _runledger_command() -> list[str]:
    """What `make up` runs: the venv's console script, else the module."""
    script = Path(sys.executable).with_name("runledger")
    return [str(script), "up"] if script.exists() else [sys.executable, "-m", "runledger.cli", "up"]


def _one_start(folder: Path, port: int, kafka_port: int, timeout: float = 180.0) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP_SERVERS", "RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS")}
    env.update({"RUNLEDGER_DATA_DIR": str(folder), "RUNLEDGER_PORT": str(port),
                "RUNLEDGER_KAFKA_PORT": str(kafka_port)})
    lines: list[tuple[float, str]] = []
    t0 = time.monotonic()
    proc = subprocess.Popen(_runledger_command(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic() - t0, line.rstrip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    answered = None
    try:
        with httpx.Client(timeout=1) as http:
            while time.monotonic() - t0 < timeout and proc.poll() is None:
                try:
                    if http.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        answered = time.monotonic() - t0
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        reader.join(5)
    kafka = next((float(m.group(1)) for _, line in lines if (m := _KAFKA_READY.search(line))), None)
    kafka_line = next((t for t, line in lines if _KAFKA_READY.search(line)), None)
    out: dict = {"first_answer_s": answered, "kafka_ready_s": kafka,
                 "server_after_kafka_s": None if answered is None or kafka_line is None else answered - kafka_line}
    if answered is None:
        out["error"] = "no answer: " + " | ".join(line for _, line in lines[-8:])[-600:]
    return out


def run(ctx: Ctx) -> list[Row]:
    first, again = [], []
    for rep in range(ctx.reps):
        folder = Path(tempfile.mkdtemp(prefix="startup-", dir=ctx.scratch)) / "data"
        port, kafka_port = free_port(), free_port()
        for label, bucket in (("first start", first), ("restart", again)):
            r = _one_start(folder, port, kafka_port)
            bucket.append(r)
            if "error" in r:
                ctx.log(f"startup ({label}) rep {rep + 1}: {r['error']}")
            else:
                ctx.log(f"startup ({label}) rep {rep + 1}: first answer after {r['first_answer_s']:.1f}s "
                        f"(Kafka ready after {r['kafka_ready_s']}s, server {r['server_after_kafka_s']:.1f}s after)")
    ctx.details["startup"] = {"first_start": first, "restart": again}
    rows = []
    for label, reps in (("fresh data folder (formats the broker, creates the topic)", first),
                        ("restart (same folder)", again)):
        good = [r for r in reps if r.get("first_answer_s") is not None]
        if not good:
            rows.append(Row("start-up", f"make up -> first answered request, {label}", "", "s", None, None, False,
                            f"<= {TARGET_S:.0f} s", False, "; ".join(r.get("error", "") for r in reps)[:300]))
            continue
        total = median([r["first_answer_s"] for r in good])
        kafka = median([r["kafka_ready_s"] for r in good if r["kafka_ready_s"] is not None] or [0.0])
        server = median([r["server_after_kafka_s"] for r in good if r["server_after_kafka_s"] is not None] or [0.0])
        rows.append(Row("start-up", f"make up -> first answered request, {label}",
                        f"`runledger up` (what make up runs), venv and jars present, {len(good)} rep(s)", "s",
                        None, total, False, f"<= {TARGET_S:.0f} s", total <= TARGET_S,
                        f"Kafka ready after {kafka:.1f}s (median), server answered {server:.1f}s after that"))
    return rows
