"""docs/design.md, invariant 7: the log is forever. tests/data keeps sample events of every schema
version ever written; each must still decode and fold to the same tables. A change to the
event contract that breaks an old sample needs an upcaster, not an edit of the sample."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from runledger.ingest.contract.codec import decode
from runledger.ingest.contract.events import EVENT_TYPES
from runledger.projector.fold import FoldState, LogRecord, fold_batch

DATA = Path(__file__).parent / "data"
SAMPLES = sorted(DATA.glob("events-v*.jsonl"))


def _records(path: Path) -> list[LogRecord]:
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    return [LogRecord(0, i, decode(line)) for i, line in enumerate(lines)]


def test_there_is_a_sample_file_for_every_schema_version_up_to_the_current_one() -> None:
    from runledger.ingest.contract.events import SCHEMA_VERSION

    assert [p.name for p in SAMPLES] == [f"events-v{v}.jsonl" for v in range(1, SCHEMA_VERSION + 1)]


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_event_decodes_and_folds_without_rejection(path: Path) -> None:
    result = fold_batch(FoldState(), _records(path))
    assert {e: v.error_code for e, v in result.verdicts.items() if not v.applied} == {}


def test_the_v1_samples_fold_to_the_tables_they_always_did() -> None:
    ch = fold_batch(FoldState(), _records(DATA / "events-v1.jsonl")).changes
    exp = ch.experiments["1"]
    assert (exp.name, exp.lifecycle_stage, exp.artifact_location) == ("contract-2", "active", "file:///tmp/art/1")
    assert ch.experiment_tags == {("1", "team"): "a", ("1", "k"): None}
    run = ch.runs["r1"]
    assert (run.status, run.end_time, run.lifecycle_stage, run.run_name) == ("FINISHED", 1700000000011, "active", "first")
    assert ch.params == {("r1", "lr"): "0.1", ("r1", "epochs"): "3"}
    assert ch.tags == {("r1", "mlflow.user"): "ada", ("r1", "mlflow.runName"): "first", ("r1", "t"): None,
                       ("r1", "stage"): "dev"}
    assert ch.metrics.key == ["loss", "loss", "acc", "loss"] and math.isnan(ch.metrics.value[1])
    assert ch.latest["timestamp"][("r1", "loss")].value == 0.25
    assert ch.datasets[("r1", "train", "abc")]["context"] == "training"
    model = ch.models["m-0123456789abcdef0123456789abcdef"]
    assert (model.name, model.status, model.source_run_id) == ("clf", "LOGGED_MODEL_READY", "r1")
    assert ch.model_params == {("m-0123456789abcdef0123456789abcdef", "alpha"): "1",
                               ("m-0123456789abcdef0123456789abcdef", "beta"): "2"}
    assert ch.model_tags == {("m-0123456789abcdef0123456789abcdef", "owner"): None,
                             ("m-0123456789abcdef0123456789abcdef", "stage"): "y"}


def test_the_samples_cover_every_event_type_of_their_version() -> None:
    covered = {r.event.type for r in _records(SAMPLES[-1]) if r.event}
    # Event types added by later features must get a sample line in the newest file.
    assert EVENT_TYPES - covered == set()
