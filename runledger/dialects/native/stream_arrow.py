"""The stream endpoint's Arrow body: an Arrow IPC stream of metric points, checked by the same
rules as the JSON columns (runledger.dialects.native.stream) with whole-column Arrow kernels.

Columns: `key` (string, large string or dictionary of strings), `value` (any integer or float
type; null is NaN), `timestamp` (integer, milliseconds, >= 0), and optionally `step`
(integer, 0 if absent). Other columns are ignored. The points go into the log as they are
(ingest.contract.codec writes them as Arrow), so a client that already holds columns (NumPy, pandas,
Polars) never turns them into Python objects or JSON.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from runledger.ingest import limits
from runledger.ingest.contract import arrow_ipc, metric_table
from runledger.ingest.errors import InvalidParameterValue

CONTENT_TYPE = "application/vnd.apache.arrow.stream"
COLUMNS = ("key", "value", "timestamp", "step")


def parse_table(body: bytes, max_points: int, max_bytes: int) -> tuple[pa.Table, int]:
    """The body's points in `metric_table.SCHEMA` and the longest key's UTF-8 size; raises
    MLflow's 400 for the first problem. Compressed buffers are accepted, but the body may take
    at most `max_bytes` once decompressed (as an uncompressed body may), counted before
    anything is decompressed; only the columns used are read."""
    try:
        table = arrow_ipc.read_bounded(body, max_bytes, COLUMNS)
    except arrow_ipc.StreamRefused as e:
        raise InvalidParameterValue(f"The body is not an Arrow IPC stream we can accept: {e}.") from None
    n = table.num_rows
    if not 1 <= n <= max_points:
        raise InvalidParameterValue(
            f"A stream request must carry between 1 and {max_points} points, got {n}. "
            "Please split up your request into multiple requests.")
    for name in ("key", "value", "timestamp"):
        if name not in table.column_names:
            raise InvalidParameterValue(f"The Arrow stream has no column '{name}' "
                                        f"(columns: {', '.join(table.column_names)}).")
    keys = _strings(table.column("key"))
    values = _floats(table.column("value"))
    timestamps = _int64s(table.column("timestamp"), "timestamp")
    steps = _int64s(table.column("step"), "step") if "step" in table.column_names else pa.array([0] * n, pa.int64())
    if pc.min(timestamps).as_py() < 0:
        i = pc.index(pc.less(timestamps, 0), True).as_py()
        raise limits.invalid_value(f"timestamp[{i}]", timestamps[i].as_py(), "Metric timestamp must be non-negative.")
    max_key_bytes = _check_keys(keys)
    return pa.Table.from_arrays([keys, values, timestamps, steps], schema=metric_table.SCHEMA), max_key_bytes


def from_json_columns(doc: dict[str, Any], max_points: int) -> tuple[pa.Table, int] | None:
    """The JSON body's columns as a checked table when they are plainly valid (strings,
    numbers or null, integers), else None: the caller then runs the element-by-element checks,
    which also accept what this does not (special-value strings, whole-number floats) and name
    the first bad element. Converting once here is cheaper than checking the lists and then
    converting them again to write the event as Arrow."""
    raw = [doc.get("keys"), doc.get("values"), doc.get("timestamps")]
    steps = doc.get("steps")
    if not all(isinstance(c, list) for c in raw) or not (steps is None or isinstance(steps, list)):
        return None
    n = len(raw[0])
    if not 1 <= n <= max_points or any(len(c) != n for c in raw) or (steps is not None and len(steps) != n):
        return None
    try:
        keys, values, timestamps = (pa.array(c) for c in raw)
        step_array = pa.array(steps) if steps is not None else pa.array([0] * n, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None
    if keys.type != pa.string() or keys.null_count or values.type not in (pa.float64(), pa.int64(), pa.null()) \
            or timestamps.type != pa.int64() or timestamps.null_count or step_array.type != pa.int64() \
            or step_array.null_count or pc.min(timestamps).as_py() < 0:
        return None
    distinct = pc.unique(keys).to_pylist()
    if not all(limits.key_ok(k) for k in distinct):
        return None
    # JSON has no infinities, so no clamping; null is NaN.
    value_array = pc.fill_null(values.cast(pa.float64(), safe=False), math.nan)  # as metric_table does
    table = pa.Table.from_arrays([keys, value_array, timestamps, step_array], schema=metric_table.SCHEMA)
    return table, max(len(k.encode()) for k in distinct)



def _strings(column: pa.ChunkedArray) -> pa.Array:
    t = column.type
    if pa.types.is_dictionary(t) and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)):
        column = column.cast(t.value_type)
    elif not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        raise InvalidParameterValue(f"Column 'key' must hold strings, got {t}.")
    keys = column.combine_chunks().cast(pa.string())
    try:
        keys.validate(full=True)
    except pa.ArrowInvalid:
        raise InvalidParameterValue("Column 'key' must hold valid UTF-8 strings.") from None
    if keys.null_count:
        i = pc.index(pc.is_null(keys), True).as_py()
        raise limits.invalid_value(f"key[{i}]", None, "Expected a string.")
    return keys


def _floats(column: pa.ChunkedArray) -> pa.Array:
    t = column.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        raise InvalidParameterValue(f"Column 'value' must hold numbers, got {t}.")
    values = pc.fill_null(column.combine_chunks().cast(pa.float64(), safe=False), math.nan)  # null is NaN, as in JSON
    # Infinities are clamped, as MLflow's SQL store does (and as the JSON path does).
    values = pc.if_else(pc.greater(values, limits.MAX_DOUBLE), limits.MAX_DOUBLE, values)
    return pc.if_else(pc.less(values, -limits.MAX_DOUBLE), -limits.MAX_DOUBLE, values)


def _int64s(column: pa.ChunkedArray, name: str) -> pa.Array:
    t = column.type
    if not pa.types.is_integer(t):
        raise InvalidParameterValue(f"Column '{name}' must hold integers, got {t}.")
    values = column.combine_chunks()
    if values.null_count:
        i = pc.index(pc.is_null(values), True).as_py()
        raise limits.invalid_value(f"{name}[{i}]", None, "Expected an integer.")
    if t == pa.uint64() and pc.max(values).as_py() > 2 ** 63 - 1:
        i = pc.index(pc.greater(values, pa.scalar(2 ** 63 - 1, pa.uint64())), True).as_py()
        raise limits.invalid_value(f"{name}[{i}]", values[i].as_py(), "Out of range for a 64-bit integer.")
    return values.cast(pa.int64())


def _check_keys(keys: pa.Array) -> int:
    """Every distinct key passes limits.check_key (the first bad one in row order is named)."""
    distinct = pc.unique(keys).to_pylist()
    for k in distinct:
        try:
            limits.check_key(k)
        except InvalidParameterValue:
            i = pc.index(keys, k).as_py()
            limits.check_key(k, f"key[{i}]")
            raise
    return max(len(k.encode()) for k in distinct)
