"""The projector's committer gathers streamed points into commits of a DuckDB row group
(projector.consumer.Committer): cheaper per point, and never in the way of a reader or of a
small (synchronous) write."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow as pa

from runledger.ingest.contract import metric_table
import pytest

from runledger.projector import consumer
from runledger.projector.consumer import GROUP_COMMIT_POINTS, STREAM_COMMIT_POINTS, Committer
from runledger.projector.fold import BatchChanges
from runledger.projector.store import Store

TOPIC = "t"
# Far longer than a commit takes even on a loaded machine: finishing well before it proves
# that nothing waited for it.
LONG_WAIT_S = 30.0


@pytest.fixture
def long_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer, "GROUP_COMMIT_WAIT_S", LONG_WAIT_S)


def _changes(points: int, first_step: int) -> BatchChanges:
    changes = BatchChanges()
    steps = pa.array(range(first_step, first_step + points), pa.int64())
    changes.metrics.add("run-1", pa.Table.from_arrays(
        [pa.array(["loss"] * points), steps.cast(pa.float64()), steps, steps], schema=metric_table.SCHEMA))
    return changes


class _Recorder:
    """Commits as the committer reports them: (seq, offsets, points, when)."""

    def __init__(self) -> None:
        self.commits: list[tuple[int, dict[int, int], int, float]] = []
        self.failures: list[BaseException] = []
        self.event = threading.Event()

    def committed(self, seq: int, offsets: dict[int, int], points: int) -> None:
        self.commits.append((seq, offsets, points, time.monotonic()))
        self.event.set()

    def wait(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.commits) < count and time.monotonic() < deadline:
            self.event.wait(0.01)
            self.event.clear()
        assert len(self.commits) >= count, self.commits


def _committer(tmp_path: Path) -> tuple[Store, Committer, _Recorder]:
    store = Store(tmp_path / "rm.duckdb")
    recorder = _Recorder()
    return store, Committer(store, TOPIC, recorder.committed, recorder.failures.append), recorder


def test_streamed_batches_smaller_than_a_row_group_are_committed_together(tmp_path: Path, long_wait: None) -> None:
    store, committer, recorder = _committer(tmp_path)
    try:
        per_batch = GROUP_COMMIT_POINTS // 3 + 1
        for seq in (1, 2, 3):
            committer.submit(_changes(per_batch, seq * per_batch), {0: seq}, seq, per_batch)
        recorder.wait(1)
        assert [(seq, offsets, points) for seq, offsets, points, _ in recorder.commits] == [(3, {0: 3}, 3 * per_batch)]
        with store.cursor() as cur:
            assert cur.execute("SELECT count(*) FROM metrics").fetchone() == (3 * per_batch,)
        assert store.offsets(TOPIC) == {0: 3}
    finally:
        committer.stop()
        store.close()


def test_gathering_ends_after_the_wait_when_no_more_points_come(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer, "GROUP_COMMIT_WAIT_S", 0.5)
    store, committer, recorder = _committer(tmp_path)
    try:
        start = time.monotonic()
        committer.submit(_changes(STREAM_COMMIT_POINTS, 0), {0: 1}, 1, STREAM_COMMIT_POINTS)
        recorder.wait(1, timeout=20)
        assert recorder.commits[0][3] - start >= 0.45
    finally:
        committer.stop()
        store.close()


def test_a_reader_waiting_for_visibility_ends_the_gathering_at_once(tmp_path: Path, long_wait: None) -> None:
    store, committer, recorder = _committer(tmp_path)
    try:
        store.visibility.release(1)
        committer.submit(_changes(STREAM_COMMIT_POINTS, 0), {0: 1}, 1, STREAM_COMMIT_POINTS)
        start = time.monotonic()
        store.visibility.wait(10)   # what every read does first (read-your-writes)
        assert time.monotonic() - start < LONG_WAIT_S / 3
        assert recorder.commits and recorder.commits[0][0] == 1
    finally:
        committer.stop()
        store.close()


def test_a_small_batch_is_committed_without_waiting(tmp_path: Path, long_wait: None) -> None:
    store, committer, recorder = _committer(tmp_path)
    try:
        start = time.monotonic()
        committer.submit(_changes(3, 0), {0: 1}, 1, 3)
        recorder.wait(1)
        assert recorder.commits[0][3] - start < LONG_WAIT_S / 3
    finally:
        committer.stop()
        store.close()


def test_stopping_commits_what_is_being_gathered(tmp_path: Path, long_wait: None) -> None:
    store, committer, recorder = _committer(tmp_path)
    try:
        committer.submit(_changes(STREAM_COMMIT_POINTS, 0), {0: 1}, 1, STREAM_COMMIT_POINTS)
        start = time.monotonic()
        committer.stop()
        assert time.monotonic() - start < LONG_WAIT_S / 3
        assert [c[0] for c in recorder.commits] == [1]
        assert store.offsets(TOPIC) == {0: 1}
    finally:
        store.close()


def test_a_commit_nearly_a_row_group_large_waits_a_little_longer_for_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Six streamed requests of 20,000 points are 120,000, just short of a row group: committed
    # as they are, they would go through DuckDB's WAL and feed the next checkpoint.
    monkeypatch.setattr(consumer, "GROUP_COMMIT_WAIT_S", 0.2)
    monkeypatch.setattr(consumer, "GROUP_COMMIT_NEAR_WAIT_S", LONG_WAIT_S)
    store, committer, recorder = _committer(tmp_path)
    try:
        near = consumer.GROUP_COMMIT_NEAR_POINTS
        committer.submit(_changes(near, 0), {0: 1}, 1, near)
        time.sleep(1.0)             # well past GROUP_COMMIT_WAIT_S
        rest = GROUP_COMMIT_POINTS - near
        committer.submit(_changes(rest, near), {0: 2}, 2, rest)
        recorder.wait(1)
        assert [(seq, points) for seq, _, points, _ in recorder.commits] == [(2, GROUP_COMMIT_POINTS)]
    finally:
        committer.stop()
        store.close()


def test_a_commit_far_from_a_row_group_waits_only_the_short_wait(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer, "GROUP_COMMIT_WAIT_S", 0.2)
    monkeypatch.setattr(consumer, "GROUP_COMMIT_NEAR_WAIT_S", LONG_WAIT_S)
    store, committer, recorder = _committer(tmp_path)
    try:
        start = time.monotonic()
        committer.submit(_changes(STREAM_COMMIT_POINTS, 0), {0: 1}, 1, STREAM_COMMIT_POINTS)
        recorder.wait(1, timeout=20)
        assert recorder.commits[0][3] - start < LONG_WAIT_S / 3
    finally:
        committer.stop()
        store.close()
