"""log-batch's Arrow fast path (`runledger.dialects.mlflow.writes._plain_metric_table`) accepts exactly the batches
the per-point check (`_plain_metric_columns`) accepts, and yields the same points."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from runledger.ingest.contract import metric_table
from runledger.dialects.mlflow.writes import _plain_metric_columns, _plain_metric_table

_KEYS = st.sampled_from(["loss", "acc", "a/b", "x" * 250, "bad key!", "../up", "", "é"])
_INTS = st.integers(min_value=-(2**64), max_value=2**64)
_NUMBERS = st.one_of(_INTS, st.floats(allow_nan=False, allow_infinity=False), st.booleans())
_ODD = st.one_of(st.none(), st.text(max_size=3), st.booleans(), st.lists(st.integers(), max_size=1))


@st.composite
def metric(draw: Any) -> Any:
    m: dict[str, Any] = {"key": draw(_KEYS), "value": draw(_NUMBERS), "timestamp": draw(_INTS)}
    if draw(st.booleans()):
        m["step"] = draw(st.one_of(_INTS, st.none()))
    mutation = draw(st.integers(0, 12))
    if mutation == 0:
        m[draw(st.sampled_from(["key", "value", "timestamp", "step"]))] = draw(_ODD)
    elif mutation == 1:
        del m[draw(st.sampled_from(["key", "value", "timestamp"]))]
    elif mutation == 2:
        m[draw(st.sampled_from(["model_id", "dataset_name", "extra"]))] = "x"
    elif mutation == 3:
        return draw(_ODD)
    return m


def _plain_batch(n: int, first_step: int = 0) -> list[dict[str, Any]]:
    return [{"key": f"m{i % 10}", "value": i * 0.5, "timestamp": 1_700_000_000_000 + i, "step": first_step + i}
            for i in range(n)]


@settings(max_examples=400, deadline=None)
@given(st.lists(metric(), min_size=1, max_size=6), st.integers(0, 3))
def test_the_fast_path_accepts_what_the_loop_accepts_with_the_same_points(odd: list[Any], at: int) -> None:
    # mostly plain points, with a few drawn ones (often invalid) mixed in, through JSON as sent
    if not _json_ok(odd):
        return
    raw = orjson.loads(orjson.dumps(_plain_batch(70)[:at * 20] + odd + _plain_batch(70)[at * 20:]))
    table, cols = _plain_metric_table(raw), _plain_metric_columns(raw)
    if table is not None:
        assert cols is not None and table.equals(metric_table.from_columns(cols))
    elif cols is not None:
        # the one shape left to the loop: an integer value a double cannot hold exactly (Arrow
        # will not convert it next to floats, nor beyond 64 bits; the loop takes the nearest double)
        assert any(type(m["value"]) is int and abs(m["value"]) > 2**53 for m in raw)


def _json_ok(items: list[Any]) -> bool:
    try:
        orjson.dumps(items)
    except TypeError:
        return False  # integers beyond 64 bits: orjson will not write them, so no client sends them
    return True


def test_a_plain_batch_takes_the_fast_path() -> None:
    table = _plain_metric_table(_plain_batch(1000))
    assert table is not None and table.equals(metric_table.from_columns(_plain_metric_columns(_plain_batch(1000))))


def test_a_missing_or_null_step_is_step_zero() -> None:
    raw = _plain_batch(100)
    for i, m in enumerate(raw):
        if i % 2:
            del m["step"]
        else:
            m["step"] = None
    table = _plain_metric_table(raw)
    assert table is not None and set(table.column("step").to_pylist()) == {0}


def test_integer_values_become_the_nearest_double() -> None:
    raw = _plain_batch(100)
    for i, m in enumerate(raw):
        m["value"] = i
    raw[3]["value"] = 2**53 + 1
    table = _plain_metric_table(raw)
    assert table is not None and table.column("value")[3].as_py() == float(2**53 + 1)
