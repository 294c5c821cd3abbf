"""Artifact transfer through the server: upload and download throughput of one big file (1 GiB;
128 MiB with --quick), and the server's memory while the bytes go through.

Both servers proxy artifacts (MLflow: `mlflow server --serve-artifacts`, Runledger: its
`/api/2.0/mlflow-artifacts` routes, docs/artifacts.md), and are driven the same way MLflow's
client drives them for a file below the multipart threshold: one streamed PUT of the file, one
streamed GET. The file is read from disk and the download is discarded as it arrives (no hashing
on the client: it would measure the client); the downloaded size is checked, and Runledger's
upload event must carry the file's SHA-256.

Memory: the server process tree's RSS is sampled every 0.1 s during each transfer; the figure is
the largest growth over the RSS just before it ("flat" = a few MB, not the file's size).

Goal (issue 18): >= 200 MB/s each way, and at least MLflow's proxy in the same run.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx

from common import API
from context import Ctx, Row
from servers import _status_kb, process_tree

CHUNK = 1 << 20
PROXY = "/api/2.0/mlflow-artifacts/artifacts"


class RssWatch:
    """The largest RSS of a process tree over a transfer, sampled every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.baseline = self._rss_kb()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _rss_kb(self) -> int:
        return sum(_status_kb(p, "VmRSS") for p in process_tree(self.pid))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss_kb())

    def stop(self) -> float:
        """MB the tree grew by at its peak."""
        self._stop.set()
        self._thread.join(2)
        self.peak = max(self.peak, self._rss_kb())
        return (self.peak - self.baseline) / 1024


def make_file(path: Path, size: int) -> str:
    """`size` bytes that do not compress (a random 16 MiB block repeated), and their SHA-256."""
    block = os.urandom(16 << 20)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            piece = block[:min(left, len(block))]
            f.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def _read(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while data := f.read(CHUNK):
            yield data


def _new_run(http: httpx.Client, name: str) -> str:
    exp = http.post(API + "/experiments/create", json={"name": name}).json()["experiment_id"]
    run = http.post(API + "/runs/create", json={"experiment_id": exp, "start_time": int(time.time() * 1000)}).json()
    uri: str = run["run"]["info"]["artifact_uri"]
    if not uri.startswith("mlflow-artifacts:/"):
        raise RuntimeError(f"the server does not proxy artifacts (artifact_uri {uri})")
    return uri.removeprefix("mlflow-artifacts:/")


def _transfer(url: str, pid: int, path: Path, size: int, tag: str) -> dict[str, float]:
    with httpx.Client(base_url=url, timeout=600) as http:
        folder = _new_run(http, f"artifacts-{tag}")
        target = f"{PROXY}/{folder}/big.bin"
        watch = RssWatch(pid)
        t = time.perf_counter()
        r = http.put(target, content=_read(path), headers={"Content-Length": str(size),
                                                            "Content-Type": "application/octet-stream"})
        up = time.perf_counter() - t
        up_mb = watch.stop()
        if r.status_code != 200:
            raise RuntimeError(f"upload -> {r.status_code}: {r.text[:300]}")
        watch = RssWatch(pid)
        got = 0
        t = time.perf_counter()
        with http.stream("GET", target) as resp:
            resp.raise_for_status()
            for chunk in resp.iter_raw(CHUNK):
                got += len(chunk)
        down = time.perf_counter() - t
        down_mb = watch.stop()
        if got != size:
            raise RuntimeError(f"downloaded {got} bytes of {size}")
    return {"up_mb_s": size / up / 1e6, "down_mb_s": size / down / 1e6, "up_rss_growth_mb": up_mb,
            "down_rss_growth_mb": down_mb}


def _median(results: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(r[key] for r in results), 1)


def run(ctx: Ctx) -> list[Row]:
    size = ctx.size(128 << 20, 1 << 30)
    path = ctx.scratch / "artifact.bin"
    digest = make_file(path, size)
    label = f"{size >> 20} MiB file"
    found: dict[str, list[dict[str, float]]] = {"mlflow": [], "runledger": []}

    mlflow = ctx.mlflow(serve_artifacts=True)
    try:
        for rep in range(ctx.reps):
            found["mlflow"].append(_transfer(mlflow.url, mlflow.proc.pid, path, size, f"m{rep}"))
            ctx.log(f"mlflow rep {rep}: {found['mlflow'][-1]}")
    finally:
        ctx.server_stats.append({"workload": "artifacts", "server": "mlflow", **mlflow.stop()})
        mlflow.cleanup()

    rl = ctx.runledger()
    try:
        for rep in range(ctx.reps):
            found["runledger"].append(_transfer(rl.url, rl.proc.pid, path, size, f"r{rep}"))
            ctx.log(f"runledger rep {rep}: {found['runledger'][-1]}")
        with httpx.Client(base_url=rl.url, timeout=60) as http:
            rows = http.post("/api/runledger/v1/sql", json={"query": "SELECT DISTINCT sha256 FROM artifacts"}).json()
        if rows.get("rows") != [[digest]]:
            raise RuntimeError(f"upload events carry {rows.get('rows')}, the file's SHA-256 is {digest}")
    finally:
        ctx.server_stats.append({"workload": "artifacts", "server": "runledger", **rl.stop()})
        rl.cleanup()
    path.unlink(missing_ok=True)

    ctx.details["artifacts"] = {"size_bytes": size, **found}
    m, r = ({k: _median(found[s], k) for k in found[s][0]} for s in ("mlflow", "runledger"))
    out = []
    for case, key in (("upload (PUT)", "up_mb_s"), ("download (GET)", "down_mb_s")):
        out.append(Row("artifacts", case, label, "MB/s", m[key], r[key], True, target=">= 200 and >= MLflow",
                       met=r[key] >= 200 and r[key] >= m[key]))
    for case, key in (("server RSS growth, upload", "up_rss_growth_mb"),
                      ("server RSS growth, download", "down_rss_growth_mb")):
        out.append(Row("artifacts", case, label, "MB", m[key], r[key], False, target="flat (<< file size)",
                       met=r[key] < 64, note="largest growth over the RSS before the transfer, sampled every 0.1 s"))
    return out
