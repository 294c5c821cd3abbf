"""The rendered-runs cache: what it keeps, what a commit drops, and the stores it refuses."""

from __future__ import annotations

from runledger.projector.fold import BatchChanges
from runledger.projector.rows import ExperimentRow, LatestPoint, RunRow
from runledger.projector.schema import LATEST_TABLES
from runledger.query.run_cache import _HISTORY, _NAMED_RUNS, RunCache

T, STEP = LATEST_TABLES["timestamp"], LATEST_TABLES["step"]


def test_a_stored_run_is_returned_until_it_is_dropped() -> None:
    cache = RunCache()
    cache.put(T, [("r1", "0", b'{"a":1}'), ("r2", "0", b'{"b":2}')], cache.token())
    assert cache.get(T, ["r1", "r2", "r3"]) == {"r1": b'{"a":1}', "r2": b'{"b":2}'}
    cache.drop(["r1"])
    assert cache.get(T, ["r1", "r2"]) == {"r2": b'{"b":2}'}


def test_each_latest_metrics_table_has_its_own_entries_and_a_drop_clears_all_of_them() -> None:
    cache = RunCache()
    cache.put(T, [("r1", "0", b"1")], cache.token())
    cache.put(STEP, [("r1", "0", b"2")], cache.token())
    assert cache.get(T, ["r1"]) == {"r1": b"1"}
    assert cache.get(STEP, ["r1"]) == {"r1": b"2"}
    cache.drop(["r1"])
    assert cache.get(T, ["r1"]) == {} and cache.get(STEP, ["r1"]) == {}


def test_dropping_an_experiment_drops_its_runs_only() -> None:
    cache = RunCache()
    cache.put(T, [("r1", "1", b"x"), ("r2", "2", b"y")], cache.token())
    cache.drop([], ["1"])
    assert cache.get(T, ["r1", "r2"]) == {"r2": b"y"}


def test_a_run_read_before_a_commit_that_dropped_it_is_not_stored() -> None:
    cache = RunCache()
    token = cache.token()          # a reader starts reading r1 and r2 ...
    cache.drop(["r1"])             # ... a commit changes r1 meanwhile ...
    cache.put(T, [("r1", "0", b"old"), ("r2", "0", b"ok")], token)   # ... and it stores what it read
    assert cache.get(T, ["r1", "r2"]) == {"r2": b"ok"}


def test_a_run_of_an_experiment_changed_since_the_token_is_not_stored() -> None:
    cache = RunCache()
    token = cache.token()
    cache.drop([], ["7"])
    cache.put(T, [("r1", "7", b"old"), ("r2", "8", b"ok")], token)
    assert cache.get(T, ["r1", "r2"]) == {"r2": b"ok"}


def test_a_token_older_than_the_remembered_commits_stores_nothing() -> None:
    cache = RunCache()
    token = cache.token()
    for i in range(_HISTORY + 1):
        cache.drop([f"other{i}"])
    cache.put(T, [("r1", "0", b"x")], token)
    assert cache.get(T, ["r1"]) == {}
    token = cache.token()
    for i in range(_HISTORY):
        cache.drop([f"other{i}"])
    cache.put(T, [("r1", "0", b"x")], token)   # every drop since the token is still known
    assert cache.get(T, ["r1"]) == {"r1": b"x"}


def test_a_commit_touching_very_many_runs_refuses_every_late_store() -> None:
    # such a commit is remembered as "every run" (bounded memory), so nothing read before it
    # may be stored after it, even a run it did not name
    cache = RunCache()
    token = cache.token()
    cache.drop([f"r{i}" for i in range(_NAMED_RUNS + 1)])
    cache.put(T, [("other", "0", b"x")], token)
    assert cache.get(T, ["other"]) == {}
    cache.put(T, [("other", "0", b"x")], cache.token())
    assert cache.get(T, ["other"]) == {"other": b"x"}


def test_the_least_recently_read_runs_leave_first_once_the_byte_budget_is_spent() -> None:
    cache = RunCache(max_bytes=30)
    cache.put(T, [(f"r{i}", "0", b"0123456789") for i in range(3)], cache.token())
    cache.get(T, ["r0"])                                  # r1 is now the least recently used
    cache.put(T, [("r3", "0", b"0123456789")], cache.token())
    assert sorted(cache.get(T, ["r0", "r1", "r2", "r3"])) == ["r0", "r2", "r3"]
    assert len(cache) == 3


def test_storing_a_run_again_replaces_it_and_its_bytes() -> None:
    cache = RunCache(max_bytes=25)
    cache.put(T, [("r1", "0", b"0123456789")], cache.token())
    for _ in range(5):
        cache.put(T, [("r1", "0", b"abcdefghij")], cache.token())
    cache.put(T, [("r2", "0", b"0123456789")], cache.token())
    assert cache.get(T, ["r1", "r2"]) == {"r1": b"abcdefghij", "r2": b"0123456789"}


def test_a_committed_batch_drops_every_run_whose_json_it_changed() -> None:
    cache = RunCache()
    runs = ["run", "param", "tag", "metric", "dataset", "of-exp", "untouched"]
    cache.put(T, [(r, "e2" if r == "of-exp" else "e1", b"{}") for r in runs], cache.token())
    changes = BatchChanges()
    changes.runs["run"] = RunRow("run", "e1", "name", "u", "FINISHED", 1, 2, "active", None, "file:///a")
    changes.params[("param", "k")] = "v"
    changes.tags[("tag", "k")] = None
    changes.latest["step"][("metric", "k")] = LatestPoint(1.0, 1, 0)
    changes.datasets[("dataset", "n", "d")] = {}
    changes.experiments["e2"] = ExperimentRow("e2", "x", "file:///x", "deleted", 1, 2, 2)
    cache.drop_changed(changes)
    assert list(cache.get(T, runs)) == ["untouched"]
