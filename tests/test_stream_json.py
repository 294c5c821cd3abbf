"""The JSON stream body's fast parse (runledger.dialects.native.stream_json): a plainly valid body
becomes exactly the table the orjson path builds; anything else is left to the orjson path
(None), which keeps the named 400s (tests/test_streaming.py pins those through the server)."""

from __future__ import annotations

import math

import orjson
import pytest

from runledger.dialects.native import stream_arrow, stream_json
from runledger.dialects.request import parse_json

MAX = 100_000


def _body(**fields: object) -> bytes:
    doc = {"run_id": "r1", "keys": ["loss", "acc"], "values": [0.5, 1], "timestamps": [10, 11], "steps": [0, 1]}
    doc.update(fields)
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...})


def test_plain_body_gives_the_same_table_as_the_orjson_path() -> None:
    raw = _body(keys=["a", "b", "a"], values=[0.1, -3, 1e300], timestamps=[1, 2, 2 ** 62], steps=[-5, 0, 7],
                event_id="abcdefgh")
    fields, (table, key_bytes) = stream_json.parse_plain(raw, MAX)
    expected, expected_bytes = stream_arrow.from_json_columns(parse_json(raw), MAX)
    assert fields == {"run_id": "r1", "event_id": "abcdefgh"}
    assert table.equals(expected) and key_bytes == expected_bytes


def test_values_keep_full_double_precision() -> None:
    values = [0.1, 1 / 3, math.pi, 5e-324, 1.7976931348623157e308]
    raw = _body(keys=["k"] * 5, values=values, timestamps=[1] * 5, steps=[0, 1, 2, 3, 4])
    _, (table, _) = stream_json.parse_plain(raw, MAX)
    assert table.column("value").to_pylist() == values


def test_missing_steps_are_zero_and_missing_event_id_is_none() -> None:
    fields, (table, _) = stream_json.parse_plain(_body(steps=..., event_id=...), MAX)
    assert fields["event_id"] is None
    assert table.column("step").to_pylist() == [0, 0]


@pytest.mark.parametrize("raw", [
    _body(values=["NaN", 1]),                 # special-value strings are converted by the orjson path
    _body(values=[None, 1]),                  # null is NaN there
    _body(values=[True, 1]),                  # refused there with a named element
    _body(timestamps=[1.0, 2]),               # whole-number floats are integers there
    _body(steps=[0.5, 1]),
    _body(timestamps=[-1, 2]),
    _body(timestamps=[1, 2 ** 63]),
    _body(keys=["ok", 3]),
    _body(keys=["ok", None]),
    _body(keys=["ok", "bad/../key"]),
    _body(keys=["only-one"]),                 # columns of different lengths
    _body(keys=[], values=[], timestamps=[], steps=[]),
    _body(run_id=5),
    _body(event_id=["x"]),
    _body(values=...),
    b'{"run_id": "r1", "run_id": "r2", "keys": ["a"], "values": [1], "timestamps": [1]}',
    b'"{\\"run_id\\": \\"r1\\"}"',            # JSON inside a JSON string (legacy clients)
    b"[1, 2]",
    b"{not json",
    b"",
    b'{"run_id": "r1", "keys": ["\xff"], "values": [1], "timestamps": [1]}',
], ids=lambda raw: raw[:60].decode(errors="replace"))
def test_anything_not_plainly_valid_is_left_to_the_orjson_path(raw: bytes) -> None:
    assert stream_json.parse_plain(raw, MAX) is None


def test_more_points_than_allowed_are_left_to_the_orjson_path() -> None:
    assert stream_json.parse_plain(_body(), 1) is None


def test_each_thread_parses_independently() -> None:
    from concurrent.futures import ThreadPoolExecutor

    bodies = [_body(keys=[f"k{i}"] * 2, values=[i, i + 0.5]) for i in range(40)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda raw: stream_json.parse_plain(raw, MAX), bodies))
    assert [r[1][0].column("key")[0].as_py() for r in results] == [f"k{i}" for i in range(40)]
    assert [r[1][0].column("value")[1].as_py() for r in results] == [i + 0.5 for i in range(40)]
