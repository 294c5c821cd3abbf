"""The DuckDB adapter on a real DuckDB file."""

from __future__ import annotations

from pathlib import Path

import duckdb

from runledger.projector.schema import SCHEMA_VERSION
from runledger.projector.store import Store


def test_a_read_model_from_another_schema_version_is_rebuilt_empty(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_info (version INTEGER)")
    con.execute("INSERT INTO schema_info VALUES (?)", [SCHEMA_VERSION - 1])
    con.execute("CREATE TABLE consumer_offsets (topic VARCHAR, \"partition\" INTEGER, next_offset BIGINT)")
    con.execute("INSERT INTO consumer_offsets VALUES ('t', 0, 42)")
    con.close()
    store = Store(path)
    try:
        assert store.offsets("t") == {}  # replays from offset 0
        with store.cursor() as cur:
            assert cur.execute("SELECT max(version) FROM schema_info").fetchone() == (SCHEMA_VERSION,)
    finally:
        store.close()


def test_a_current_read_model_keeps_its_offsets(tmp_path: Path) -> None:
    path = tmp_path / "current.duckdb"
    store = Store(path)
    store.con.execute("INSERT INTO consumer_offsets VALUES ('t', 0, 42)")
    store.close()
    store = Store(path)
    try:
        assert store.offsets("t") == {0: 42}
    finally:
        store.close()
