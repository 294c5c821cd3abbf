"""The projector's fold cache (pure): what it asks the store for, and what it remembers.

Replaying a real log through the cache with merged commits is in test_replay.py; these pin
the rules that make skipping a query safe.
"""

from __future__ import annotations

from runledger.ingest.contract.events import Verdict
from runledger.projector.fold import FoldState, fold_batch
from runledger.projector.fold_cache import FoldCache, IdFilter, StateRequest
from runledger.projector.rows import RunRow
from tests.test_fold import create_experiment, create_run, exp_event, log_metrics, log_params, rec, set_tags


def fold_through(cache: FoldCache, *events, loaded: FoldState | None = None):  # type: ignore[no-untyped-def]
    records = [rec(e) for e in events]
    request = cache.plan(records)
    loaded = loaded or FoldState()
    cache.add_loaded(request, loaded)
    result = fold_batch(cache.state_for(records, loaded), records)
    cache.absorb(result)
    return request, result


def run_row(run_id: str) -> RunRow:
    return RunRow(run_id=run_id, experiment_id="1", run_name="n", user_id="u", status="RUNNING", start_time=1,
                  end_time=None, lifecycle_stage="active", deleted_time=None, artifact_uri="file:///a")


def test_a_run_id_never_created_is_known_absent_without_asking_the_store() -> None:
    cache = FoldCache()
    request, result = fold_through(cache, create_run("fresh"))
    assert request.run_ids == []
    assert list(result.verdicts.values())[0].applied


def test_a_run_created_before_but_not_cached_is_loaded_from_the_store() -> None:
    cache = FoldCache()
    cache.created_runs.add("old")
    records = [rec(log_params(("p", "1"), run="old"))]
    assert cache.plan(records).run_ids == ["old"]


def test_writes_after_a_fold_see_its_changes_without_a_store_read() -> None:
    cache = FoldCache()
    fold_through(cache, create_run("r"), log_params(("lr", "0.1"), run="r"), set_tags(("t", "a"), run="r"))
    request, result = fold_through(cache, log_params(("lr", "0.2"), run="r"))
    assert not request
    assert list(result.verdicts.values())[0].error_code == "INVALID_PARAMETER_VALUE"


def test_latest_metric_carries_across_batches_in_the_cache() -> None:
    cache = FoldCache()
    fold_through(cache, create_run("r"), log_metrics(("loss", 1.0, 200, 1), run="r"))
    _, result = fold_through(cache, log_metrics(("loss", 2.0, 100, 2), run="r"))
    assert result.changes.latest["timestamp"] == {}  # the older point does not replace the newer
    assert cache.runs["r"].latest["timestamp"]["loss"].value == 1.0
    assert cache.runs["r"].latest["step"]["loss"].value == 2.0


def test_evicted_runs_are_asked_for_again() -> None:
    cache = FoldCache(max_runs=2)
    for run_id in ("a", "b", "c"):
        fold_through(cache, create_run(run_id))
    assert list(cache.runs) == ["b", "c"]
    assert cache.plan([rec(log_params(("p", "1"), run="a"))]).run_ids == ["a"]


def test_a_repeated_event_id_gets_its_first_verdict_from_the_cache() -> None:
    cache = FoldCache()
    first = create_run("r", event_id="same")
    fold_through(cache, first)
    request, result = fold_through(cache, create_run("r", event_id="same"))
    assert not request.event_ids
    assert result.verdicts["same"] == Verdict()
    assert result.changes.log == []


def test_an_event_id_seen_long_ago_is_confirmed_by_the_store() -> None:
    cache = FoldCache()
    cache.seen.add("logged-before-start")  # in the filter, verdict not in memory
    records = [rec(create_run("x", event_id="logged-before-start"))]
    assert cache.plan(records).event_ids == ["logged-before-start"]


def test_experiment_events_load_all_experiments_once() -> None:
    cache = FoldCache()
    request, result = fold_through(cache, create_experiment("a", exp=None))
    assert request.experiments
    assert result.verdicts and list(result.verdicts.values())[0].result == {"experiment_id": "1"}
    request, result = fold_through(cache, create_experiment("b", exp=None))
    assert not request.experiments
    assert list(result.verdicts.values())[0].result == {"experiment_id": "2"}
    _, result = fold_through(cache, create_experiment("a", exp=None))
    assert list(result.verdicts.values())[0].error_code == "RESOURCE_ALREADY_EXISTS"


def test_with_every_experiment_known_an_unseen_experiment_has_no_tags_to_load() -> None:
    # A replay primes the cache from its new, empty file: the log's first experiment (here one
    # created with a pinned id and tagged in the same batch) needs nothing from the store.
    cache = FoldCache()
    cache.add_loaded(StateRequest(experiments=True), FoldState())   # every experiment: none
    tag = exp_event("ExperimentTagSet", "0", {"key": "k", "value": "v"})
    request, result = fold_through(cache, create_experiment("Default", exp="0"), tag)
    assert request.experiment_tag_ids == [] and not request
    assert result.verdicts[tag.event_id].applied
    request, _ = fold_through(cache, exp_event("ExperimentTagSet", "0", {"key": "k2", "value": "w"}))
    assert not request and cache.experiment_tags["0"] == {"k": "v", "k2": "w"}


def test_the_tags_of_an_experiment_known_to_exist_are_still_loaded() -> None:
    cache = FoldCache()
    cache.add_loaded(StateRequest(experiments=True), FoldState())
    fold_through(cache, create_experiment("a", exp=None))   # experiment 1, its tags not cached
    records = [rec(exp_event("ExperimentTagSet", "1", {"key": "k", "value": "v"}))]
    assert cache.plan(records).experiment_tag_ids == ["1"]


def test_id_filter_never_forgets_an_id_as_it_grows() -> None:
    ids = IdFilter(capacity=100)
    added = [f"id-{i}" for i in range(1000)]
    for i in added:
        ids.add(i)
    assert all(i in ids for i in added)
    false_positives = sum(f"other-{i}" in ids for i in range(10_000))
    assert false_positives < 50


def test_state_request_for_records_names_everything_a_batch_may_need() -> None:
    records = [rec(create_run("r", event_id="e-1")), rec(create_experiment("x", exp="7", event_id="e-2"))]
    request = StateRequest.for_records(records)
    assert request.run_ids == ["r"] and request.event_ids == ["e-1", "e-2"]
    assert request.experiments and request.experiment_tag_ids == ["7"]
