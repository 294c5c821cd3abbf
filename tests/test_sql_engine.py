"""The SQL engine's reuse of cursors between queries must never carry one caller's view of the
data over to the next: each query reads with its own caller's scope (docs/auth.md), whatever
the kept cursor last served."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from runledger.auth.access import ReadScope
from runledger.projector.store import Store
from runledger.query.sql import sandbox
from runledger.query.sql.engine import SqlEngine, SqlLimits
from runledger.query.sql.views import UNSCOPED_SCHEMA


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[SqlEngine]:
    store = Store(tmp_path / "runledger.duckdb")
    for exp in ("1", "2"):
        store.con.execute("INSERT INTO experiments VALUES (?, ?, '', 'active', 0, 0, NULL)", [exp, f"e{exp}"])
        store.con.execute("INSERT INTO runs VALUES (?, ?, 'r', 'u', 'RUNNING', 0, NULL, 'active', NULL, '')",
                          [f"run{exp}", exp])
        store.con.execute("INSERT INTO metrics VALUES (?, 'loss', 1.0, 5, 0)", [f"run{exp}"])
        store.con.execute("INSERT INTO latest_points VALUES (?, 'loss', 1.0, 5, 0, 1.0, 5, 0)", [f"run{exp}"])
    # One slot, so every query runs on the same kept cursor.
    eng = SqlEngine(store, "t", SqlLimits(max_concurrent=1))
    eng.prepare("latest_metrics")
    yield eng
    store.close()


def rows(engine: SqlEngine, query: str, scope: Any = None) -> list[tuple[Any, ...]]:
    engine.acquire()
    q = engine.open(query, scope=scope)
    out: list[tuple[Any, ...]] = []
    while (batch := q.next_batch()) is not None:
        out += list(zip(*(c.to_pylist() for c in batch.columns)))
    q.close()
    return sorted(out)


@pytest.mark.parametrize("view", ["runs", "metrics", "run_activity", "analytics.metrics"])
def test_a_kept_cursor_reads_with_each_callers_own_scope(engine: SqlEngine, view: str) -> None:
    query = f"SELECT run_id FROM {view}"
    everyone = [("run1",), ("run2",)]
    assert rows(engine, query) == everyone
    assert rows(engine, query, ReadScope("allow", ("1",))) == [("run1",)]
    assert rows(engine, query, ReadScope("allow", ("2",))) == [("run2",)]
    assert rows(engine, query, ReadScope("deny", ("1",))) == [("run2",)]
    assert rows(engine, query, ReadScope("allow", ())) == []
    assert rows(engine, query) == everyone
    assert len(engine._idle) == 1, "the cursor was not kept: the test did not exercise reuse"


def test_a_failed_query_leaves_the_next_one_working(engine: SqlEngine) -> None:
    engine.acquire()
    with pytest.raises(Exception, match="no_such_column"):
        # The query is bound when it runs: its first batch.
        engine.open("SELECT no_such_column FROM runs").next_batch()
    assert rows(engine, "SELECT count(*) FROM runs", ReadScope("allow", ("1",))) == [(1,)]


def test_the_unfiltered_views_cannot_be_named_in_a_query() -> None:
    with pytest.raises(sandbox.SqlRefused, match="not allowed"):
        sandbox.check(f"SELECT * FROM {UNSCOPED_SCHEMA}.metrics")


def test_without_duckdbs_direct_call_the_relation_api_gives_the_same_answer(
        engine: SqlEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    import duckdb
    query = "SELECT run_id, count(*) AS n, max(timestamp) AS t FROM metrics GROUP BY run_id"
    engine.acquire()
    direct = engine.open(query)
    direct_rows = rows_of_query(direct)
    monkeypatch.delattr(duckdb, "_seam")
    engine.acquire()
    fallback = engine.open(query)
    assert rows_of_query(fallback) == direct_rows == [("run1", 1, 5), ("run2", 1, 5)]
    assert fallback.columns == direct.columns == [
        {"name": "run_id", "type": "VARCHAR"}, {"name": "n", "type": "BIGINT"}, {"name": "t", "type": "BIGINT"}]


def rows_of_query(q: Any) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    while (batch := q.next_batch()) is not None:
        out += list(zip(*(c.to_pylist() for c in batch.columns)))
    q.close()
    return sorted(out)


def perfect_hash_threshold(engine: SqlEngine) -> int:
    """The perfect hash aggregate setting the kept cursor's last query ran with (session state
    persists on the cursor; read with our own statement, which queries may not run)."""
    (kept,) = engine._idle
    row = kept.cur.execute("SELECT current_setting('perfect_ht_threshold')").fetchone()
    assert row is not None
    return int(row[0])


def test_quantiles_by_step_run_on_the_hash_aggregate_and_sums_keep_the_perfect_one(engine: SqlEngine) -> None:
    # A step range DuckDB would group with its perfect hash aggregate, which finalizes every
    # group on one thread (query.sql.engine.HOLISTIC_AGGREGATES).
    engine.store.con.execute("INSERT INTO metrics SELECT 'run1', 'acc', i / 7, 6, i % 40 FROM range(400) t(i)")
    bands = ("SELECT step, quantile_cont(value, [0.1, 0.5, 0.9]) AS q, median(value) AS m, count(*) AS n "
             "FROM metrics WHERE key = 'acc' GROUP BY step ORDER BY step")
    expected = engine.store.con.execute(bands.replace("FROM metrics", "FROM main.metrics")).fetchall()
    default = perfect_hash_threshold_of(engine.store.con)

    assert rows(engine, bands) == sorted(expected)
    assert perfect_hash_threshold(engine) == 0
    assert rows(engine, "SELECT step, sum(value) FROM metrics GROUP BY step") == sorted(
        engine.store.con.execute("SELECT step, sum(value) FROM main.metrics GROUP BY step").fetchall())
    assert perfect_hash_threshold(engine) == default > 0
    assert rows(engine, bands, ReadScope("allow", ("1",))) == sorted(expected)
    assert perfect_hash_threshold(engine) == 0


def perfect_hash_threshold_of(con: Any) -> int:
    row = con.execute("SELECT current_setting('perfect_ht_threshold')").fetchone()
    assert row is not None
    return int(row[0])


def _memory_limit_mib(store: Store) -> float:
    with store.con.cursor() as cur:
        row = cur.execute("SELECT current_setting('memory_limit')").fetchone()
    assert row is not None
    number, unit = str(row[0]).split()
    return float(number) * {"MiB": 1, "GiB": 1024}[unit]


def test_sql_queries_run_with_the_memory_limit_raised_by_the_sql_budget_and_it_comes_back_when_idle(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A query's intermediates must fit beside the cached blocks of what it scans: under the
    # server's usual limit alone, a quantile per step over 10M points evicted the blocks it was
    # reading and read them again (docs/sql.md, "What a query may do").
    from runledger.query.sql import engine as engine_module
    monkeypatch.setattr(engine_module, "_THREADS_IDLE_S", 0.2)
    store = Store(tmp_path / "runledger.duckdb", threads=1, memory_limit="256MiB")
    try:
        eng = SqlEngine(store, "t", SqlLimits(memory_mb=100, threads=2, idle_threads=1, idle_memory_mb=256))
        eng.prepare("latest_metrics")
        assert _memory_limit_mib(store) == 256
        eng.acquire()
        q = eng.open("SELECT 1")
        assert _memory_limit_mib(store) == 256 + 100
        q.next_batch()
        q.close()
        deadline = time.monotonic() + 10
        while _memory_limit_mib(store) != 256 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _memory_limit_mib(store) == 256, "the limit stayed raised after SQL went idle"
    finally:
        store.close()


def test_the_memory_limit_is_left_alone_when_the_server_sets_none(tmp_path: Path) -> None:
    store = Store(tmp_path / "runledger.duckdb", threads=1)
    try:
        before = _memory_limit_mib(store) if "iB" in _setting(store) else _setting(store)
        eng = SqlEngine(store, "t", SqlLimits(memory_mb=100, threads=2, idle_threads=1))
        eng.prepare("latest_metrics")
        eng.acquire()
        eng.open("SELECT 1").close()
        assert (_memory_limit_mib(store) if "iB" in _setting(store) else _setting(store)) == before
    finally:
        store.close()


def _setting(store: Store) -> str:
    with store.con.cursor() as cur:
        row = cur.execute("SELECT current_setting('memory_limit')").fetchone()
    assert row is not None
    return str(row[0])
