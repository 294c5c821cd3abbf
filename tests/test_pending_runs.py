"""What the projector remembers about folded-but-uncommitted batches (projector.pending): only
until they are committed, and never more than a bound (readers then wait for the commit)."""

from __future__ import annotations

from runledger.projector import pending
from runledger.projector.fold import BatchChanges
from runledger.projector.fold_cache import FoldCache, RunEntry
from runledger.projector.rows import ExperimentRow, LatestPoint, RunRow


def _changes(*run_ids: str, key: str = "m") -> BatchChanges:
    ch = BatchChanges()
    for run_id in run_ids:
        ch.latest["timestamp"][(run_id, key)] = LatestPoint(1.0, 1, 0)
    return ch


def _cache(*run_ids: str) -> FoldCache:
    cache = FoldCache()
    cache.experiments = {"1": ExperimentRow("1", "e", "file:///a", "active", 0, 0, None)}
    for run_id in run_ids:
        cache.runs[run_id] = RunEntry(RunRow(run_id, "1", "n", "u", "RUNNING", 0, None, "active", None, "file:///a"))
    return cache


def test_a_run_changed_by_an_uncommitted_batch_is_answered_from_memory_until_that_batch_is_committed() -> None:
    p, cache = pending.PendingRuns(), _cache("a", "b")
    p.note(1, _changes("a"))
    assert isinstance(p.hot_run("a", cache, "timestamp", released=1, committed=0), pending.HotRun)
    assert p.hot_run("b", cache, "timestamp", released=1, committed=0) == pending.COMMITTED
    p.committed(1)
    assert len(p) == 0
    assert p.hot_run("a", cache, "timestamp", released=1, committed=1) == pending.COMMITTED


def test_uncommitted_lists_the_keys_every_pending_batch_changed() -> None:
    p = pending.PendingRuns()
    p.note(1, _changes("a", key="x"))
    p.note(2, _changes("b", key="y"))
    found = p.uncommitted(released=2, committed=0)
    assert found is not None and found.runs == {"a", "b"} and found.keys.metrics == {"x", "y"}
    assert not found.keys.rows
    later = p.uncommitted(released=2, committed=1)
    assert later is not None and later.runs == {"b"}


def test_past_the_bound_nothing_is_tracked_and_readers_wait(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(pending, "_MAX_TRACKED", 3)
    p, cache = pending.PendingRuns(), _cache("a", "b", "c", "d")
    p.note(1, _changes("a", "b"))
    p.note(2, _changes("c", "d"))       # would make 4 runs: not tracked
    assert len(p) == 2
    assert p.hot_run("a", cache, "timestamp", released=2, committed=0) is None
    assert p.uncommitted(released=2, committed=0) is None
    p.committed(2)
    assert len(p) == 0
