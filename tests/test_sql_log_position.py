"""A SQL answer's log position names exactly the events its snapshot holds, whether the engine
takes it from the offsets the projector's last commit stored (no query) or reads it from the
snapshot (a commit began in between), and a JSON answer's TIMESTAMP text is ISO 8601 as before."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Iterator

import orjson
import pyarrow as pa
import pytest

from runledger.projector.fold import BatchChanges
from runledger.projector.store import Store
from runledger.query.sql import formats
from runledger.query.sql.engine import SqlEngine, SqlLimits

TOPIC = "t"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "runledger.duckdb")
    yield s
    s.close()


def engine_on(store: Store) -> SqlEngine:
    eng = SqlEngine(store, TOPIC, SqlLimits(max_concurrent=2))
    eng.partitions = [0, 1]
    eng.prepare("latest_metrics")
    return eng


def position_and_events(eng: SqlEngine) -> tuple[dict[str, int], int]:
    eng.acquire()
    q = eng.open("SELECT count(*) FROM events")
    batch = q.next_batch()
    assert batch is not None
    q.close()
    return q.log_position, batch.column(0)[0].as_py()


def test_the_offsets_are_unknown_until_the_store_has_read_them(store: Store) -> None:
    assert store.committed_offsets(TOPIC) is None
    store.offsets(TOPIC)
    assert store.committed_offsets(TOPIC) == (store.commits_begun(), {})


def test_each_commit_moves_the_count_and_the_known_offsets(store: Store) -> None:
    store.offsets(TOPIC)
    before = store.commits_begun()
    store.apply(BatchChanges(), TOPIC, {0: 5})
    store.apply(BatchChanges(), TOPIC, {1: 3})
    assert store.committed_offsets(TOPIC) == (before + 2, {0: 5, 1: 3})
    assert store.offsets(TOPIC) == {0: 5, 1: 3}


def test_a_commit_under_way_makes_the_offsets_unknown(store: Store) -> None:
    store.offsets(TOPIC)
    seen: list[object] = []
    real = store._writer

    class Watching:
        """The writer cursor, noting what a reader would be told while COMMIT runs."""
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def execute(self, sql: str, *args: object) -> object:
            if sql == "COMMIT":
                seen.append(store.committed_offsets(TOPIC))
            return real.execute(sql, *args)

    store._writer = Watching()  # type: ignore[assignment]
    try:
        store.apply(BatchChanges(), TOPIC, {0: 7})
    finally:
        store._writer = real
    assert seen == [None]
    assert store.committed_offsets(TOPIC) == (store.commits_begun(), {0: 7})


def test_the_answer_names_the_offsets_of_the_last_commit(store: Store) -> None:
    store.offsets(TOPIC)
    eng = engine_on(store)
    store.apply(BatchChanges(), TOPIC, {0: 4, 1: 9})
    position, _ = position_and_events(eng)
    assert position == {"0": 4, "1": 9}


def test_a_commit_between_the_offsets_and_the_snapshot_is_read_from_the_snapshot(store: Store) -> None:
    """The engine reads the count, begins and takes its snapshot (SET schema); a commit that
    begins in between makes it read the offsets table in its own snapshot, which then holds
    that commit."""
    store.offsets(TOPIC)
    eng = engine_on(store)
    store.apply(BatchChanges(), TOPIC, {0: 1})
    real = store.commits_begun

    def commit_during_bind() -> int:
        store.commits_begun = real  # type: ignore[method-assign]
        store.apply(BatchChanges(), TOPIC, {0: 2})
        return real()

    # Called once by the engine after the snapshot is bound; the commit lands before it
    # returns, so the answer's snapshot holds {0: 1} while the store already knows {0: 2}.
    store.commits_begun = commit_during_bind  # type: ignore[method-assign]
    position, _ = position_and_events(eng)
    assert position == {"0": 1, "1": 0}
    assert position_and_events(eng)[0] == {"0": 2, "1": 0}


def test_a_rebuilt_read_model_forgets_the_offsets(store: Store) -> None:
    store.offsets(TOPIC)
    store.apply(BatchChanges(), TOPIC, {0: 4})
    store.rebuild()
    assert store.committed_offsets(TOPIC) is None


def test_json_timestamps_are_iso_text_with_a_fraction_only_when_there_is_one() -> None:
    values = [datetime.datetime(2023, 11, 14, 22, 13, 20), datetime.datetime(2023, 11, 14, 22, 13, 20, 123456),
              datetime.datetime(1969, 12, 31, 23, 59, 59, 999999), datetime.datetime(1, 1, 1), None,
              datetime.datetime(9999, 12, 31, 23, 59, 59, 999999), datetime.datetime(1970, 1, 1, 0, 0, 0, 1)]
    column = pa.array(values, pa.timestamp("us"))
    assert formats.column_values(column) == orjson.loads(orjson.dumps(values))
    assert formats.column_values(column)[:2] == ["2023-11-14T22:13:20", "2023-11-14T22:13:20.123456"]


def test_json_rows_keep_column_order_and_types() -> None:
    batch = pa.record_batch({"a": pa.array([1, None]), "b": pa.array(["x", "y"]),
                             "c": pa.array([float("nan"), 1.5])})
    assert orjson.loads(formats.dumps(formats.rows_of(batch))) == [[1, "x", "NaN"], [None, "y", 1.5]]
