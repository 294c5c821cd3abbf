"""How long the start-up check of the read model takes (projector.integrity.verify).

Builds a real read model (local Kafka, `runledger serve`, points through the stream endpoint),
stops the server, then times `verify` on the file with one and with two DuckDB threads (median
of `--reps` runs; the OS page cache holds the file, as right after a restart), and restarts the
server on the file to print its own "verified in" log line.

    PYTHONPATH=. .venv/bin/python bench/verify_read_model.py --points 1000000

(PYTHONPATH: since the client became its own distribution, `runledger` is a namespace package
and the local broker finds its log4j2.properties only with the repo root on the path.)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servers import Kafka, RunledgerServer  # noqa: E402

from runledger.projector.integrity import verify  # noqa: E402


def build(server: RunledgerServer, points: int, keys: int) -> None:
    with httpx.Client(base_url=server.url, timeout=120) as http:
        exp = http.post("/api/2.0/mlflow/experiments/create", json={"name": "verify"}).json()["experiment_id"]
        run_id = http.post("/api/2.0/mlflow/runs/create", json={"experiment_id": exp}).json()["run"]["info"]["run_id"]
        per = 100_000
        for start in range(0, points, per):
            steps = range(start, min(points, start + per))
            r = http.post("/api/runledger/v1/metrics/stream", json={
                "run_id": run_id, "keys": [f"k{s % keys}" for s in steps], "values": [s / 7 for s in steps],
                "timestamps": [1_700_000_000_000 + s for s in steps], "steps": list(steps)})
            r.raise_for_status()
        while http.get("/api/runledger/v1/lag").json()["total_lag"]:
            time.sleep(0.2)


def timed(path: Path, threads: int) -> float:
    con = duckdb.connect(str(path))
    try:
        con.execute(f"SET threads = {threads}")
        started = time.perf_counter()
        verify(con)
        return time.perf_counter() - started
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        kafka = Kafka(Path(scratch)).start()
        try:
            server = RunledgerServer(kafka, Path(scratch)).start()
            try:
                build(server, args.points, args.keys)
            finally:
                server.stop()
            path = server.duckdb_path
            size = path.stat().st_size
            for threads in (1, 2):
                runs = [timed(path, threads) for _ in range(args.reps)]
                print(f"{args.points} points, file {size / 2 ** 20:.1f} MiB, threads={threads}: "
                      f"verify median {statistics.median(runs) * 1000:.0f} ms "
                      f"(min {min(runs) * 1000:.0f}, max {max(runs) * 1000:.0f}, {args.reps} runs)")
            again = RunledgerServer(kafka, Path(scratch), topic=server.topic, data_dir=server.data_dir).start()
            again.stop()
            verified = [line for line in again.log_path.read_text().splitlines() if "verified in" in line]
            print(f"server restart on that file: ready in {again.startup_s:.2f} s; log: {verified[-1].strip()}")
        finally:
            kafka.stop()


if __name__ == "__main__":
    main()
