"""The memory bounds of docs/memory.md are applied where they take effect (issue 22, item 3).

How much memory they save is measured by `make bench` (peak memory rows) and
bench/memory_probe.py, not here; these tests check that each bound reaches the component it
bounds: DuckDB's settings, Arrow's allocator, the local broker's JVM.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runledger import settings as settings_module
from runledger.kafka_local import LocalKafka, free_port
from runledger.projector.store import Store
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


@pytest.mark.parametrize(("ram_gib", "expected"), [(64, "1024MiB"), (2, "512MiB"), (0.5, "256MiB")])
def test_default_duckdb_memory_limit_is_a_quarter_of_ram_between_256_mib_and_1_gib(
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
