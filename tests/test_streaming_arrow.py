"""POST /api/runledger/v1/metrics/stream with an Arrow IPC body (runledger.dialects.native.stream_arrow).

Same contract as the JSON columns (test_streaming.py): run and event id in the query string,
the same checks with the same messages' substance, the same answer on Kafka's acknowledgement.
Real Kafka, real DuckDB, a real server process."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pyarrow as pa
import pytest

from tests.test_streaming import (MAX_DOUBLE, TS, applied_through_marker, assert_the_eight_points_stored,  # noqa: F401
                                  error, history, new_run, poll, rl)

pytestmark = pytest.mark.kafka

ARROW = {"content-type": "application/vnd.apache.arrow.stream"}


def ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def stream_arrow(rl: httpx.Client, run_id: str, table: pa.Table, **params: str) -> httpx.Response:
    return rl.post("metrics/stream", params={"run_id": run_id, **params}, content=ipc(table), headers=ARROW)


def test_arrow_points_become_visible_with_exact_values(api: httpx.Client, rl: httpx.Client) -> None:
    _, run = new_run(api)
    table = pa.table({"key": pa.array(["loss"] * 4 + ["acc"] * 4).dictionary_encode(),
                      "value": pa.array([0.5, -3, None, float("nan"), float("inf"), float("-inf"), 1e308, 0.1]),
                      "timestamp": pa.array([TS + i for i in range(8)], pa.int64()),
                      "step": pa.array([10, 11, 12, 13, 0, 1, 2, 3], pa.int32())})
    r = stream_arrow(rl, run, table, event_id="arrow-0001")
    assert r.status_code == 200, r.text
    assert r.json() == {"event_id": "arrow-0001", "points": 8}
    assert_the_eight_points_stored(api, run)


def test_an_arrow_request_without_steps_logs_step_zero_and_retries_store_once(api: httpx.Client,
                                                                             rl: httpx.Client) -> None:
    _, run = new_run(api)
    table = pa.table({"key": ["m", "m"], "value": pa.array([1, 2], pa.int16()),
                      "timestamp": pa.array([TS, TS + 1], pa.uint64())})
    for _ in range(2):
        assert stream_arrow(rl, run, table, event_id="arrow-retry-1").status_code == 200
    applied_through_marker(rl, api, run)
    assert [(m["step"], m["timestamp"], m["value"]) for m in history(api, run, "m")] == [(0, TS, 1.0), (0, TS + 1, 2.0)]


def test_a_large_arrow_request_is_split_into_events_and_applied_whole(api: httpx.Client, rl: httpx.Client) -> None:
    _, run = new_run(api)
    n = 100_000
    table = pa.table({"key": ["m"] * n, "value": pa.array(range(n), pa.float64()), "timestamp": [TS] * n,
                      "step": pa.array(range(n), pa.int64())})
    assert stream_arrow(rl, run, table, event_id="arrow-big-1").json() == {"event_id": "arrow-big-1", "points": n}
    points = poll(lambda: history(api, run, "m"), lambda h: len(h) >= n)
    assert [m["step"] for m in points] == list(range(n))
    assert all(m["value"] == m["step"] for m in points)


def _t(**cols: Any) -> pa.Table:
    base = {"key": ["a"], "value": [1.0], "timestamp": [TS]}
    return pa.table({**base, **cols})


@pytest.mark.parametrize("table, fragment", [
    (_t(key=["../up"]), "key[0]"),
    (pa.table({"key": ["a", "bad key!"], "value": [1.0, 2.0], "timestamp": [TS, TS]}), "key[1]"),
    (_t(key=["k" * 251]), "maximum length of 250"),
    (_t(key=pa.array([None], pa.string())), "key[0]"),
    (_t(key=[7]), "Column 'key' must hold strings"),
    (_t(value=["1.5"]), "Column 'value' must hold numbers"),
    (_t(timestamp=[-1]), "non-negative"),
    (_t(timestamp=[1.5]), "Column 'timestamp' must hold integers"),
    (_t(timestamp=pa.array([None], pa.int64())), "timestamp[0]"),
    (_t(timestamp=pa.array([2 ** 63], pa.uint64())), "64-bit"),
    (_t(step=["1"]), "Column 'step' must hold integers"),
    (pa.table({"key": ["a"], "timestamp": [TS]}), "no column 'value'"),
    (pa.table({"key": pa.array([], pa.string()), "value": pa.array([], pa.float64()),
               "timestamp": pa.array([], pa.int64())}), "between 1 and 100000"),
])
def test_bad_arrow_columns_are_refused_with_invalid_parameter_value(api: httpx.Client, rl: httpx.Client,
                                                                    table: pa.Table, fragment: str) -> None:
    _, run = new_run(api)
    error(stream_arrow(rl, run, table), 400, "INVALID_PARAMETER_VALUE", fragment)
    applied_through_marker(rl, api, run)
    assert all(history(api, run, k) == [] for k in ("a", "bad key!", "k" * 251))


def test_a_body_that_is_not_arrow_and_a_missing_run_id_are_400(api: httpx.Client, rl: httpx.Client) -> None:
    _, run = new_run(api)
    error(rl.post("metrics/stream", params={"run_id": run}, content=b"{}", headers=ARROW), 400,
          "INVALID_PARAMETER_VALUE", "not an Arrow IPC stream")
    error(rl.post("metrics/stream", content=ipc(_t()), headers=ARROW), 400, "INVALID_PARAMETER_VALUE", "'run_id'")


def test_an_arrow_request_for_an_unknown_run_is_404(rl: httpx.Client) -> None:
    error(stream_arrow(rl, uuid.uuid4().hex, _t()), 404, "RESOURCE_DOES_NOT_EXIST", "not found")


def test_an_arrow_integer_value_beyond_double_precision_is_stored_as_the_nearest_double(api: httpx.Client,
                                                                                         rl: httpx.Client) -> None:
    _, run = new_run(api)
    assert stream_arrow(rl, run, _t(key=["m"], value=pa.array([2 ** 53 + 1], pa.int64()))).status_code == 200
    assert [m["value"] for m in poll(lambda: history(api, run, "m"), bool)] == [float(2 ** 53)]
