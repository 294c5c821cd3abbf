"""`runledger verify` rebuilds the read model in an in-memory DuckDB database (runledger/cli.py,
`in_memory_store`): the same Store and schema as the live file, spilling to the command's
temporary folder once the rebuild outgrows the memory limit, so a log larger than memory still
verifies."""

from __future__ import annotations

from pathlib import Path

from runledger.cli import in_memory_store, rebuild_in_memory, size_bytes


def test_the_rebuild_is_an_in_memory_store_with_the_read_models_tables(tmp_path: Path) -> None:
    store = in_memory_store(str(tmp_path), threads=1, memory_limit="64MiB")
    try:
        assert store.path == ":memory:"
        tables = {r[0] for r in store.con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()}
        assert {"metrics", "runs", "params", "tags", "event_log"} <= tables
        assert not list(tmp_path.iterdir())   # nothing written while it fits in memory
    finally:
        store.close()


def test_a_rebuild_larger_than_the_memory_limit_spills_to_the_temporary_folder(tmp_path: Path) -> None:
    store = in_memory_store(str(tmp_path), threads=1, memory_limit="24MiB")
    try:
        # ~3M points of distinct run ids: well over 100 MB uncompressed, four times the limit.
        store.con.execute("""
            INSERT INTO metrics
            SELECT md5(i::VARCHAR), 'loss', i / 7, i, i FROM range(3000000) t(i)""")
        assert store.con.execute("SELECT count(*), sum(step) FROM metrics").fetchone() == (
            3_000_000, 3_000_000 * 2_999_999 // 2)
        spilled = sum(f.stat().st_size for f in tmp_path.iterdir() if f.is_file())
        assert spilled > 24 << 20
    finally:
        store.close()


def test_a_read_model_is_rebuilt_in_memory_only_if_twelve_times_its_live_size_fits_the_memory_limit() -> None:
    assert size_bytes("384MiB") == 384 << 20 and size_bytes("2GB") == 2 * 10 ** 9 and size_bytes("1.5 GiB") == 3 << 29
    assert rebuild_in_memory(13_000_000, "256MiB")        # the audit bench's 1M points: ~13 MB live
    assert not rebuild_in_memory(30_000_000, "256MiB")
    assert rebuild_in_memory(30_000_000, "1GiB")
    assert not rebuild_in_memory(1, None)
