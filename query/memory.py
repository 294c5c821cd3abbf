"""Handing memory back to the OS after a burst (a large history read, a streaming burst).

Freed memory mostly stays with the allocators, not the OS: glibc keeps freed blocks in its
per-thread arenas (a heap only shrinks from the top, so one live block pins the rest), and
Arrow's pool (mimalloc or jemalloc) keeps freed pages for reuse. Measured on this server, a
streaming burst left RSS at 610 MB after the work was done, from a 202 MB baseline. Both are
asked to let go, but only after RSS grew by `_MIN_GROWTH` since the last release: trimming
walks every arena, and on a small heap it would cost more than it returns.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Callable

import pyarrow as pa

from runledger.projector import activity

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

_MIN_GROWTH = 16 << 20   # RUNLEDGER_MEMORY_RELEASE_MB; `configure` sets it
_M_ARENA_MAX = -8         # mallopt parameter numbers, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_PAGE = os.sysconf("SC_PAGE_SIZE")
_RETRY_S = 30.0
_lock = threading.Lock()
_rss_after_release = 0
_floor = 0                # the lowest RSS a release ever reached: the process's working size
_released_at = 0.0


def _load_malloc_trim():  # type: ignore[no-untyped-def]
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        trim = libc.malloc_trim  # glibc only; musl and macOS have none
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_malloc_trim = _load_malloc_trim()


def configure(release_mb: int, malloc_arenas: int, arrow_pool: str = "system", mmap_threshold_kb: int = 0) -> None:
    """Set the release threshold, and cap glibc's malloc arenas before the server's threads
    start. Each thread that mallocs while the others hold their arena's lock gets an arena of
    its own, up to 8 per core, and an arena only gives memory back from its top: with ~40
    threads (aiokafka, DuckDB, the executor) a burst left ~15 arenas each pinning freed blocks.
    0 keeps glibc's default.

    Arrow's buffers (streamed Arrow bodies, the projector's columns, history reads) go to
    glibc's malloc with `arrow_pool` "system": Arrow's own pool (mimalloc) kept ~30 MB more
    after a streaming burst even after `release_unused`, for the same CPU (docs/memory.md).
    The environment's ARROW_DEFAULT_MEMORY_POOL, when set, wins.

    `mmap_threshold_kb` > 0 fixes glibc's mmap threshold: blocks at least that big get their
    own mapping, unmapped when freed. glibc's default starts at 128 KiB and rises to the size
    of every bigger block freed (up to 32 MiB), after which request bodies, Kafka fetches and
    column buffers of a few hundred KiB come from the heap, whose free holes malloc_trim
    cannot always return (docs/memory.md, "glibc's mmap threshold"). glibc's own
    MALLOC_MMAP_THRESHOLD_ in the environment, when set, wins."""
    global _MIN_GROWTH
    _MIN_GROWTH = max(1, release_mb) << 20
    if arrow_pool == "system" and not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        pa.set_memory_pool(pa.system_memory_pool())
    if malloc_arenas > 0:
        _mallopt(_M_ARENA_MAX, malloc_arenas)
    if mmap_threshold_kb > 0 and not os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        _mallopt(_M_MMAP_THRESHOLD, mmap_threshold_kb << 10)


def _mallopt(param: int, value: int) -> bool:
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False   # not glibc
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(fn(param, value))


def rss_bytes() -> int:
    """This process's resident set size (0 where /proc is absent)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def release_unused() -> tuple[int, int]:
    """Return freed memory of Arrow's pool and of every glibc arena to the OS; (RSS before, after)."""
    global _rss_after_release, _floor, _released_at
    with _lock, activity.span("memory_release"):
        before = rss_bytes()
        pa.default_memory_pool().release_unused()
        if _malloc_trim is not None:
            _malloc_trim(0)
        after = rss_bytes()
        _rss_after_release, _released_at = after, time.monotonic()
        _floor = after if _floor == 0 else min(_floor, after)
    return before, after


def release_if_grown(min_growth: int | None = None) -> bool:
    """`release_unused` if RSS grew by `min_growth` bytes since the last release, or stays that
    far above the working size `_RETRY_S` seconds after it (a burst that has ended since)."""
    min_growth = _MIN_GROWTH if min_growth is None else min_growth
    rss = rss_bytes()
    grew = rss - _rss_after_release >= min_growth
    elevated = rss - _floor >= min_growth and time.monotonic() - _released_at >= _RETRY_S
    if not (grew or elevated):
        return False
    t0 = time.perf_counter()
    before, after = release_unused()
    log.debug("released memory: RSS %d -> %d MB in %.1f ms", before >> 20, after >> 20,
              (time.perf_counter() - t0) * 1000)
    return True


def release_after_large_read() -> None:
    """Called when a response that may have been large is done."""
    release_if_grown()


async def release_loop(interval: float = 5.0, idle: "IdleTrim | None" = None, idle_tick: float = 1.0,
                       purge_poll: float = 0.02) -> None:
    """Checks every `interval` seconds whether RSS grew, and releases if so (catches bursts that
    end on no particular request, such as the projector catching up after a streaming burst).
    With `idle`, also checks every `idle_tick` seconds whether the server has gone quiet, and
    once a purge is due (`IdleTrim.purge_due`), every `purge_poll` seconds whether no request is
    in flight: on a busy server that lasts milliseconds at a time."""
    release_unused()  # the baseline the growth is measured from
    tick = min(interval, idle_tick) if idle is not None and (idle.idle_s > 0 or idle.purge_s > 0 or idle.checkpoint_s > 0) else interval
    next_growth_check = time.monotonic() + interval
    while True:
        await asyncio.sleep(tick)
        try:
            if idle is not None and idle.maybe_trim():
                next_growth_check = time.monotonic() + interval
                continue
            if idle is not None and idle.purge_due():
                deadline = time.monotonic() + tick
                while not idle.maybe_purge() and time.monotonic() < deadline:
                    await asyncio.sleep(purge_poll)
            elif idle is not None and idle.checkpoint_due():
                await asyncio.to_thread(idle.maybe_checkpoint)
            if time.monotonic() >= next_growth_check:
                next_growth_check = time.monotonic() + interval
                await asyncio.to_thread(release_if_grown)
        except Exception:  # never let housekeeping take the server down
            log.exception("releasing memory failed")


# ----- idle trim (issue 22: idle RSS after a workload back near the RSS after start-up)

def _housekeeping(span: str, work: Callable[[], bool], failed: str, *, if_failed: bool) -> bool:
    """`work()` inside an activity span; housekeeping never fails the server, so an error is
    logged and `if_failed` returned instead."""
    try:
        with activity.span(span):
            return work()
    except Exception:
        log.exception(failed)
        return if_failed


class Activity:
    """What the server is doing, for the idle trim: HTTP requests in flight (a streamed answer
    counts until its last byte is sent) and when the last request or projector commit ended.
    `touch` is also a Store apply listener (it takes the batch's changes and ignores them)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.in_flight = 0
        self.last = clock()
        self.generation = 0   # bumped by every request and commit: "anything since the trim?"

    def touch(self, *_: object) -> None:
        self.last = self._clock()
        self.generation += 1

    def idle_for(self) -> float:
        """Seconds since the last request ended or commit landed; 0 while a request runs."""
        return 0.0 if self.in_flight else self._clock() - self.last


class ActivityMiddleware:
    """Pure ASGI middleware counting HTTP requests in flight into an `Activity` (cheap: two
    integer updates per request, no wrapping of the body)."""

    def __init__(self, app: "ASGIApp", activity: Activity) -> None:
        self.app, self.activity = app, activity

    async def __call__(self, scope: "Scope", receive: "Receive", send: "Send") -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        a = self.activity
        a.in_flight += 1
        a.touch()
        try:
            await self.app(scope, receive, send)
        finally:
            a.in_flight -= 1
            a.touch()


class IdleTrim:
    """After `idle_s` seconds without requests or commits, once per quiet spell: `shrink` (the
    store drops DuckDB's cached blocks, `Store.release_buffers`), then `release_unused`.

    Why: DuckDB keeps every block it read or wrote in its buffer pool up to its memory limit
    and only evicts under pressure, so a streaming burst or a replay left the server at
    start-up RSS + the whole limit for good (225 -> 1,236 MB in the bench). The cached blocks
    are a copy of the file; dropping them costs the next read a few page-cache reads.
    Runs on the event loop thread: no request can start while DuckDB evicts (~10-300 ms)."""

    def __init__(self, activity: Activity, shrink: Callable[[], bool], idle_s: float,
                 purge: Callable[[], bool] | None = None, purge_s: float = 0.0,
                 checkpoint: Callable[[], bool] | None = None, checkpoint_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.activity, self.shrink, self.idle_s = activity, shrink, idle_s
        self.purge, self.purge_s = purge, (purge_s if purge is not None else 0.0)
        self.checkpoint, self.checkpoint_s = checkpoint, (checkpoint_s if checkpoint is not None else 0.0)
        self._clock = clock
        self._checkpointed_at = clock()
        self._checkpointed_at_generation = -1
        self.checkpoints = 0   # how many housekeeping checkpoints ran between purges
        self._trimmed_at_generation = -1
        self._purged_at = clock()
        self._purged_at_generation = -1
        self.trims = 0   # how many trims ran (tests, logs)
        self.purges = 0  # how many busy purges ran

    def purge_due(self) -> bool:
        """`purge_s` seconds since the last purge or trim (0: never), and a request or commit
        since (a server at rest has nothing new to purge)."""
        return (self.purge_s > 0 and self._clock() - self._purged_at >= self.purge_s
                and self.activity.generation != self._purged_at_generation)

    def checkpoint_due(self) -> bool:
        """`checkpoint_s` seconds since the last checkpoint attempt, purge or trim (0: never),
        and a request or commit since."""
        return (self.checkpoint_s > 0 and self._clock() - self._checkpointed_at >= self.checkpoint_s
                and self.activity.generation != self._checkpointed_at_generation)

    def maybe_checkpoint(self) -> bool:
        """Between two purges, have the store checkpoint a WAL of more than 256 KiB
        (`Store.checkpoint_small_wal`). Rows committed since DuckDB's last checkpoint sit in
        memory uncompressed: at the soak's 2,000 points/s they grew by ~1.5 MB every 10 s,
        and a purge every 30 s let RSS saw by ~5 MB with them (docs/memory.md, "Checkpointing
        from the housekeeping"). Unlike the purge it needs no moment without requests (readers'
        transactions do not stop a checkpoint), so it runs on a worker thread, not the event
        loop; it skips when the projector is committing. True if it checkpointed."""
        if not self.checkpoint_due() or self.checkpoint is None:
            return False
        self._checkpointed_at, self._checkpointed_at_generation = self._clock(), self.activity.generation
        done = _housekeeping("duckdb_checkpoint", self.checkpoint, "housekeeping checkpoint failed", if_failed=False)
        self.checkpoints += done
        return done

    def maybe_purge(self) -> bool:
        """On a server that never goes quiet (a steady stream with readers, the soak): once
        `purge_s` seconds have passed, at a moment when no request is in flight, `purge` (the
        store checkpoints a WAL of more than 256 KiB and walks DuckDB's eviction queues,
        `Store.purge_eviction_queues`); glibc is not trimmed (see below). Same conditions as the
        trim: on the event loop thread, no request in flight, the projector's writer lock free; unlike the trim it does
        not wait for a quiet spell, and it does not lower DuckDB's memory limit (but for an
        instant when DuckDB holds nothing at all, `Store._walk_eviction_queues`).
        Why: without it the soak's RSS grew by 2-3 MB a minute for its whole length (dead
        eviction-queue entries, docs/memory.md). True if it ran."""
        if not self.purge_due() or self.activity.in_flight or self.purge is None:
            return False
        generation = self.activity.generation
        t0 = time.perf_counter()
        # On failure: do not retry at once.
        walked = _housekeeping("duckdb_purge", self.purge, "purging DuckDB's eviction queues failed", if_failed=True)
        if not walked:
            return False    # the projector is committing: try again at the next poll
        self._purged_at, self._purged_at_generation = self._clock(), generation
        self._checkpointed_at = self._purged_at   # the purge checkpointed too
        # No malloc_trim here, unlike the idle trim: on a busy server the pages it hands back
        # are faulted in again within seconds (churn, and a dip of RSS the soak counted as
        # spread); what the walk freed stays in glibc's free lists for the next allocations.
        self.purges += 1
        log.debug("busy purge in %.0f ms", (time.perf_counter() - t0) * 1000)
        return True

    def due(self) -> bool:
        a = self.activity
        return (self.idle_s > 0 and a.generation != self._trimmed_at_generation
                and a.idle_for() >= self.idle_s)

    def maybe_trim(self) -> bool:
        if not self.due():
            return False
        self._trimmed_at_generation = self.activity.generation
        # The trim walks DuckDB's eviction queues too.
        self._purged_at, self._purged_at_generation = self._clock(), self.activity.generation
        self._checkpointed_at = self._purged_at
        t0 = time.perf_counter()
        shrunk = _housekeeping("idle_trim", self.shrink, "idle trim: releasing DuckDB's buffers failed", if_failed=False)
        before, after = release_unused()
        self.trims += 1
        log.info("idle trim: DuckDB buffers %s, RSS %d -> %d MB in %.0f ms",
                 "released" if shrunk else "kept (busy)", before >> 20, after >> 20,
                 (time.perf_counter() - t0) * 1000)
        return True
