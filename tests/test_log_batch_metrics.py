"""log-batch's plain-metrics fast path gives exactly what the general path gives, and steps
aside (returns None) whenever a point is not plain, so errors keep their exact messages."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runledger.ingest.errors import MlflowError
from runledger.ingest.contract.events import metrics_columns
from runledger.dialects.request import Fields
from runledger.dialects.mlflow.writes import _metric, _plain_metric_columns

keys = st.sampled_from(["loss", "acc", "a/b", "x.y", "sp ace", "bad..//", "/abs", "", "k:1"])
numbers = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=False), st.just(float("inf")),
                    st.booleans(), st.text(max_size=3), st.none())
points = st.fixed_dictionaries(
    {"key": st.one_of(keys, st.integers())},
    optional={"value": numbers, "timestamp": numbers, "step": numbers,
              "model_id": st.sampled_from(["", "m-1"])})


def general_path(raw: list[dict[str, Any]]) -> dict[str, list[Any]] | None:
    try:
        return metrics_columns([_metric(Fields(m, f"metrics[{i}].")) for i, m in enumerate(raw)])
    except MlflowError:
        return None


@settings(deadline=None, max_examples=300)
@given(st.lists(points, max_size=6))
def test_fast_path_agrees_with_the_general_path_or_steps_aside(raw: list[dict[str, Any]]) -> None:
    fast = _plain_metric_columns(raw)
    if fast is not None:
        assert fast == general_path(raw)


def test_a_typical_batch_takes_the_fast_path() -> None:
    raw = [{"key": f"k{i % 3}", "value": i * 0.5 if i % 2 else i, "timestamp": 1_700_000_000_000 + i, "step": i}
           for i in range(100)] + [{"key": "no-step", "value": 1.0, "timestamp": 5}]
    fast = _plain_metric_columns(raw)
    assert fast is not None and fast == general_path(raw)
    assert fast["steps"][-1] == 0 and all(isinstance(v, float) for v in fast["values"])


def test_points_naming_a_model_or_a_bad_key_take_the_general_path() -> None:
    assert _plain_metric_columns([{"key": "k", "value": 1.0, "timestamp": 1, "model_id": "m"}]) is None
    assert _plain_metric_columns([{"key": "../x", "value": 1.0, "timestamp": 1}]) is None
    assert _plain_metric_columns([{"key": "k", "value": "1.0", "timestamp": 1}]) is None
    assert _plain_metric_columns([{"key": "k", "value": 1.0, "timestamp": -1}]) is None
