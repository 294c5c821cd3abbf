"""Which way each get-run was answered, and the time spent on each way.

A get-run is answered from the projector's folded state when a write to the run is answered but
not committed yet ("memory"), from the rendered-run cache ("cache"), from the projector's folded
state of a run whose writes are committed ("folded": the fold cache holds recently written runs),
or from DuckDB; a DuckDB read either found every answered write committed ("duckdb") or first
waited for the commit ("waited", with the seconds spent waiting). The tallies say where the slow reads come from
without a profiler: the bench prints them next to the latency figures (bench/workloads/latency.py),
and `GET /api/runledger/v1/read-paths` shows them on a running server.

Counting costs a lock and two additions per read.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["ReadPaths", "PATHS"]

PATHS = ("memory", "folded", "cache", "duckdb", "waited")
# Upper bounds (ms) of the latency buckets kept per way: enough to see a tail, not a histogram
# library's worth.
_BUCKETS_MS = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 25.0, float("inf"))


class ReadPaths:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(PATHS, 0)
        self._seconds = dict.fromkeys(PATHS, 0.0)
        self._buckets = {p: [0] * len(_BUCKETS_MS) for p in PATHS}
        self._wait_seconds = 0.0
        self._wait_max = 0.0

    def note(self, path: str, seconds: float, waited: float = 0.0) -> None:
        """One get-run answered by `path` in `seconds` (of which `waited` waiting for a commit)."""
        ms = seconds * 1000
        i = 0
        while ms > _BUCKETS_MS[i]:
            i += 1
        with self._lock:
            self._counts[path] += 1
            self._seconds[path] += seconds
            self._buckets[path][i] += 1
            if waited:
                self._wait_seconds += waited
                self._wait_max = max(self._wait_max, waited)

    def snapshot(self) -> dict[str, Any]:
        """Counts, mean milliseconds and a coarse latency histogram per way."""
        with self._lock:
            total = sum(self._counts.values())
            ways = {p: {"count": n, "share": round(n / total, 4) if total else 0.0,
                        "mean_ms": round(self._seconds[p] * 1000 / n, 3) if n else 0.0,
                        "le_ms": {("inf" if b == float("inf") else f"{b:g}"): c
                                  for b, c in zip(_BUCKETS_MS, self._buckets[p]) if c}}
                    for p, n in self._counts.items()}
            waits = self._counts["waited"]
            return {"get_run": ways, "total": total,
                    "wait_mean_ms": round(self._wait_seconds * 1000 / waits, 3) if waits else 0.0,
                    "wait_max_ms": round(self._wait_max * 1000, 3)}
