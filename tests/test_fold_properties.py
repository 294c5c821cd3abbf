"""Properties of the fold over random event streams (hypothesis), no Kafka and no DuckDB.

Streams are a few runs' events (RunCreated first, usually; then params, metrics, tags, tag
deletions, deletes, restores, updates, log-batches, dataset inputs and the odd malformed event) drawn from tiny
alphabets so that conflicts, NaN values and timestamp/step ties are common. Every event goes
through `ingest.contract.codec` (encode, then decode) as it would through Kafka.

Specified here (docs/design.md, invariants 1-4):
(a) cutting the log into batches anywhere, carrying state between batches as the store loads
    it, gives the same tables, verdicts and audit log as folding it in one batch;
(b) any interleaving of per-run streams that keeps each run's order gives the same tables;
(c) a duplicated event (same event id, delivered again later) changes nothing;
(d) a param's first accepted value survives everything after it, and every later different
    value is rejected with INVALID_PARAMETER_VALUE;
(e) the latest metric is the greatest accepted point under the rule's ordering, computed by an
    independent oracle: order by (timestamp, value) or (step, timestamp, value), NaN counted as
    0 (MLflow's SQL store), the first logged of equal points kept.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runledger.ingest.contract.codec import decode, encode
from runledger.ingest.contract.events import Envelope
from runledger.projector.fold import LATEST_RULES, FoldState, LogRecord, fold_batch
from tests.test_fold import (create_experiment, create_run, dataset, delete_tag, ev, exp_event, log_batch,
                             log_inputs, log_metrics, log_params, merge, metric_rows, set_tags)

NAN = math.nan
RUNS = ["r1", "r2", "r3"]
KEYS = ["a", "b"]
STRINGS = ["x", "y"]
TAG_KEYS = ["t", "u", "mlflow.runName"]
VALUES = [-1.0, 0.0, 0.5, 1.0, NAN]
TIMES = [0, 1, 2]
STEPS = [0, 1, 2]
NAMES = ["n1", "n2", "n3"]

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------------
# strategies: an "op" is a function (run_id, event_id) -> Envelope

points = st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(VALUES), st.sampled_from(TIMES),
                            st.sampled_from(STEPS)), max_size=4)
param_sets = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(STRINGS), min_size=1, max_size=2)
tag_lists = st.lists(st.tuples(st.sampled_from(TAG_KEYS), st.sampled_from(STRINGS)), min_size=1, max_size=3)

run_ops = st.one_of(
    param_sets.map(lambda ps: lambda run, eid: log_params(*ps.items(), run=run, event_id=eid)),
    points.map(lambda pts: lambda run, eid: log_metrics(*pts, run=run, event_id=eid)),
    points.map(lambda pts: lambda run, eid: log_metrics(*pts, run=run, event_id=eid)),
    tag_lists.map(lambda ts: lambda run, eid: set_tags(*ts, run=run, event_id=eid)),
    st.sampled_from(TAG_KEYS).map(lambda k: lambda run, eid: delete_tag(k, run=run, event_id=eid)),
    st.tuples(st.dictionaries(st.sampled_from(KEYS), st.sampled_from(STRINGS), max_size=2), points,
              st.lists(st.tuples(st.sampled_from(TAG_KEYS), st.sampled_from(STRINGS)), max_size=2)).map(
        lambda b: lambda run, eid: log_batch(list(b[0].items()), b[1], b[2], run=run, event_id=eid)),
    st.just(lambda run, eid: ev("RunDeleted", run=run, event_id=eid)),
    st.just(lambda run, eid: ev("RunRestored", run=run, event_id=eid)),
    st.tuples(st.sampled_from(["FINISHED", "FAILED", "BOGUS", None]), st.sampled_from([None, 5]),
              st.sampled_from([None, "renamed"])).map(
        lambda u: lambda run, eid: ev("RunUpdated", {"status": u[0], "end_time": u[1], "run_name": u[2]},
                                      run=run, event_id=eid)),
    st.lists(st.tuples(st.sampled_from(["train", "eval"]), st.sampled_from(["d1", "d2"]),
                       st.sampled_from(STRINGS)), min_size=1, max_size=2).map(
        lambda ds: lambda run, eid: log_inputs(*[dataset(n, d, source=src) for n, d, src in ds],
                                               run=run, event_id=eid)),
    st.just(lambda run, eid: create_run(run, name="again", event_id=eid)),
    st.just(lambda run, eid: ev("MetricsLogged", {"keys": ["a"], "values": [], "timestamps": [], "steps": []},
                                run=run, event_id=eid)),
)


@st.composite
def run_stream(draw: Any, run: str) -> list[Envelope]:
    """One run's events in log order; usually starting with RunCreated, sometimes never created."""
    ops = draw(st.lists(run_ops, max_size=10))
    events = [create_run(run, name=f"{run}-name", event_id=f"{run}-0")] if draw(st.integers(0, 9)) else []
    events += [op(run, f"{run}-{i + 1}") for i, op in enumerate(ops)]
    return events


streams = st.tuples(*[run_stream(run) for run in RUNS])


@st.composite
def interleaving(draw: Any, per_run: tuple[list[Envelope], ...]) -> list[tuple[int, int, Envelope]]:
    """Merge per-run streams in a drawn order that keeps each run's order.

    Each item is (partition, offset, event): one partition per run, as run events are keyed by run id.
    """
    order = draw(st.permutations([i for i, s in enumerate(per_run) for _ in s]))
    position = [0] * len(per_run)
    out = []
    for i in order:
        out.append((i, position[i], per_run[i][position[i]]))
        position[i] += 1
    return out


cuts = st.sets(st.integers(0, 60), max_size=8)

experiment_ops = st.one_of(
    st.sampled_from(NAMES).map(lambda n: lambda eid: create_experiment(n, event_id=eid)),
    st.just(lambda eid: ev("ExperimentCreated", {"name": "bad", "artifact_location": None}, run=None,
                           event_id=eid)),  # malformed: no artifact_root
    st.tuples(st.sampled_from(["1", "2", "3"]), st.sampled_from(NAMES)).map(
        lambda r: lambda eid: exp_event("ExperimentRenamed", r[0], {"new_name": r[1]}, event_id=eid)),
    st.sampled_from(["1", "2", "3"]).map(lambda e: lambda eid: exp_event("ExperimentDeleted", e, event_id=eid)),
    st.sampled_from(["1", "2", "3"]).map(lambda e: lambda eid: exp_event("ExperimentRestored", e, event_id=eid)),
    st.tuples(st.sampled_from(["1", "2"]), st.sampled_from(KEYS), st.sampled_from(STRINGS)).map(
        lambda t: lambda eid: exp_event("ExperimentTagSet", t[0], {"key": t[1], "value": t[2]}, event_id=eid)),
    st.tuples(st.sampled_from(["1", "2"]), st.sampled_from(KEYS)).map(
        lambda t: lambda eid: exp_event("ExperimentTagDeleted", t[0], {"key": t[1]}, event_id=eid)),
)
experiment_streams = st.lists(experiment_ops, max_size=15).map(
    lambda ops: [op(f"x-{i}") for i, op in enumerate(ops)])

# ---------------------------------------------------------------------------------------------
# folding a log and taking a comparable snapshot of the result


def records_of(log: Iterable[tuple[int, int, Envelope]]) -> list[LogRecord]:
    """As the projector reads them: every event through the codec, as it travels through Kafka."""
    return [LogRecord(p, o, decode(encode(e))) for p, o, e in log]


def in_one_partition(events: list[Envelope]) -> list[tuple[int, int, Envelope]]:
    return [(0, offset, e) for offset, e in enumerate(events)]


def chunks(records: list[LogRecord], at: Iterable[int]) -> list[list[LogRecord]]:
    bounds = [0, *sorted(c for c in set(at) if 0 < c < len(records)), len(records)]
    return [records[a:b] for a, b in zip(bounds, bounds[1:])]


def _nan_safe(value: float) -> float | str:
    return "nan" if math.isnan(value) else value


class Replay:
    """Fold records batch by batch, carrying state as the store would; keep everything emitted."""

    def __init__(self, records: list[LogRecord], cut_at: Iterable[int] = ()) -> None:
        self.state = FoldState()
        self.verdicts: dict[str, Any] = {}
        self.metrics: list[tuple[Any, ...]] = []
        self.log: list[Any] = []
        self.datasets: dict[tuple[str, str, str], dict[str, Any]] = {}
        for batch in chunks(records, cut_at):
            result = fold_batch(self.state, batch)
            self.state = merge(self.state, result)
            for key, row in result.changes.datasets.items():
                self.datasets.setdefault(key, row)  # the store's INSERT OR IGNORE
            self.verdicts.update(result.verdicts)
            self.metrics += metric_rows(result.changes)
            self.log += result.changes.log

    def tables(self) -> dict[str, Any]:
        s = self.state
        return {
            "experiments": s.experiments, "experiment_tags": s.experiment_tags,
            "runs": s.runs, "params": s.params, "tags": s.tags,
            "latest": {rule: {k: (_nan_safe(p.value), p.timestamp, p.step) for k, p in s.latest[rule].items()}
                       for rule in LATEST_RULES},
            "datasets": self.datasets, "verdicts": self.verdicts,
        }

    def metrics_by_run(self) -> dict[str, list[tuple[Any, ...]]]:
        by_run: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for row in self.metrics:
            by_run[row[0]].append(row)
        return dict(by_run)

    def log_by_position(self) -> list[Any]:
        return sorted(self.log, key=lambda e: (e.partition, e.offset))


# ---------------------------------------------------------------------------------------------
# (a) batch boundaries do not matter


@SETTINGS
@given(data=st.data(), per_run=streams, cut_at=cuts)
def test_cutting_the_log_into_batches_anywhere_gives_the_same_result(
        data: Any, per_run: tuple[list[Envelope], ...], cut_at: set[int]) -> None:
    records = records_of(data.draw(interleaving(per_run)))
    whole, split = Replay(records), Replay(records, cut_at)
    assert split.tables() == whole.tables()
    assert split.metrics == whole.metrics
    assert split.log == whole.log


@SETTINGS
@given(events=experiment_streams, cut_at=cuts)
def test_cutting_an_experiment_log_into_batches_anywhere_gives_the_same_result(
        events: list[Envelope], cut_at: set[int]) -> None:
    records = records_of(in_one_partition(events))
    whole, split = Replay(records), Replay(records, cut_at)
    assert split.tables() == whole.tables()
    assert split.log == whole.log


# ---------------------------------------------------------------------------------------------
# (b) partition interleaving does not matter


@SETTINGS
@given(data=st.data(), per_run=streams, cut_at=cuts, other_cut_at=cuts)
def test_any_interleaving_that_keeps_each_runs_order_gives_the_same_result(
        data: Any, per_run: tuple[list[Envelope], ...], cut_at: set[int], other_cut_at: set[int]) -> None:
    one = Replay(records_of(data.draw(interleaving(per_run))), cut_at)
    other = Replay(records_of(data.draw(interleaving(per_run))), other_cut_at)
    assert other.tables() == one.tables()
    assert other.metrics_by_run() == one.metrics_by_run()
    assert other.log_by_position() == one.log_by_position()


# ---------------------------------------------------------------------------------------------
# (c) a redelivered or re-produced event is applied once


@SETTINGS
@given(data=st.data(), per_run=streams, cut_at=cuts)
def test_delivering_any_event_again_later_changes_nothing(
        data: Any, per_run: tuple[list[Envelope], ...], cut_at: set[int]) -> None:
    events = [e for _, _, e in data.draw(interleaving(per_run))]
    if not events:
        return
    original = data.draw(st.integers(0, len(events) - 1), label="duplicated event")
    again_at = data.draw(st.integers(original + 1, len(events)), label="delivered again at")
    with_dup = events[:again_at] + [events[original]] + events[again_at:]

    once = Replay(records_of(in_one_partition(events)), cut_at)
    twice = Replay(records_of(in_one_partition(with_dup)), cut_at)
    assert twice.tables() == once.tables()
    assert twice.metrics == once.metrics
    assert [(e.event_id, e.error_code, e.message) for e in twice.log] == [
        (e.event_id, e.error_code, e.message) for e in once.log]


# ---------------------------------------------------------------------------------------------
# (d) params are write-once


def _params_of(e: Envelope) -> list[tuple[str, str]]:
    if e.type in ("ParamsLogged", "RunBatchLogged"):
        return [(k, v) for k, v in e.payload.get("params") or []]
    return []


@SETTINGS
@given(data=st.data(), per_run=streams, cut_at=cuts)
def test_first_accepted_param_value_survives_and_later_other_values_are_rejected(
        data: Any, per_run: tuple[list[Envelope], ...], cut_at: set[int]) -> None:
    log = data.draw(interleaving(per_run))
    replay = Replay(records_of(log), cut_at)
    first: dict[tuple[str, str], str] = {}
    for _, _, e in log:
        pairs = _params_of(e)
        verdict = replay.verdicts[e.event_id]
        if any((e.run_id, k) in first and first[(e.run_id, k)] != v for k, v in pairs):
            assert verdict.error_code == "INVALID_PARAMETER_VALUE", (e, verdict)
        if verdict.applied:
            for k, v in pairs:
                first.setdefault((e.run_id, k), v)
    assert replay.state.params == first


# ---------------------------------------------------------------------------------------------
# (e) the latest metric, by an independent oracle


def _metric_points(e: Envelope) -> list[tuple[str, float, int, int]]:
    if e.type not in ("MetricsLogged", "RunBatchLogged"):
        return []
    cols = e.payload if e.type == "MetricsLogged" else e.payload["metrics"]
    return [(k, NAN if v is None else v, t, s)
            for k, v, t, s in zip(cols["keys"], cols["values"], cols["timestamps"], cols["steps"])]


def _ordering(rule: str, point: tuple[float, int, int]) -> tuple[float, ...]:
    value, ts, step = point
    as_stored = 0.0 if math.isnan(value) else value
    return (ts, as_stored) if rule == "timestamp" else (step, ts, as_stored)


@SETTINGS
@given(data=st.data(), per_run=streams, cut_at=cuts)
def test_latest_metric_is_the_greatest_accepted_point_under_the_rule(
        data: Any, per_run: tuple[list[Envelope], ...], cut_at: set[int]) -> None:
    log = data.draw(interleaving(per_run))
    replay = Replay(records_of(log), cut_at)
    accepted: dict[tuple[str, str], list[tuple[float, int, int]]] = defaultdict(list)
    for _, _, e in log:
        if replay.verdicts[e.event_id].applied:
            for key, value, ts, step in _metric_points(e):
                accepted[(e.run_id, key)].append((value, ts, step))
    for rule in LATEST_RULES:
        # max() keeps the first of equal maxima: a point equal to the latest does not replace it
        expected = {k: max(pts, key=lambda p: _ordering(rule, p)) for k, pts in accepted.items()}
        expected = {k: (_nan_safe(v), ts, step) for k, (v, ts, step) in expected.items()}
        assert replay.tables()["latest"][rule] == expected, rule


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["r1", "r2"]), st.sampled_from(["a", "b", "c"]),
                          st.one_of(st.sampled_from([-1.0, 0.0, 0.5, 1.0]), st.just(math.nan)),
                          st.integers(0, 3), st.integers(-2, 2)), max_size=60))
def test_arrow_and_python_latest_candidates_agree(rows: list) -> None:
    import pyarrow as pa

    from runledger.projector import rules
    from runledger.projector.fold import METRIC_SCHEMA

    table = pa.table({name: [r[i] for r in rows] for i, name in enumerate(METRIC_SCHEMA.names)},
                     schema=METRIC_SCHEMA)

    def normalised(found: dict) -> dict:
        return {rule: sorted((r, k, "nan" if v != v else v, t, s) for r, k, v, t, s in c) for rule, c in found.items()}

    assert normalised(rules.candidates_arrow(table)) == normalised(rules.candidates_python(table))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]),
                                   st.one_of(st.sampled_from([-1.0, 0.0, 0.5, 1.0]), st.just(math.nan)),
                                   st.integers(0, 3), st.integers(-2, 2)), max_size=300), max_size=5),
       st.lists(st.sampled_from(["r1", "r2"]), min_size=5, max_size=5))
def test_batch_candidates_from_one_run_chunks_agree_with_the_python_pass(chunks: list, runs: list) -> None:
    """Large batches are cut to the rows at a (run, key) maximum before comparing."""
    import pyarrow as pa

    from runledger.projector import rules
    from runledger.projector.fold import METRIC_SCHEMA

    tables = [pa.table({"run_id": [run] * len(rows), **{name: [r[i] for r in rows] for i, name in
                                                        enumerate(METRIC_SCHEMA.names[1:])}}, schema=METRIC_SCHEMA)
              for run, rows in zip(runs, chunks)]
    whole = pa.concat_tables(tables) if tables else METRIC_SCHEMA.empty_table()

    def normalised(found: dict) -> dict:
        return {rule: sorted((r, k, "nan" if v != v else v, t, s) for r, k, v, t, s in c) for rule, c in found.items()}

    # A low threshold, so that small generated batches take the large-batch (Arrow) path too.
    with mock.patch.object(rules, "SMALL_BATCH_POINTS", 4):
        found = rules.batch_latest_candidates(tables)
        found_by_chunk = rules.batch_latest_candidates(tables, one_run_per_chunk=True)  # the fold's way
    assert normalised(found) == normalised(rules.candidates_python(whole))
    assert normalised(found_by_chunk) == normalised(rules.candidates_python(whole))
