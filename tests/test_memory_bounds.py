"""The memory bounds of docs/memory.md are applied where they take effect (issue 22, item 3).

How much memory they save is measured by `make bench` (peak memory rows) and
bench/memory_probe.py, not here; these tests check that each bound reaches the component it
bounds: DuckDB's settings, Arrow's allocator, the local broker's JVM.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from runledger import settings as settings_module
from runledger.kafka_local import LocalKafka, free_port
from runledger.projector.store import Store
from runledger.query import memory
from runledger.settings import Settings


def _duckdb_setting(store: Store, name: str) -> str:
    return store.con.execute("SELECT value FROM duckdb_settings() WHERE name = ?", [name]).fetchone()[0]


def test_store_applies_the_allocator_flush_and_checkpoint_bounds(tmp_path: Path) -> None:
    store = Store(tmp_path / "rl.duckdb", threads=1, memory_limit="300MiB", allocator_flush_mb=16, checkpoint_mb=8)
    try:
        assert _duckdb_setting(store, "allocator_flush_threshold") in ("16MiB", "16.0 MiB")
        assert _duckdb_setting(store, "checkpoint_threshold") == "8.0 MiB"
        assert _duckdb_setting(store, "memory_limit") == "300.0 MiB"
    finally:
        store.close()


@pytest.mark.parametrize(("ram_gib", "expected"), [(64, "384MiB"), (1.25, "320MiB"), (0.5, "256MiB")])
def test_default_duckdb_memory_limit_is_a_quarter_of_ram_between_256_and_384_mib(
        monkeypatch: pytest.MonkeyPatch, ram_gib: float, expected: str) -> None:
    monkeypatch.setattr(settings_module, "physical_memory_bytes", lambda: int(ram_gib * (1 << 30)))
    assert settings_module.default_duckdb_memory_limit() == expected


def test_memory_settings_have_their_documented_defaults() -> None:
    s = Settings.from_env({})
    assert (s.memory_release_mb, s.malloc_arenas, s.arrow_memory_pool, s.duckdb_allocator_flush_mb,
            s.duckdb_checkpoint_mb) == (16, 2, "system", 16, 16)


def _pool_after_configure(pool: str, env: dict[str, str] | None = None) -> str:
    code = ("from runledger.query import memory; import pyarrow as pa; "
            f"memory.configure(16, 2, {pool!r}); print(pa.default_memory_pool().backend_name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", **(env or {})})
    return out.stdout.strip()


def _big_block_mapped(threshold_kb: int) -> bool:
    """In a fresh process configured with `threshold_kb`: after a 1 MiB block was freed (which
    raises glibc's own threshold to 1 MiB), does a 300 KiB block get a mapping of its own?"""
    code = ("import ctypes; from runledger.query import memory; from runledger.memory_trace import _mallinfo2; "
            f"memory.configure(16, 2, 'system', {threshold_kb}); libc = ctypes.CDLL('libc.so.6'); "
            "libc.malloc.restype = ctypes.c_void_p; libc.free.argtypes = [ctypes.c_void_p]; "
            "libc.free(libc.malloc(1 << 20)); before = _mallinfo2().hblkhd; p = libc.malloc(300 << 10); "
            "print(_mallinfo2().hblkhd - before >= 300 << 10)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"})
    return out.stdout.strip() == "True"


def test_mmap_threshold_setting_gives_big_blocks_their_own_mapping() -> None:
    from runledger.memory_trace import _mallinfo2
    if _mallinfo2 is None:
        pytest.skip("glibc's mallinfo2 is not available here")
    assert _big_block_mapped(256) is True
    assert _big_block_mapped(0) is False    # glibc's default: the threshold rose with the freed 1 MiB block
    assert Settings.from_env({}).malloc_mmap_threshold_kb == 0


def test_arrow_buffers_go_to_the_system_allocator_by_default() -> None:
    assert _pool_after_configure("system") == "system"


def test_arrow_pool_setting_default_keeps_arrows_own_allocator() -> None:
    assert _pool_after_configure("default") != "system"


def test_dev_broker_jvm_runs_with_a_bounded_serial_gc_heap_and_two_malloc_arenas(tmp_path: Path) -> None:
    broker = LocalKafka(home=tmp_path / "kafka", port=free_port(), controller_port=free_port())
    broker.start()
    try:
        pid = broker.running_pid()
        assert pid is not None
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"-Xmx192m" in argv and b"-XX:+UseSerialGC" in argv and b"-XX:+UseG1GC" not in argv
        assert b"MALLOC_ARENA_MAX=2" in environ
        assert "log.cleaner.dedupe.buffer.size=8388608" in (tmp_path / "kafka" / "server.properties").read_text()
    finally:
        broker.stop()


# ----- the idle trim (docs/memory.md, "Idle trim")

def _buffer_pool_mb(store: Store) -> float:
    row = store.con.execute("SELECT sum(memory_usage_bytes) / 1048576 FROM duckdb_memory()").fetchone()
    return float(row[0] or 0)


def _filled_store(tmp_path: Path) -> Store:
    """A locked-down store (as the server runs it) whose buffer pool holds a table just read."""
    from runledger.query.sql.engine import SqlEngine, SqlLimits
    store = Store(tmp_path / "rl.duckdb", threads=1, memory_limit="256MiB")
    store.con.execute("CREATE TABLE filler AS SELECT i AS step, random() AS v FROM range(6000000) t(i)")
    store.con.execute("CHECKPOINT")
    SqlEngine(store, "t", SqlLimits()).prepare("latest_metrics")
    store.con.execute("SELECT sum(v), max(step) FROM filler").fetchall()
    return store


def test_release_buffers_drops_duckdbs_cached_blocks_and_keeps_its_memory_limit(tmp_path: Path) -> None:
    store = _filled_store(tmp_path)
    try:
        assert _buffer_pool_mb(store) > 40
        assert store.release_buffers("16MiB") is True
        assert _buffer_pool_mb(store) < 20
        assert _duckdb_setting(store, "memory_limit") == "256.0 MiB"
        assert store.con.execute("SELECT count(*) FROM filler").fetchone() == (6000000,)  # read back from the file
    finally:
        store.close()


def test_release_buffers_does_nothing_while_the_projector_holds_the_writers_lock(tmp_path: Path) -> None:
    store = _filled_store(tmp_path)
    try:
        before = _buffer_pool_mb(store)
        with store._lock:
            assert store.release_buffers("16MiB") is False
        assert _buffer_pool_mb(store) == before
    finally:
        store.close()


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _trim(idle_s: float = 3.0) -> tuple[_Clock, memory.Activity, memory.IdleTrim, list[int]]:
    clock = _Clock()
    activity = memory.Activity(clock)
    calls: list[int] = []
    return clock, activity, memory.IdleTrim(activity, lambda: calls.append(1) is None, idle_s), calls


def test_idle_trim_runs_once_per_quiet_spell_after_idle_seconds() -> None:
    clock, activity, trim, calls = _trim(3.0)
    activity.touch()
    clock.now += 2.9
    assert not trim.maybe_trim() and calls == []
    clock.now += 0.2
    assert trim.maybe_trim() and calls == [1]
    clock.now += 60
    assert not trim.maybe_trim() and calls == [1]      # still the same quiet spell
    activity.touch()                                    # a commit or request ends it
    clock.now += 3.1
    assert trim.maybe_trim() and calls == [1, 1]


def test_idle_trim_waits_while_a_request_is_in_flight() -> None:
    clock, activity, trim, calls = _trim(3.0)
    activity.in_flight = 1          # e.g. a long streamed history read
    clock.now += 100
    assert not trim.maybe_trim() and calls == []


def test_idle_trim_zero_seconds_means_never() -> None:
    clock, activity, trim, calls = _trim(0)
    clock.now += 100
    assert not trim.maybe_trim() and calls == []


def test_idle_trim_setting_defaults_to_three_seconds() -> None:
    assert Settings.from_env({}).memory_idle_trim_s == 3.0
    assert Settings.from_env({"RUNLEDGER_MEMORY_IDLE_TRIM_S": "0"}).memory_idle_trim_s == 0


def test_a_quiet_server_trims_after_its_writes_and_still_answers_from_the_file(make_server) -> None:  # type: ignore[no-untyped-def]
    import time

    import httpx
    server = make_server(RUNLEDGER_MEMORY_IDLE_TRIM_S="1")
    api = f"{server.url}/api/2.0/mlflow"
    with httpx.Client(timeout=30) as c:
        exp = c.post(f"{api}/experiments/create", json={"name": "trim"}).json()["experiment_id"]
        run = c.post(f"{api}/runs/create", json={"experiment_id": exp, "start_time": 0}).json()["run"]["info"]["run_id"]
        trims_before = server.log_path.read_text().count("idle trim: DuckDB buffers released")
        metrics = [{"key": "loss", "value": i / 10, "timestamp": 1_700_000_000_000 + i, "step": i} for i in range(1000)]
        c.post(f"{api}/runs/log-batch", json={"run_id": run, "metrics": metrics}).raise_for_status()
        deadline = time.monotonic() + 20
        while server.log_path.read_text().count("idle trim: DuckDB buffers released") <= trims_before:
            assert time.monotonic() < deadline, f"no idle trim after the write:\n{server.log_tail()}"
            time.sleep(0.2)
        history = c.get(f"{api}/metrics/get-history", params={"run_id": run, "metric_key": "loss"}).json()
    assert sorted(m["step"] for m in history["metrics"]) == list(range(1000))


# ----- walking DuckDB's eviction queues (docs/memory.md, "The soak")

def _glibc_in_use_mb() -> float:
    from runledger.memory_trace import _mallinfo2
    if _mallinfo2 is None:
        pytest.skip("glibc's mallinfo2 is not available here")
    return _mallinfo2().uordblks / 2**20


def _grouped_reads(store: Store, n: int) -> None:
    """Queries that build hash tables (a grouped read with a semi-join, on two threads), as the
    soak's readers do: each leaves dead entries in DuckDB's eviction queues."""
    with store.con.cursor() as cur:
        for _ in range(n):
            cur.execute("SELECT run_id, count(*), max(step) FROM m WHERE run_id IN (SELECT run_id FROM r) "
                        "GROUP BY run_id").fetchall()


def _store_with_reads(tmp_path: Path) -> Store:
    store = Store(tmp_path / "rl.duckdb", threads=2, memory_limit="256MiB")
    store.con.execute("CREATE TABLE r AS SELECT 'r' || i AS run_id FROM range(10) t(i)")
    store.con.execute("CREATE TABLE m AS SELECT 'r' || (i % 10) AS run_id, i AS step FROM range(300000) t(i)")
    store.con.execute("INSERT INTO m VALUES ('r1', -1)")   # rows not checkpointed yet, as on a server taking writes
    _grouped_reads(store, 200)   # warm-up: allocator caches, DuckDB's first queue storage
    return store


def test_purging_eviction_queues_frees_what_finished_queries_left_in_them(tmp_path: Path) -> None:
    import gc
    store = _store_with_reads(tmp_path)
    gc.collect()
    gc.disable()   # Python's own frees must not blur glibc's count
    try:
        before = _glibc_in_use_mb()
        _grouped_reads(store, 2000)
        grown = _glibc_in_use_mb() - before
        assert grown > 1.0, f"the reads left only {grown:.2f} MB: nothing to purge"
        assert store.purge_eviction_queues() is True
        left = _glibc_in_use_mb() - before
        assert left < grown * 0.6, f"{grown:.2f} MB grown, {left:.2f} MB left after the purge"
        assert _duckdb_setting(store, "memory_limit") == "256.0 MiB"
        assert store.con.execute("SELECT count(*) FROM m").fetchone() == (300001,)
    finally:
        gc.enable()
        store.close()


def test_purging_keeps_the_memory_limit_when_duckdb_holds_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "rl.duckdb", threads=1, memory_limit="256MiB")
    try:
        store.con.execute("CHECKPOINT")
        assert store.purge_eviction_queues() is True   # DuckDB may take the 1-byte limit here: it is put back
        assert _duckdb_setting(store, "memory_limit") == "256.0 MiB"
        assert store.con.execute("SELECT count(*) FROM range(100000)").fetchone() == (100000,)
    finally:
        store.close()


def test_purging_does_nothing_while_the_projector_holds_the_writers_lock(tmp_path: Path) -> None:
    store = Store(tmp_path / "rl.duckdb", threads=1, memory_limit="256MiB")
    try:
        with store._lock:
            assert store.purge_eviction_queues() is False
    finally:
        store.close()


def _busy(purge_s: float = 30.0, results: list[bool] | None = None
          ) -> tuple[_Clock, memory.Activity, memory.IdleTrim, list[int]]:
    clock = _Clock()
    activity = memory.Activity(clock)
    calls: list[int] = []
    answers = iter(results or [])

    def purge() -> bool:
        calls.append(1)
        return next(answers, True)
    return clock, activity, memory.IdleTrim(activity, lambda: True, 0, purge=purge, purge_s=purge_s, clock=clock), calls


def test_busy_purge_runs_every_purge_seconds_at_a_moment_with_no_request_in_flight() -> None:
    clock, activity, trim, calls = _busy(30.0)
    activity.touch()                   # busy: never quiet for the idle trim
    clock.now += 29
    assert not trim.maybe_purge() and calls == []
    clock.now += 1
    activity.in_flight = 1
    assert not trim.maybe_purge() and calls == []
    activity.in_flight = 0
    assert trim.maybe_purge() and calls == [1] and trim.purges == 1
    clock.now += 10
    assert not trim.maybe_purge() and calls == [1]


def test_busy_purge_skips_a_server_at_rest_since_the_last_one() -> None:
    clock, activity, trim, calls = _busy(30.0)
    activity.touch()
    clock.now += 30
    assert trim.maybe_purge() and calls == [1]
    clock.now += 300                   # no request or commit since
    assert not trim.maybe_purge() and calls == [1]
    activity.touch()
    assert trim.maybe_purge() and calls == [1, 1]


def test_busy_purge_retries_when_the_projector_held_the_lock() -> None:
    clock, activity, trim, calls = _busy(30.0, results=[False, True])
    activity.touch()
    clock.now += 30
    assert not trim.maybe_purge() and trim.purges == 0
    assert trim.maybe_purge() and trim.purges == 1 and calls == [1, 1]


def test_an_idle_trim_counts_as_a_purge() -> None:
    clock = _Clock()
    activity = memory.Activity(clock)
    purges: list[int] = []
    trim = memory.IdleTrim(activity, lambda: True, 3.0, purge=lambda: purges.append(1) is None, purge_s=30.0,
                           clock=clock)
    clock.now += 29
    assert trim.maybe_trim()
    clock.now += 2
    assert not trim.purge_due() and not trim.maybe_purge() and purges == []


@pytest.mark.parametrize(("field", "variable", "default"), [
    ("memory_purge_s", "RUNLEDGER_MEMORY_PURGE_S", 30.0),
    ("memory_checkpoint_s", "RUNLEDGER_MEMORY_CHECKPOINT_S", 0.0),
])
def test_housekeeping_periods_default_and_turn_off_with_zero(field: str, variable: str, default: float) -> None:
    assert getattr(Settings.from_env({}), field) == default
    assert getattr(Settings.from_env({variable: "0"}), field) == 0


def test_purging_checkpoints_rows_the_wal_held_in_memory(tmp_path: Path) -> None:
    store = Store(tmp_path / "rl.duckdb", threads=1, memory_limit="256MiB")
    try:
        store.con.execute("CREATE TABLE m AS SELECT i AS step, 'loss' AS key FROM range(0) t(i)")
        store.con.execute("CHECKPOINT")
        for lo in range(0, 200000, 10000):   # commits smaller than a row group go through the WAL
            store.con.execute(f"INSERT INTO m SELECT i, 'loss' FROM range({lo}, {lo + 10000}) t(i)")
        wal = Path(store.path + ".wal")
        assert wal.exists() and wal.stat().st_size > Store.HOUSEKEEPING_CHECKPOINT_MIN_BYTES
        in_memory = store.con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory() "
                                      "WHERE tag = 'IN_MEMORY_TABLE'").fetchone()[0]
        assert in_memory > 1 << 20
        assert store.purge_eviction_queues() is True
        assert not wal.exists() or wal.stat().st_size < Store.HOUSEKEEPING_CHECKPOINT_MIN_BYTES
        left = store.con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory() "
                                 "WHERE tag = 'IN_MEMORY_TABLE'").fetchone()[0]
        assert left < in_memory / 4
        assert store.con.execute("SELECT count(*), max(step) FROM m").fetchone() == (200000, 199999)
    finally:
        store.close()


def _checkpointing(checkpoint_s: float, purge_s: float = 30.0) -> tuple[_Clock, memory.Activity, memory.IdleTrim,
                                                                         list[str]]:
    clock = _Clock()
    activity = memory.Activity(clock)
    calls: list[str] = []
    trim = memory.IdleTrim(activity, lambda: True, 0, purge=lambda: calls.append("purge") is None, purge_s=purge_s,
                           checkpoint=lambda: calls.append("checkpoint") is None, checkpoint_s=checkpoint_s,
                           clock=clock)
    return clock, activity, trim, calls


def test_housekeeping_checkpoints_every_checkpoint_seconds_even_with_requests_in_flight() -> None:
    clock, activity, trim, calls = _checkpointing(10.0)
    activity.touch()
    activity.in_flight = 3             # a busy server: the purge waits for a gap, the checkpoint does not
    clock.now += 9
    assert not trim.maybe_checkpoint() and calls == []
    clock.now += 1
    assert trim.maybe_checkpoint() and calls == ["checkpoint"] and trim.checkpoints == 1
    activity.touch()
    clock.now += 5
    assert not trim.maybe_checkpoint() and calls == ["checkpoint"]


def test_housekeeping_checkpoint_skips_a_server_at_rest() -> None:
    clock, activity, trim, calls = _checkpointing(10.0)
    activity.touch()
    clock.now += 10
    assert trim.maybe_checkpoint()
    clock.now += 100                   # nothing written or read since
    assert not trim.maybe_checkpoint() and calls == ["checkpoint"]


def test_a_purge_counts_as_a_housekeeping_checkpoint() -> None:
    clock, activity, trim, calls = _checkpointing(10.0, purge_s=30.0)
    activity.touch()
    clock.now += 30
    assert trim.maybe_purge() and calls == ["purge"]
    activity.touch()
    clock.now += 5
    assert not trim.checkpoint_due()
    clock.now += 5
    assert trim.maybe_checkpoint() and calls == ["purge", "checkpoint"]


def test_store_checkpoints_a_wal_holding_rows_in_memory_without_a_purge(store_256: Store) -> None:
    store_256.con.execute("CREATE TABLE m AS SELECT i AS step FROM range(0) t(i)")
    store_256.con.execute("CHECKPOINT")
    wal = Path(store_256.path + ".wal")
    store_256.con.execute("INSERT INTO m SELECT i FROM range(1000) t(i)")
    assert not store_256.checkpoint_small_wal()          # a small WAL is left alone
    for lo in range(0, 200000, 10000):
        store_256.con.execute(f"INSERT INTO m SELECT i FROM range({lo}, {lo + 10000}) t(i)")
    assert wal.stat().st_size > Store.HOUSEKEEPING_CHECKPOINT_MIN_BYTES
    reader = store_256.cursor()
    reader.execute("BEGIN TRANSACTION")               # a reader's open transaction does not stop it
    assert reader.execute("SELECT count(*) FROM m").fetchone() == (201000,)
    assert store_256.checkpoint_small_wal()
    assert not wal.exists() or wal.stat().st_size < Store.HOUSEKEEPING_CHECKPOINT_MIN_BYTES
    reader.execute("COMMIT")
    assert store_256.con.execute("SELECT count(*) FROM m").fetchone() == (201000,)


def test_store_checkpoint_does_nothing_while_the_projector_holds_the_writers_lock(store_256: Store) -> None:
    store_256.con.execute("CREATE TABLE m AS SELECT i AS step FROM range(0) t(i)")
    for lo in range(0, 200000, 10000):
        store_256.con.execute(f"INSERT INTO m SELECT i FROM range({lo}, {lo + 10000}) t(i)")
    wal = Path(store_256.path + ".wal")
    size = wal.stat().st_size
    assert size > Store.HOUSEKEEPING_CHECKPOINT_MIN_BYTES
    with store_256._lock:
        assert not store_256.checkpoint_small_wal()
    assert wal.stat().st_size == size
    assert store_256.checkpoint_small_wal()


def test_store_leaves_a_fast_writers_wal_to_duckdbs_own_threshold(tmp_path: Path) -> None:
    store = Store(tmp_path / "rl.duckdb", threads=1, memory_limit="256MiB", checkpoint_mb=64)
    try:
        store.con.execute("CREATE TABLE m AS SELECT i AS step, 'x' || i AS s FROM range(0) t(i)")
        wal = Path(store.path + ".wal")
        lo = 0
        while not wal.exists() or wal.stat().st_size <= Store.HOUSEKEEPING_CHECKPOINT_MAX_BYTES:
            store.con.execute(f"INSERT INTO m SELECT i, 'x' || i FROM range({lo}, {lo + 20000}) t(i)")
            lo += 20000
        size = wal.stat().st_size
        assert not store.checkpoint_small_wal()
        assert wal.stat().st_size == size
    finally:
        store.close()


@pytest.fixture
def store_256(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "rl.duckdb", threads=1, memory_limit="256MiB")
    yield store
    store.close()
