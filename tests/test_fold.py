"""What the fold (`projector.fold.fold_batch`) decides, one behaviour per test.

Pure fold logic, no Kafka and no DuckDB (docs/design.md, "Tests" allows this for the fold):
events are built as Envelopes, wrapped in LogRecords and folded over a FoldState. When a test
needs more than one batch, `merge` carries state forward exactly as `projector.store` would
load it for the next batch, so "later batch" tests exercise the same path as the projector.

Specified here (docs/design.md, invariants 2, 3, 4 and 7):
- params: first value stays; same value again is fine; another value is INVALID_PARAMETER_VALUE,
  and a RunBatchLogged with a conflicting param is rejected whole;
- tags: overwrite, last value wins within one event, deleting a missing tag is
  RESOURCE_DOES_NOT_EXIST, `mlflow.runName` and the run name stay in step;
- metrics: appended (duplicates included; the store dedupes exact duplicates), and the latest
  value per key under both rules, NaN handled as MLflow's SQL store does;
- dataset inputs: the first log of a (name, digest) per run is kept;
- run and experiment lifecycle and their error codes;
- exactly-once: an event id already seen keeps its first verdict and is not applied again;
- malformed or undecodable input gets MALFORMED_EVENT and changes nothing else;
- the fold never mutates the state it is given.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

import pytest

from runledger.ingest.contract.events import Envelope, Verdict, metrics_columns
from runledger.projector.fold import LATEST_RULES, BatchChanges, FoldResult, FoldState, LogRecord, fold_batch
from runledger.projector.rows import LatestPoint

NAN = math.nan
RUN = "r1"

# ---------------------------------------------------------------------------------------------
# helpers: building events and records, folding, carrying state across batches

_event_ids = itertools.count()
_offsets = itertools.count()


def ev(type_: str, payload: dict[str, Any] | None = None, *, run: str | None = RUN,
       exp: str | None = None, event_id: str | None = None, t: int = 1_000) -> Envelope:
    return Envelope(event_id=event_id or f"e{next(_event_ids)}", type=type_, experiment_id=exp,
                    run_id=run, ingest_time=t, user="alice", payload=payload or {})


def create_run(run: str = RUN, name: str = "run-1", exp: str = "1", **kw: Any) -> Envelope:
    return ev("RunCreated", {"run_name": name, "start_time": 1, "user_id": "alice",
                             "artifact_uri": f"file:///a/{run}", "tags": []}, run=run, exp=exp, **kw)


def log_params(*pairs: tuple[str, Any], run: str = RUN, **kw: Any) -> Envelope:
    return ev("ParamsLogged", {"params": [list(p) for p in pairs]}, run=run, **kw)


def set_tags(*pairs: tuple[str, Any], run: str = RUN, **kw: Any) -> Envelope:
    return ev("TagsSet", {"tags": [list(p) for p in pairs]}, run=run, **kw)


def delete_tag(key: str, run: str = RUN, **kw: Any) -> Envelope:
    return ev("TagDeleted", {"key": key}, run=run, **kw)


def wire_metrics(points: list[tuple[str, float, int, int]]) -> dict[str, list[Any]]:
    """Columnar metric payload as it reads back from the log: NaN travels as JSON null."""
    return metrics_columns([(k, None if math.isnan(v) else v, t, s) for k, v, t, s in points])


def log_metrics(*points: tuple[str, float, int, int], run: str = RUN, **kw: Any) -> Envelope:
    """points are (key, value, timestamp, step)."""
    return ev("MetricsLogged", wire_metrics(list(points)), run=run, **kw)


def log_batch(params: list[tuple[str, str]] = (), metrics: list[tuple[str, float, int, int]] = (),
              tags: list[tuple[str, str]] = (), run: str = RUN, **kw: Any) -> Envelope:
    return ev("RunBatchLogged", {"params": [list(p) for p in params], "metrics": wire_metrics(list(metrics)),
                                 "tags": [list(t) for t in tags]}, run=run, **kw)


def dataset(name: str = "train", digest: str = "d1", source: str = "file:///d", **extra: Any) -> dict[str, Any]:
    return {"name": name, "digest": digest, "source_type": "local", "source": source, "schema": None,
            "profile": None, "tags": [], **extra}


def log_inputs(*datasets: dict[str, Any], run: str = RUN, **kw: Any) -> Envelope:
    return ev("InputsLogged", {"datasets": list(datasets)}, run=run, **kw)


def create_experiment(name: str, **kw: Any) -> Envelope:
    return ev("ExperimentCreated", {"name": name, "artifact_location": None,
                                    "artifact_root": "file:///artifacts", "tags": []}, run=None, **kw)


def exp_event(type_: str, exp: str, payload: dict[str, Any] | None = None, **kw: Any) -> Envelope:
    return ev(type_, payload, run=None, exp=exp, **kw)


def rec(event: Envelope | LogRecord) -> LogRecord:
    if isinstance(event, LogRecord):
        return event
    return LogRecord(partition=0, offset=next(_offsets), event=event)


def fold(*events: Envelope | LogRecord, state: FoldState | None = None) -> FoldResult:
    return fold_batch(state if state is not None else FoldState(), [rec(e) for e in events])


def merge(state: FoldState, result: FoldResult) -> FoldState:
    """The state `projector.store.Store.load_state` would load after committing `result`.

    Mirrors the store's writes: rows replaced by their final values, params INSERT OR IGNORE,
    None tags deleted, latest points replaced, and `seen` read back from the event log rows
    (with the allocated experiment id for an applied ExperimentCreated). The store loads only
    the keys of the next batch; carrying every key is equivalent for the fold.
    """
    ch = result.changes

    def keyed(old: dict[Any, str], new: dict[Any, str | None]) -> dict[Any, str]:
        out = dict(old)
        for k, v in new.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = v
        return out

    experiments = {**state.experiments, **ch.experiments}
    seen = dict(state.seen)
    for entry in ch.log:
        result_fields = ({"experiment_id": entry.experiment_id}
                         if entry.type == "ExperimentCreated" and entry.error_code is None else {})
        seen.setdefault(entry.event_id, Verdict(entry.error_code, entry.message or "", result_fields))
    return FoldState(
        experiments=experiments,
        experiment_ids_by_name={e.name: e.experiment_id for e in experiments.values()},
        next_experiment_id=max((int(i) for i in experiments if i.isdigit()), default=0) + 1,
        experiment_tags=keyed(state.experiment_tags, ch.experiment_tags),
        runs={**state.runs, **ch.runs},
        params={**ch.params, **state.params},
        tags=keyed(state.tags, ch.tags),
        latest={rule: {**state.latest[rule], **ch.latest[rule]} for rule in LATEST_RULES},
        seen=seen,
    )


def state_after(*events: Envelope, state: FoldState | None = None) -> FoldState:
    """Fold `events` as one batch and return the state the next batch would start from."""
    state = state if state is not None else FoldState()
    return merge(state, fold(*events, state=state))


def verdict_of(result: FoldResult, event: Envelope) -> Verdict:
    return result.verdicts[event.event_id]


def assert_applied(result: FoldResult, *events: Envelope) -> None:
    for e in events:
        v = verdict_of(result, e)
        assert v.applied, f"{e.type} rejected: {v.error_code} {v.message}"


def assert_rejected(result: FoldResult, event: Envelope, error_code: str) -> Verdict:
    v = verdict_of(result, event)
    assert v.error_code == error_code, v
    assert v.message
    return v


def assert_no_table_changes(ch: BatchChanges) -> None:
    """Nothing but audit-log rows: no table row touched."""
    assert ch.experiments == {} and ch.experiment_tags == {}
    assert ch.runs == {} and ch.params == {} and ch.tags == {}
    assert len(ch.metrics) == 0
    assert ch.latest == {rule: {} for rule in LATEST_RULES}
    assert ch.datasets == {}


def metric_rows(ch: BatchChanges) -> list[tuple[str, str, float | str, int, int]]:
    m = ch.metrics
    return [(r, k, "nan" if math.isnan(v) else v, t, s)
            for r, k, v, t, s in zip(m.run_id, m.key, m.value, m.timestamp, m.step)]


def a_run(*extra: Envelope) -> FoldState:
    """State after a batch that created run r1 (and applied `extra`)."""
    return state_after(create_run(), *extra)


# ---------------------------------------------------------------------------------------------
# params


def test_param_logged_again_with_same_value_is_accepted() -> None:
    first, again = log_params(("lr", "0.1")), log_params(("lr", "0.1"))
    result = fold(create_run(), first, again)
    assert_applied(result, first, again)
    assert result.changes.params == {(RUN, "lr"): "0.1"}


def test_param_logged_again_with_same_value_in_a_later_batch_is_accepted_and_writes_nothing() -> None:
    again = log_params(("lr", "0.1"))
    result = fold(again, state=a_run(log_params(("lr", "0.1"))))
    assert_applied(result, again)
    assert result.changes.params == {}


def test_param_rewrite_with_other_value_is_rejected_and_first_value_stays() -> None:
    rewrite = log_params(("lr", "0.2"))
    result = fold(create_run(), log_params(("lr", "0.1")), rewrite)
    v = assert_rejected(result, rewrite, "INVALID_PARAMETER_VALUE")
    assert "'0.1'" in v.message and "'0.2'" in v.message and "lr" in v.message
    assert result.changes.params == {(RUN, "lr"): "0.1"}


def test_param_rewrite_in_a_later_batch_is_rejected_and_not_in_changes() -> None:
    rewrite = log_params(("lr", "0.2"))
    result = fold(rewrite, state=a_run(log_params(("lr", "0.1"))))
    assert_rejected(result, rewrite, "INVALID_PARAMETER_VALUE")
    assert_no_table_changes(result.changes)


def test_params_event_with_one_conflicting_key_applies_none_of_its_keys() -> None:
    mixed = log_params(("new", "x"), ("lr", "0.2"))
    result = fold(mixed, state=a_run(log_params(("lr", "0.1"))))
    assert_rejected(result, mixed, "INVALID_PARAMETER_VALUE")
    assert result.changes.params == {}


def test_batch_with_a_conflicting_param_is_rejected_whole_with_no_metrics_tags_or_params_applied() -> None:
    batch = log_batch(params=[("fresh", "1"), ("lr", "0.2")], metrics=[("loss", 0.5, 10, 0)],
                      tags=[("team", "a"), ("mlflow.runName", "renamed")])
    result = fold(batch, state=a_run(log_params(("lr", "0.1"))))
    assert_rejected(result, batch, "INVALID_PARAMETER_VALUE")
    assert_no_table_changes(result.changes)
    assert [e.error_code for e in result.changes.log] == ["INVALID_PARAMETER_VALUE"]


def test_batch_with_params_metrics_and_tags_applies_all_of_them() -> None:
    batch = log_batch(params=[("lr", "0.1")], metrics=[("loss", 0.5, 10, 0)], tags=[("team", "a")])
    result = fold(create_run(), batch)
    assert_applied(result, batch)
    assert result.changes.params == {(RUN, "lr"): "0.1"}
    assert result.changes.tags[(RUN, "team")] == "a"
    assert metric_rows(result.changes) == [(RUN, "loss", 0.5, 10, 0)]


# ---------------------------------------------------------------------------------------------
# tags


def test_tag_set_again_overwrites_the_value() -> None:
    result = fold(create_run(), set_tags(("team", "a")), set_tags(("team", "b")))
    assert result.changes.tags[(RUN, "team")] == "b"


def test_tag_set_in_a_later_batch_overwrites_the_stored_value() -> None:
    second = set_tags(("team", "b"))
    result = fold(second, state=a_run(set_tags(("team", "a"))))
    assert_applied(result, second)
    assert result.changes.tags == {(RUN, "team"): "b"}


def test_last_value_of_a_tag_wins_within_one_tags_set() -> None:
    result = fold(create_run(), set_tags(("team", "a"), ("other", "x"), ("team", "c")))
    assert result.changes.tags[(RUN, "team")] == "c"
    assert result.changes.tags[(RUN, "other")] == "x"


def test_last_value_of_a_tag_wins_within_one_run_batch_logged() -> None:
    result = fold(create_run(), log_batch(tags=[("team", "a"), ("team", "b")]))
    assert result.changes.tags[(RUN, "team")] == "b"


def test_deleting_a_tag_marks_it_deleted_in_changes() -> None:
    deletion = delete_tag("team")
    result = fold(deletion, state=a_run(set_tags(("team", "a"))))
    assert_applied(result, deletion)
    assert result.changes.tags == {(RUN, "team"): None}


def test_tag_set_and_deleted_in_one_batch_ends_deleted() -> None:
    result = fold(create_run(), set_tags(("team", "a")), delete_tag("team"))
    assert result.changes.tags[(RUN, "team")] is None


def test_deleting_a_missing_tag_is_rejected_with_resource_does_not_exist() -> None:
    deletion = delete_tag("never-set")
    result = fold(deletion, state=a_run())
    assert_rejected(result, deletion, "RESOURCE_DOES_NOT_EXIST")
    assert_no_table_changes(result.changes)


def test_deleting_a_tag_twice_rejects_the_second_deletion() -> None:
    first, second = delete_tag("team"), delete_tag("team")
    result = fold(first, second, state=a_run(set_tags(("team", "a"))))
    assert_applied(result, first)
    assert_rejected(result, second, "RESOURCE_DOES_NOT_EXIST")


def test_run_created_records_its_name_as_the_run_name_tag() -> None:
    result = fold(create_run(name="brave-owl"))
    assert result.changes.runs[RUN].run_name == "brave-owl"
    assert result.changes.tags[(RUN, "mlflow.runName")] == "brave-owl"


@pytest.mark.parametrize("make_event", [
    pytest.param(lambda: set_tags(("mlflow.runName", "renamed")), id="TagsSet"),
    pytest.param(lambda: log_batch(tags=[("mlflow.runName", "renamed")]), id="RunBatchLogged"),
])
def test_setting_the_run_name_tag_renames_the_run(make_event: Any) -> None:
    result = fold(make_event(), state=a_run())
    assert result.changes.runs[RUN].run_name == "renamed"
    assert result.changes.tags[(RUN, "mlflow.runName")] == "renamed"


def test_run_updated_with_a_run_name_updates_the_run_name_tag() -> None:
    result = fold(ev("RunUpdated", {"status": None, "end_time": None, "run_name": "renamed"}), state=a_run())
    assert result.changes.runs[RUN].run_name == "renamed"
    assert result.changes.tags[(RUN, "mlflow.runName")] == "renamed"


# ---------------------------------------------------------------------------------------------
# metrics


def test_metrics_are_appended_in_log_order_with_duplicates_emitted_as_logged() -> None:
    # The fold emits every point; the store stores an exact duplicate once (projector/store.py).
    result = fold(create_run(),
                  log_metrics(("loss", 0.5, 10, 0), ("loss", 0.5, 10, 0), ("loss", 0.4, 10, 0)),
                  log_metrics(("loss", 0.5, 10, 0), ("acc", NAN, 11, 1)))
    assert metric_rows(result.changes) == [
        (RUN, "loss", 0.5, 10, 0), (RUN, "loss", 0.5, 10, 0), (RUN, "loss", 0.4, 10, 0),
        (RUN, "loss", 0.5, 10, 0), (RUN, "acc", "nan", 11, 1)]


def test_null_metric_value_in_the_payload_is_read_as_nan() -> None:
    result = fold(create_run(), ev("MetricsLogged", {"keys": ["m"], "values": [None],
                                                     "timestamps": [5], "steps": [0]}))
    assert math.isnan(result.changes.metrics.value[0])
    assert all(math.isnan(result.changes.latest[rule][(RUN, "m")].value) for rule in LATEST_RULES)


def test_metrics_logged_with_no_points_is_accepted_and_writes_nothing() -> None:
    empty = log_metrics()
    result = fold(empty, state=a_run())
    assert_applied(result, empty)
    assert_no_table_changes(result.changes)


# Each case: points (value, timestamp, step) logged in this order for key "m", and the latest
# (value, timestamp, step) expected under rule "timestamp" and under rule "step".
# NaN as MLflow's SQL store does (sanitize_metric_value, then compare): a NaN point is kept and
# compared as value 0, whether it is the stored latest or the incoming point; a point replaces
# the latest only when strictly greater, so among equals the first logged stays.
LATEST_CASES = [
    pytest.param([(0.9, 1000, 5), (0.1, 2000, 5)], (0.1, 2000, 5), (0.1, 2000, 5),
                 id="newer_timestamp_wins_even_with_a_smaller_value"),
    pytest.param([(0.1, 2000, 5), (0.9, 1000, 5)], (0.1, 2000, 5), (0.1, 2000, 5),
                 id="older_timestamp_logged_later_does_not_win"),
    pytest.param([(0.7, 1000, 1), (0.3, 1000, 1), (0.5, 1000, 1)], (0.7, 1000, 1), (0.7, 1000, 1),
                 id="timestamp_tie_goes_to_the_greater_value_first_logged"),
    pytest.param([(0.3, 1000, 1), (0.7, 1000, 1)], (0.7, 1000, 1), (0.7, 1000, 1),
                 id="timestamp_tie_goes_to_the_greater_value_last_logged"),
    pytest.param([(0.5, 500, 10), (0.9, 9000, 2)], (0.9, 9000, 2), (0.5, 500, 10),
                 id="older_timestamp_but_higher_step_wins_only_under_step_rule"),
    pytest.param([(0.9, 9000, 2), (0.5, 500, 10)], (0.9, 9000, 2), (0.5, 500, 10),
                 id="higher_step_logged_later_wins_only_under_step_rule"),
    pytest.param([(0.5, 1000, 3), (0.6, 1000, 1)], (0.6, 1000, 1), (0.5, 1000, 3),
                 id="timestamp_tie_across_steps_greater_value_vs_greater_step"),
    pytest.param([(0.9, 1000, 3), (0.1, 2000, 3)], (0.1, 2000, 3), (0.1, 2000, 3),
                 id="same_step_goes_to_the_newer_timestamp_under_step_rule"),
    pytest.param([(0.5, 1000, 1), (0.5, 1000, 2)], (0.5, 1000, 1), (0.5, 1000, 2),
                 id="equal_timestamp_and_value_keeps_the_first_point_under_timestamp_rule"),
    pytest.param([(0.4, 1000, 1), (NAN, 2000, 2)], (NAN, 2000, 2), (NAN, 2000, 2),
                 id="nan_is_latest_when_newest"),
    pytest.param([(0.4, 1000, 1), (NAN, 1000, 1)], (0.4, 1000, 1), (0.4, 1000, 1),
                 id="incoming_nan_does_not_win_a_tie_against_a_positive_value"),
    pytest.param([(0.0, 1000, 1), (NAN, 1000, 1)], (0.0, 1000, 1), (0.0, 1000, 1),
                 id="incoming_nan_does_not_win_a_tie_against_zero"),
    pytest.param([(-0.4, 1000, 1), (NAN, 1000, 1)], (NAN, 1000, 1), (NAN, 1000, 1),
                 id="incoming_nan_compares_as_zero_so_wins_a_tie_against_a_negative_value"),
    pytest.param([(NAN, 1000, 1), (0.2, 1000, 1)], (0.2, 1000, 1), (0.2, 1000, 1),
                 id="stored_nan_compares_as_zero_so_a_tying_positive_value_replaces_it"),
    pytest.param([(NAN, 1000, 1), (-0.2, 1000, 1)], (NAN, 1000, 1), (NAN, 1000, 1),
                 id="stored_nan_compares_as_zero_so_a_tying_negative_value_does_not_replace_it"),
    pytest.param([(NAN, 1000, 1), (0.0, 1000, 1)], (NAN, 1000, 1), (NAN, 1000, 1),
                 id="stored_nan_is_not_replaced_by_a_tying_zero"),
    pytest.param([(NAN, 1000, 1), (NAN, 1000, 1)], (NAN, 1000, 1), (NAN, 1000, 1),
                 id="nan_tying_nan_stays_nan"),
    pytest.param([(-1.0, 1000, 1), (NAN, 1000, 1), (0.3, 1000, 1)], (0.3, 1000, 1), (0.3, 1000, 1),
                 id="positive_value_beats_a_nan_that_beat_a_negative"),
]

DELIVERIES = ["one_event", "one_event_per_point", "one_batch_per_point"]


def _latest_after(points: list[tuple[float, int, int]], delivery: str) -> dict[str, LatestPoint]:
    as_metrics = [("m", v, t, s) for v, t, s in points]
    if delivery == "one_event":
        result = fold(create_run(), log_metrics(*as_metrics))
        return {rule: result.changes.latest[rule][(RUN, "m")] for rule in LATEST_RULES}
    if delivery == "one_event_per_point":
        result = fold(create_run(), *[log_metrics(p) for p in as_metrics])
        return {rule: result.changes.latest[rule][(RUN, "m")] for rule in LATEST_RULES}
    state = a_run()
    for p in as_metrics:
        state = state_after(log_metrics(p), state=state)
    return {rule: state.latest[rule][(RUN, "m")] for rule in LATEST_RULES}


def _same_point(actual: LatestPoint, expected: tuple[float, int, int]) -> bool:
    value, ts, step = expected
    same_value = math.isnan(actual.value) if math.isnan(value) else actual.value == value
    return same_value and (actual.timestamp, actual.step) == (ts, step)


@pytest.mark.parametrize("delivery", DELIVERIES)
@pytest.mark.parametrize(("points", "by_timestamp", "by_step"), LATEST_CASES)
def test_latest_metric_under_each_rule(points: list[tuple[float, int, int]], by_timestamp: tuple[float, int, int],
                                       by_step: tuple[float, int, int], delivery: str) -> None:
    latest = _latest_after(points, delivery)
    assert _same_point(latest["timestamp"], by_timestamp), latest["timestamp"]
    assert _same_point(latest["step"], by_step), latest["step"]


def test_latest_metric_is_kept_per_key() -> None:
    result = fold(create_run(), log_metrics(("a", 1.0, 5, 0), ("b", 2.0, 1, 0), ("a", 3.0, 1, 0)))
    latest = result.changes.latest["timestamp"]
    assert latest[(RUN, "a")] == LatestPoint(1.0, 5, 0)
    assert latest[(RUN, "b")] == LatestPoint(2.0, 1, 0)


def test_latest_metric_not_replaced_is_not_in_changes() -> None:
    older = log_metrics(("m", 9.0, 1, 0))
    result = fold(older, state=a_run(log_metrics(("m", 1.0, 5, 5))))
    assert_applied(result, older)
    assert result.changes.latest == {rule: {} for rule in LATEST_RULES}
    assert len(result.changes.metrics) == 1


# ---------------------------------------------------------------------------------------------
# dataset inputs


def test_dataset_input_is_recorded_with_its_run_and_context_tag() -> None:
    result = fold(create_run(), log_inputs(dataset(tags=[["mlflow.data.context", "training"]])))
    row = result.changes.datasets[(RUN, "train", "d1")]
    assert (row["run_id"], row["experiment_id"], row["context"], row["logged_time"]) == (RUN, "1", "training", 1_000)


def test_first_log_of_a_dataset_name_and_digest_in_a_run_is_kept() -> None:
    again = log_inputs(dataset(source="file:///elsewhere"))
    result = fold(create_run(), log_inputs(dataset()), again)
    assert_applied(result, again)
    assert result.changes.datasets[(RUN, "train", "d1")]["source"] == "file:///d"


def test_same_dataset_name_with_another_digest_is_another_input() -> None:
    result = fold(create_run(), log_inputs(dataset(digest="d1"), dataset(digest="d2")))
    assert set(result.changes.datasets) == {(RUN, "train", "d1"), (RUN, "train", "d2")}


# ---------------------------------------------------------------------------------------------
# run lifecycle

RUN_WRITES = [
    pytest.param(lambda: log_params(("lr", "0.1")), id="ParamsLogged"),
    pytest.param(lambda: log_metrics(("m", 1.0, 1, 0)), id="MetricsLogged"),
    pytest.param(lambda: set_tags(("team", "a")), id="TagsSet"),
    pytest.param(lambda: log_batch(params=[("lr", "0.1")]), id="RunBatchLogged"),
    pytest.param(lambda: ev("RunUpdated", {"status": "FINISHED", "end_time": 5, "run_name": None}),
                 id="RunUpdated"),
    pytest.param(lambda: log_inputs(dataset()), id="InputsLogged"),
]


@pytest.mark.parametrize("make_event", RUN_WRITES + [
    pytest.param(lambda: delete_tag("team"), id="TagDeleted"),
    pytest.param(lambda: ev("RunDeleted"), id="RunDeleted"),
    pytest.param(lambda: ev("RunRestored"), id="RunRestored"),
])
def test_event_for_an_unknown_run_is_rejected_with_resource_does_not_exist(make_event: Any) -> None:
    event = make_event()
    result = fold(event)
    v = assert_rejected(result, event, "RESOURCE_DOES_NOT_EXIST")
    assert RUN in v.message
    assert_no_table_changes(result.changes)


@pytest.mark.parametrize("make_event", RUN_WRITES + [pytest.param(lambda: delete_tag("team"), id="TagDeleted")])
def test_write_to_a_deleted_run_is_rejected_with_invalid_parameter_value(make_event: Any) -> None:
    event = make_event()
    result = fold(event, state=a_run(set_tags(("team", "a")), ev("RunDeleted")))
    v = assert_rejected(result, event, "INVALID_PARAMETER_VALUE")
    assert "deleted" in v.message
    assert_no_table_changes(result.changes)


@pytest.mark.parametrize("make_event", RUN_WRITES)
def test_restoring_a_deleted_run_makes_it_writable_again(make_event: Any) -> None:
    event = make_event()
    result = fold(ev("RunDeleted"), ev("RunRestored"), event, state=a_run())
    assert_applied(result, event)
    assert result.changes.runs[RUN].lifecycle_stage == "active"


def test_deleting_a_run_sets_its_lifecycle_and_deleted_time() -> None:
    result = fold(ev("RunDeleted", t=4_242), state=a_run())
    run = result.changes.runs[RUN]
    assert (run.lifecycle_stage, run.deleted_time) == ("deleted", 4_242)


def test_restoring_a_run_clears_its_deleted_time() -> None:
    result = fold(ev("RunRestored"), state=a_run(ev("RunDeleted")))
    run = result.changes.runs[RUN]
    assert (run.lifecycle_stage, run.deleted_time) == ("active", None)


def test_run_created_twice_is_rejected_with_resource_already_exists() -> None:
    again = create_run(name="other")
    result = fold(again, state=a_run())
    assert_rejected(result, again, "RESOURCE_ALREADY_EXISTS")
    assert_no_table_changes(result.changes)


def test_run_created_is_running_and_active() -> None:
    run = fold(create_run()).changes.runs[RUN]
    assert (run.status, run.lifecycle_stage, run.end_time, run.experiment_id) == ("RUNNING", "active", None, "1")


def test_run_updated_sets_status_and_end_time() -> None:
    result = fold(ev("RunUpdated", {"status": "FINISHED", "end_time": 99, "run_name": None}), state=a_run())
    run = result.changes.runs[RUN]
    assert (run.status, run.end_time, run.run_name) == ("FINISHED", 99, "run-1")


def test_run_updated_with_only_an_end_time_keeps_the_status() -> None:
    result = fold(ev("RunUpdated", {"status": None, "end_time": 99, "run_name": None}), state=a_run())
    assert (result.changes.runs[RUN].status, result.changes.runs[RUN].end_time) == ("RUNNING", 99)


def test_run_updated_with_an_unknown_status_is_rejected_with_invalid_parameter_value() -> None:
    bad = ev("RunUpdated", {"status": "DONE", "end_time": 5, "run_name": None})
    result = fold(bad, state=a_run())
    v = assert_rejected(result, bad, "INVALID_PARAMETER_VALUE")
    assert "DONE" in v.message
    assert_no_table_changes(result.changes)


# ---------------------------------------------------------------------------------------------
# experiment lifecycle


def test_experiment_ids_are_allocated_sequentially_in_log_order() -> None:
    a, b = create_experiment("a"), create_experiment("b")
    result = fold(a, b)
    assert verdict_of(result, a).result == {"experiment_id": "1"}
    assert verdict_of(result, b).result == {"experiment_id": "2"}
    assert {e.name for e in result.changes.experiments.values()} == {"a", "b"}


def test_experiment_ids_continue_in_a_later_batch() -> None:
    c = create_experiment("c")
    result = fold(c, state=state_after(create_experiment("a"), create_experiment("b")))
    assert verdict_of(result, c).result == {"experiment_id": "3"}


def test_pinned_experiment_id_is_used_and_allocation_continues_after_it() -> None:
    default, nxt = create_experiment("Default", exp="0"), create_experiment("next")
    result = fold(default, nxt)
    assert verdict_of(result, default).result == {"experiment_id": "0"}
    assert verdict_of(result, nxt).result == {"experiment_id": "1"}


def test_experiment_gets_artifact_location_under_the_root_unless_given() -> None:
    given = ev("ExperimentCreated", {"name": "g", "artifact_location": "s3://b/g", "artifact_root": "file:///x",
                                     "tags": []}, run=None)
    result = fold(create_experiment("a"), given)
    assert result.changes.experiments["1"].artifact_location == "file:///artifacts/1"
    assert result.changes.experiments["2"].artifact_location == "s3://b/g"


def test_experiment_with_a_taken_name_is_rejected_with_resource_already_exists() -> None:
    dup = create_experiment("a")
    result = fold(create_experiment("a"), dup)
    assert_rejected(result, dup, "RESOURCE_ALREADY_EXISTS")
    assert list(result.changes.experiments) == ["1"]


def test_rejected_experiment_does_not_consume_an_id() -> None:
    dup, c = create_experiment("a"), create_experiment("c")
    result = fold(create_experiment("a"), dup, c)
    assert verdict_of(result, c).result == {"experiment_id": "2"}


def test_name_of_a_deleted_experiment_stays_taken() -> None:
    dup = create_experiment("a")
    result = fold(dup, state=state_after(create_experiment("a"), exp_event("ExperimentDeleted", "1")))
    assert_rejected(result, dup, "RESOURCE_ALREADY_EXISTS")


def test_rename_to_a_taken_name_is_rejected_with_bad_request() -> None:
    rename = exp_event("ExperimentRenamed", "2", {"new_name": "a"})
    result = fold(rename, state=state_after(create_experiment("a"), create_experiment("b")))
    assert_rejected(result, rename, "BAD_REQUEST")
    assert_no_table_changes(result.changes)


def test_rename_frees_the_old_name() -> None:
    reuse = create_experiment("a")
    result = fold(exp_event("ExperimentRenamed", "1", {"new_name": "z"}), reuse,
                  state=state_after(create_experiment("a")))
    assert_applied(result, reuse)
    assert result.changes.experiments["1"].name == "z"
    assert result.changes.experiments["2"].name == "a"


def test_deleting_an_experiment_twice_rejects_the_second_deletion() -> None:
    first, second = exp_event("ExperimentDeleted", "1"), exp_event("ExperimentDeleted", "1")
    result = fold(first, second, state=state_after(create_experiment("a")))
    assert_applied(result, first)
    assert_rejected(result, second, "RESOURCE_DOES_NOT_EXIST")
    assert result.changes.experiments["1"].lifecycle_stage == "deleted"


def test_restoring_an_active_experiment_is_rejected_with_resource_does_not_exist() -> None:
    restore = exp_event("ExperimentRestored", "1")
    result = fold(restore, state=state_after(create_experiment("a")))
    assert_rejected(result, restore, "RESOURCE_DOES_NOT_EXIST")
    assert_no_table_changes(result.changes)


def test_restoring_a_deleted_experiment_makes_it_active() -> None:
    restore = exp_event("ExperimentRestored", "1")
    result = fold(restore, state=state_after(create_experiment("a"), exp_event("ExperimentDeleted", "1")))
    assert_applied(result, restore)
    assert (result.changes.experiments["1"].lifecycle_stage, result.changes.experiments["1"].deleted_time) == (
        "active", None)


@pytest.mark.parametrize("make_event", [
    pytest.param(lambda: exp_event("ExperimentDeleted", "7"), id="ExperimentDeleted"),
    pytest.param(lambda: exp_event("ExperimentRestored", "7"), id="ExperimentRestored"),
    pytest.param(lambda: exp_event("ExperimentRenamed", "7", {"new_name": "x"}), id="ExperimentRenamed"),
    pytest.param(lambda: exp_event("ExperimentTagSet", "7", {"key": "k", "value": "v"}), id="ExperimentTagSet"),
    pytest.param(lambda: exp_event("ExperimentTagDeleted", "7", {"key": "k"}), id="ExperimentTagDeleted"),
])
def test_event_for_an_unknown_experiment_is_rejected_with_resource_does_not_exist(make_event: Any) -> None:
    event = make_event()
    result = fold(event, state=state_after(create_experiment("a")))
    assert_rejected(result, event, "RESOURCE_DOES_NOT_EXIST")


def test_experiment_tag_on_a_deleted_experiment_is_rejected() -> None:
    tag = exp_event("ExperimentTagSet", "1", {"key": "k", "value": "v"})
    result = fold(tag, state=state_after(create_experiment("a"), exp_event("ExperimentDeleted", "1")))
    assert_rejected(result, tag, "INVALID_PARAMETER_VALUE")


def test_deleting_a_missing_experiment_tag_is_rejected_with_resource_does_not_exist() -> None:
    deletion = exp_event("ExperimentTagDeleted", "1", {"key": "k"})
    result = fold(deletion, state=state_after(create_experiment("a")))
    assert_rejected(result, deletion, "RESOURCE_DOES_NOT_EXIST")


# ---------------------------------------------------------------------------------------------
# exactly-once


def test_event_already_seen_is_not_applied_again_and_gets_its_first_verdict() -> None:
    points = log_metrics(("m", 1.0, 1, 0))
    state = a_run(points)
    result = fold(points, state=state)
    assert verdict_of(result, points) == state.seen[points.event_id] == Verdict()
    assert result.changes.log == []
    assert_no_table_changes(result.changes)


def test_rejected_event_seen_again_keeps_its_rejection_even_if_it_would_now_apply() -> None:
    early_tag = set_tags(("team", "a"))
    state = state_after(early_tag)  # rejected: run r1 does not exist yet
    state = state_after(create_run(), state=state)
    result = fold(early_tag, state=state)
    assert verdict_of(result, early_tag).error_code == "RESOURCE_DOES_NOT_EXIST"
    assert_no_table_changes(result.changes)


def test_experiment_created_seen_again_answers_with_its_allocated_id() -> None:
    create = create_experiment("a")
    state = state_after(create_experiment("first"), create)
    result = fold(create, state=state)
    assert verdict_of(result, create).result == {"experiment_id": "2"}


def test_same_event_twice_in_one_batch_is_applied_once() -> None:
    points = log_metrics(("m", 1.0, 1, 0))
    param = log_params(("lr", "0.1"))
    result = fold(create_run(), points, param, points, param)
    assert_applied(result, points, param)
    assert len(result.changes.metrics) == 1
    assert [e.event_id for e in result.changes.log].count(points.event_id) == 1


def test_same_event_id_with_other_content_is_still_a_duplicate() -> None:
    first = log_params(("lr", "0.1"), event_id="same")
    replay = log_params(("lr", "0.2"), event_id="same")
    result = fold(create_run(), first, replay)
    assert_applied(result, first)
    assert result.changes.params == {(RUN, "lr"): "0.1"}


# ---------------------------------------------------------------------------------------------
# malformed and undecodable input

MALFORMED = [
    pytest.param(lambda: ev("MetricsLogged", {"keys": ["a", "b"], "values": [1.0], "timestamps": [1, 2],
                                              "steps": [0, 0]}), id="metric_columns_of_different_lengths"),
    pytest.param(lambda: ev("MetricsLogged", {"keys": ["a"], "values": [1.0], "timestamps": ["1"],
                                              "steps": [0]}), id="metric_timestamp_a_string"),
    pytest.param(lambda: ev("MetricsLogged", {"keys": ["a"], "values": [1.0], "timestamps": [1],
                                              "steps": [True]}), id="metric_step_a_bool"),
    pytest.param(lambda: ev("MetricsLogged", {"values": [1.0]}), id="metric_keys_missing"),
    pytest.param(lambda: log_params(("lr", 1)), id="param_value_an_int"),
    pytest.param(lambda: log_params(("lr", "0.1"), ("oops",)), id="param_pair_of_one"),
    pytest.param(lambda: ev("ParamsLogged", {}), id="params_missing"),
    pytest.param(lambda: set_tags((3, "x")), id="tag_key_an_int"),
    pytest.param(lambda: ev("TagDeleted", {"key": None}), id="tag_deleted_key_null"),
    pytest.param(lambda: log_batch(params=[("lr", "0.1")], tags=[("t", ["x"])]), id="batch_tag_value_a_list"),
    pytest.param(lambda: ev("RunBatchLogged", {"metrics": {"keys": ["a"]}}), id="batch_metric_columns_short"),
    pytest.param(lambda: ev("RunUpdated", {"status": None, "end_time": "soon", "run_name": None}),
                 id="run_end_time_a_string"),
    pytest.param(lambda: log_inputs(dataset(), {"name": "no-digest", "source_type": "local", "source": "s"}),
                 id="dataset_digest_missing"),
    pytest.param(lambda: log_inputs(dataset(schema=["not", "a", "string"])), id="dataset_schema_a_list"),
]


@pytest.mark.parametrize("make_event", MALFORMED)
def test_malformed_payload_gives_malformed_event_and_changes_nothing_else(make_event: Any) -> None:
    bad = make_event()
    result = fold(bad, state=a_run())
    v = assert_rejected(result, bad, "MALFORMED_EVENT")
    assert bad.type in v.message
    assert_no_table_changes(result.changes)
    assert [(e.event_id, e.error_code) for e in result.changes.log] == [(bad.event_id, "MALFORMED_EVENT")]


@pytest.mark.parametrize("make_event", [
    pytest.param(lambda: ev("ExperimentCreated", {"name": 5, "artifact_root": "file:///a"}, run=None),
                 id="name_an_int"),
    pytest.param(lambda: ev("ExperimentCreated", {"name": "x", "artifact_location": None}, run=None),
                 id="artifact_root_missing"),
    pytest.param(lambda: ev("ExperimentCreated", {"name": "x", "artifact_location": 7, "artifact_root": "f"},
                            run=None), id="artifact_location_an_int"),
    pytest.param(lambda: ev("ExperimentCreated", {"name": "x", "artifact_root": "f", "tags": [["k", 1]]},
                            run=None), id="tag_value_an_int"),
])
def test_malformed_experiment_created_changes_nothing_and_does_not_consume_an_id(make_event: Any) -> None:
    bad, good = make_event(), create_experiment("good")
    result = fold(bad, good)
    assert_rejected(result, bad, "MALFORMED_EVENT")
    assert verdict_of(result, good).result == {"experiment_id": "1"}
    assert list(result.changes.experiments) == ["1"]
    assert result.changes.experiment_tags == {}


def test_folding_continues_after_a_malformed_event() -> None:
    bad, good = log_params(("lr", 1)), log_params(("lr", "0.1"))
    result = fold(create_run(), bad, good)
    assert_applied(result, good)
    assert result.changes.params == {(RUN, "lr"): "0.1"}


def test_undecodable_record_is_logged_as_malformed_event_and_folding_continues() -> None:
    junk = LogRecord(partition=3, offset=17, event=None, decode_error="not JSON: unexpected character")
    run = create_run()
    result = fold(junk, run)
    assert_applied(result, run)
    entry = result.changes.log[0]
    assert (entry.partition, entry.offset, entry.error_code) == (3, 17, "MALFORMED_EVENT")
    assert entry.message == "not JSON: unexpected character"
    assert entry.event_id == "undecodable:3:17"
    assert set(result.verdicts) == {run.event_id}


# ---------------------------------------------------------------------------------------------
# purity


def test_fold_does_not_mutate_its_input_state() -> None:
    state = state_after(create_experiment("a"), create_run(),
                        log_batch(params=[("lr", "0.1")], metrics=[("m", 1.0, 1, 0)], tags=[("team", "a")]))
    before = copy.deepcopy(state)
    fold(create_experiment("b"), exp_event("ExperimentRenamed", "1", {"new_name": "c"}),
         exp_event("ExperimentTagSet", "1", {"key": "k", "value": "v"}), exp_event("ExperimentDeleted", "1"),
         log_params(("lr", "0.1"), ("bs", "8")), log_metrics(("m", 2.0, 5, 1), ("n", 3.0, 1, 0)),
         set_tags(("team", "b"), ("mlflow.runName", "x")), delete_tag("team"),
         ev("RunUpdated", {"status": "FINISHED", "end_time": 9, "run_name": "y"}),
         ev("RunDeleted"), ev("RunRestored"), create_run("r2"), state=state)
    assert state == before


def test_fold_gives_equal_results_for_equal_input() -> None:
    events = [create_run(), log_metrics(("m", 1.0, 1, 0)), set_tags(("t", "v")), log_params(("p", "1"))]
    records = [rec(e) for e in events]
    assert fold_batch(FoldState(), records) == fold_batch(FoldState(), records)


def test_every_event_type_of_the_contract_has_exactly_one_handler_in_the_table() -> None:
    from runledger.ingest.contract.events import EVENT_TYPES
    from runledger.projector.fold import HANDLERS

    assert set(HANDLERS) == set(EVENT_TYPES)
    assert all(h.__name__ == f"_on_{t}" for t, h in HANDLERS.items())


def test_a_missing_payload_field_is_a_malformed_event_naming_the_field() -> None:
    bad = exp_event("ExperimentRenamed", "1", {})
    result = fold(bad, state=state_after(create_experiment("a")))
    assert_rejected(result, bad, "MALFORMED_EVENT")
    assert "missing field 'new_name'" in result.verdicts[bad.event_id].message


def test_a_bug_in_a_handler_propagates_instead_of_becoming_a_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    from runledger.projector import fold as fold_module

    def broken(self: object, ev: object) -> None:
        raise TypeError("a bug of ours")

    monkeypatch.setitem(fold_module.HANDLERS, "ExperimentRenamed", broken)
    with pytest.raises(TypeError, match="a bug of ours"):
        fold(exp_event("ExperimentRenamed", "1", {"new_name": "z"}), state=state_after(create_experiment("a")))
