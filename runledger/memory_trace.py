"""Where the server's resident memory sits, sampled while it runs: a diagnostic for soak runs
(`make soak`, docs/memory.md). Off unless RUNLEDGER_MEMORY_TRACE names a file; then a daemon
thread appends one JSON line every RUNLEDGER_MEMORY_TRACE_SECONDS (5) with:

- `rss`, `anon`, `file`: the process's resident bytes, and how many of them are anonymous memory
  (heaps) or mapped files (shared libraries), from /proc/self/smaps_rollup;
- `malloc`: glibc's own account (mallinfo2): `arena` bytes taken from the OS by sbrk/arenas,
  `mmapped` big blocks, `in_use`, `free` (held for reuse, the fragmentation) and `arenas`;
- `jemalloc`: DuckDB's own allocator (allocated, active, resident, retained, metadata bytes);
- `arrow`: bytes Arrow's memory pool holds for live buffers;
- `duckdb`: DuckDB's buffer manager by tag (duckdb_memory()), and its own total;
- `py_blocks`: Python's allocated object blocks (sys.getallocatedblocks), `threads`.

Reading duckdb_memory() costs about a millisecond; at one sample every few seconds the trace
does not change what it measures.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

log = logging.getLogger(__name__)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _load_mallinfo2() -> Callable[[], _MallInfo2] | None:
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallinfo2   # glibc >= 2.33
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [], _MallInfo2
    return fn  # type: ignore[no-any-return]


_mallinfo2 = _load_mallinfo2()


def _load_jemalloc_ctl() -> Callable[..., int] | None:
    """DuckDB's statically linked jemalloc's `mallctl` (exported as `duckdb_je_mallctl` by the
    Linux wheels), or None: DuckDB's allocations outside its buffer manager are only visible here."""
    try:
        import duckdb
        so = next(Path(duckdb.__file__).parent.parent.glob("_duckdb*.so"))
        fn = ctypes.CDLL(str(so)).duckdb_je_mallctl
    except (ImportError, StopIteration, OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p, ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_je_mallctl = _load_jemalloc_ctl()


def jemalloc_stats() -> dict[str, int]:
    """DuckDB's jemalloc: bytes `allocated` (live), `active` (pages holding them), `resident`
    (physically resident, including dirty pages kept for reuse and metadata), `retained`
    (virtual, returned to the OS). Empty where the wheel does not export mallctl."""
    if _je_mallctl is None:
        return {}
    epoch = ctypes.c_uint64(1)
    if _je_mallctl(b"epoch", None, None, ctypes.byref(epoch), ctypes.sizeof(epoch)) != 0:
        return {}
    out = {}
    for name in ("allocated", "active", "resident", "retained", "metadata"):
        v, size = ctypes.c_size_t(), ctypes.c_size_t(ctypes.sizeof(ctypes.c_size_t))
        if _je_mallctl(f"stats.{name}".encode(), ctypes.byref(v), ctypes.byref(size), None, 0) == 0:
            out[name] = int(v.value)
    return out


def _smaps() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[key] = int(parts[0]) << 10
    except OSError:
        pass
    return out


def sample(cursor: Callable[[], Any] | None = None) -> dict[str, Any]:
    """One sample of where memory sits (see the module's docstring)."""
    smaps = _smaps()
    row: dict[str, Any] = {"t": round(time.time(), 1), "rss": smaps.get("Rss", 0),
                           "anon": smaps.get("Anonymous", 0),
                           "file": smaps.get("Rss", 0) - smaps.get("Anonymous", 0),
                           "arrow": pa.total_allocated_bytes(), "py_blocks": sys.getallocatedblocks(),
                           "threads": threading.active_count()}
    if _mallinfo2 is not None:
        m = _mallinfo2()
        row["malloc"] = {"arena": m.arena, "mmapped": m.hblkhd, "in_use": m.uordblks, "free": m.fordblks,
                         "top_pad": m.keepcost, "free_chunks": m.ordblks}
    je = jemalloc_stats()
    if je:
        row["jemalloc"] = je
    if cursor is not None:
        try:
            with cursor() as cur:
                tags = cur.execute("SELECT tag, memory_usage_bytes FROM duckdb_memory() "
                                   "WHERE memory_usage_bytes > 0").fetchall()
                size = cur.execute("PRAGMA database_size")
                names = [d[0] for d in size.description]
                found = size.fetchone()
            row["duckdb"] = {str(t): int(b) for t, b in tags}
            row["duckdb_total"] = sum(row["duckdb"].values())
            if found is not None:
                db = dict(zip(names, found))
                row["database"] = {k: str(db.get(k)) for k in ("used_blocks", "wal_size", "memory_usage",
                                                                  "memory_limit")}
        except Exception as e:  # a diagnostic: never fail the server
            row["duckdb_error"] = repr(e)
    return row


def _python_growth(first: tracemalloc.Snapshot, top: int = 12) -> list[dict[str, Any]]:
    """The places whose live Python allocations grew most since `first`."""
    now = tracemalloc.take_snapshot()
    out = []
    for d in now.compare_to(first, "traceback")[:top]:
        out.append({"grew": d.size_diff, "size": d.size, "count": d.count,
                    "where": [f"{f.filename.rsplit('/site-packages/', 1)[-1]}:{f.lineno}" for f in d.traceback][-6:]})
    return out


def start(path: Path, every_s: float, cursor: Callable[[], Any] | None, python_frames: int = 0) -> threading.Event:
    """Append a sample to `path` every `every_s` seconds until the returned event is set; with
    `python_frames`, tracemalloc runs too and each sample names where Python's memory grew."""
    stop = threading.Event()
    first: tracemalloc.Snapshot | None = None
    if python_frames > 0:
        tracemalloc.start(python_frames)

    def loop() -> None:
        nonlocal first
        with path.open("a") as f:
            while not stop.wait(every_s):
                try:
                    row = sample(cursor)
                    if python_frames > 0:
                        row["traced"] = tracemalloc.get_traced_memory()[0]
                        if first is None:
                            first = tracemalloc.take_snapshot()
                        else:
                            row["python_growth"] = _python_growth(first)
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                except Exception:
                    log.exception("memory trace sample failed")

    threading.Thread(target=loop, name="memory-trace", daemon=True).start()
    return stop
