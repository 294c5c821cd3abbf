"""A hard cap on the memory SQL queries hold, enforced by watching DuckDB's own accounting.

`operator_memory_limit` only bounds operators that can spill (joins, sorts, grouping); an
aggregate state such as `string_agg` or `list` over millions of rows grows past it unchecked,
and the process's memory is the projector's too. So while SQL queries run, one thread reads
`duckdb_memory()` every few milliseconds and interrupts the youngest query when the memory
held for query intermediates (the tags below, measured above what was held when no query ran)
goes past the SQL budget: `RUNLEDGER_SQL_MEMORY_MB` per running query. The youngest is chosen
because queries cannot be told apart in DuckDB's accounting, and the one that started last is
the one that pushed the total over. docs/sql.md, "Limits", says this for users.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Protocol

import duckdb

log = logging.getLogger(__name__)

# Memory a query's intermediates occupy; base-table blocks (cached pages of the read model) and
# the projector's transaction buffers are not counted.
_INTERMEDIATE_TAGS = ("HASH_TABLE", "ORDER_BY", "ALLOCATOR", "COLUMN_DATA", "OVERFLOW_STRINGS")
# Between checks. A check costs ~0.35 ms of CPU, which every 10 ms was ~4% of a core taken
# from the query it watches; intermediates grow by at most some tens of MB in 25 ms.
_POLL_S = 0.025
# How long a baseline reading stays good. Reading duckdb_memory() costs ~0.5-1 ms, which was a
# third of a trivial query's time when taken before every query; what the projector holds
# between queries changes slowly, and a baseline a second old is as good a reference.
_BASELINE_TTL_S = 1.0
# A query is first checked once it has run this long: most queries end sooner, and reading
# duckdb_memory() for each of them cost as much CPU as the query itself. Intermediates cannot
# grow far in this time (a fast aggregate allocates well under 50 MB in 20 ms).
_GRACE_S = 0.02


class Guarded(Protocol):
    def stop_for_memory(self) -> None: ...


class SqlMemoryGuard:
    def __init__(self, budget_mb: int) -> None:
        self.budget = budget_mb << 20
        self._lock = threading.Lock()
        # Held while a poll reads the instance: `forget` waits on it, so once the last query is
        # forgotten no poll is left touching a connection its owner may now close.
        self._polling = threading.Lock()
        self._running: list[Guarded] = []
        self._started: dict[int, float] = {}     # id(query) -> when it began being watched
        self._baseline = 0
        self._baseline_at = -_BASELINE_TTL_S
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._con: duckdb.DuckDBPyConnection | None = None

    def watch(self, con: duckdb.DuckDBPyConnection, query: Guarded) -> None:
        """Start watching `query` (running on a cursor of `con`'s instance)."""
        with self._lock:
            now = time.monotonic()
            if self._con is not con or (not self._running and now - self._baseline_at > _BASELINE_TTL_S):
                self._con = con
                self._baseline = self._held(con)
                self._baseline_at = now
            self._running.append(query)
            self._started[id(query)] = now
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="sql-memory-guard", daemon=True)
                self._thread.start()
            self._wake.set()

    def forget(self, query: Guarded) -> None:
        self._drop(query)
        with self._polling:
            pass

    def _drop(self, query: Guarded) -> None:
        with self._lock:
            with contextlib.suppress(ValueError):
                self._running.remove(query)
            self._started.pop(id(query), None)

    @staticmethod
    def _held(con: duckdb.DuckDBPyConnection) -> int:
        cur = con.cursor()
        try:
            # Summed here rather than in SQL: a plain scan of the table function plans in half
            # the time of one with a filter and an aggregate.
            rows = cur.execute("SELECT tag, memory_usage_bytes FROM duckdb_memory()").fetchall()
            return sum(int(n or 0) for tag, n in rows if tag in _INTERMEDIATE_TAGS)
        finally:
            cur.close()

    def _loop(self) -> None:
        while True:
            self._wake.wait(1.0)
            with self._lock:
                if not self._running:
                    self._wake.clear()
                    continue
                oldest = min(self._started.get(id(q), 0.0) for q in self._running)
            young = _GRACE_S - (time.monotonic() - oldest)
            if young > 0:
                time.sleep(young)
                continue
            with self._polling:
                with self._lock:
                    running, con = list(self._running), self._con
                if not running or con is None:
                    continue
                try:
                    held = self._held(con) - self._baseline
                except duckdb.Error:          # the instance was closed (a rebuild, shutdown)
                    continue
                if held > self.budget * len(running):
                    victim = running[-1]
                    log.warning("SQL query interrupted: intermediates at %d MB, over the budget of %d MB "
                                "for %d running quer%s", held >> 20, (self.budget * len(running)) >> 20,
                                len(running), "y" if len(running) == 1 else "ies")
                    self._drop(victim)
                    victim.stop_for_memory()
            time.sleep(_POLL_S)
