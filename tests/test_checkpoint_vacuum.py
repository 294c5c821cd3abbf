"""DuckDB's checkpoint does not merge row groups in the read model (issue 22, item 2: the
streaming lag peaks were checkpoints rewriting the short row groups that streamed commits of a
row group and a bit leave behind; docs/streaming.md, "Checkpoints")."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from runledger.ingest.contract import metric_table
from runledger.projector.consumer import GROUP_COMMIT_POINTS
from runledger.projector.fold import BatchChanges
from runledger.projector.store import Store
from runledger.settings import Settings

# A streamed commit as the committer gathers them: seven 20,000-point requests.
COMMIT_POINTS = 140_000
COMMITS = 4


def _changes(first_step: int) -> BatchChanges:
    changes = BatchChanges()
    steps = pa.array(range(first_step, first_step + COMMIT_POINTS), pa.int64())
    changes.metrics.add("run-1", pa.Table.from_arrays(
        [pa.array(["loss"] * COMMIT_POINTS), steps.cast(pa.float64()), steps, steps], schema=metric_table.SCHEMA))
    return changes


def _metrics_row_groups_after_checkpoint(store: Store) -> list[int]:
    for i in range(COMMITS):
        store.apply(_changes(i * COMMIT_POINTS), "t", {0: i + 1})
    store.con.execute("CHECKPOINT")
    rows = store.con.execute("SELECT row_group_id, max(count) FROM pragma_storage_info('metrics') "
                             "GROUP BY row_group_id ORDER BY row_group_id").fetchall()
    return [n for _, n in rows]


def test_vacuum_is_off_by_default() -> None:
    assert Settings.from_env({}).duckdb_vacuum_tasks == 0


def test_a_checkpoint_leaves_the_short_row_groups_of_streamed_commits_as_they_are(tmp_path: Path) -> None:
    store = Store(tmp_path / "rl.duckdb", threads=1)
    try:
        groups = _metrics_row_groups_after_checkpoint(store)
    finally:
        store.close()
    short = COMMIT_POINTS - GROUP_COMMIT_POINTS
    assert groups == [GROUP_COMMIT_POINTS, short] * COMMITS


def test_with_vacuum_tasks_duckdb_merges_them_again(tmp_path: Path) -> None:
    # RUNLEDGER_DUCKDB_VACUUM_TASKS=100 (DuckDB's own default) gives DuckDB's behaviour back.
    store = Store(tmp_path / "rl.duckdb", threads=1, vacuum_tasks=100)
    try:
        groups = _metrics_row_groups_after_checkpoint(store)
    finally:
        store.close()
    assert sum(groups) == COMMIT_POINTS * COMMITS
    assert len(groups) < 2 * COMMITS
