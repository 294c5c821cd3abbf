"""runledger.memory_trace: the soak's account of where the server's resident memory sits."""

from __future__ import annotations

import json
import time
from pathlib import Path

import duckdb

from runledger import memory_trace


def test_a_sample_splits_rss_into_glibc_duckdb_and_arrow_accounts(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "x.duckdb"))
    con.execute("CREATE TABLE t AS SELECT range AS i FROM range(200000)")
    row = memory_trace.sample(con.cursor)
    assert row["rss"] > 0 and 0 < row["anon"] <= row["rss"]
    assert row["malloc"]["in_use"] > 0               # glibc (mallinfo2)
    assert row["duckdb_total"] == sum(row["duckdb"].values()) > 0
    assert row["database"]["memory_limit"] not in (None, "None")
    assert row["arrow"] >= 0 and row["threads"] >= 1


def test_a_sample_counts_duckdbs_own_allocator_where_the_wheel_exports_it(tmp_path: Path) -> None:
    if memory_trace._je_mallctl is None:   # not a Linux wheel of DuckDB: nothing to read
        assert "jemalloc" not in memory_trace.sample()
        return
    con = duckdb.connect(str(tmp_path / "x.duckdb"))
    con.execute("CREATE TABLE t AS SELECT range AS i, random() AS v FROM range(2000000)")
    je = memory_trace.sample(con.cursor)["jemalloc"]
    assert je["allocated"] > 8 << 20          # the table's blocks live in DuckDB's jemalloc
    assert je["resident"] >= je["active"] >= je["allocated"]


def test_the_trace_appends_a_json_line_per_interval_until_stopped(tmp_path: Path) -> None:
    con = duckdb.connect(":memory:")
    path = tmp_path / "trace.jsonl"
    stop = memory_trace.start(path, 0.05, con.cursor)
    time.sleep(0.4)
    stop.set()
    time.sleep(0.1)
    lines = path.read_text().splitlines()
    assert len(lines) >= 2
    assert all("rss" in json.loads(line) for line in lines)
