"""Metric points as one Arrow table (key, value, timestamp, step), and its bytes in the log.

The columnar payload of MetricsLogged / RunBatchLogged is four JSON lists. Large ones travel in
the log as an Arrow IPC stream instead (see ingest.contract.codec): the projector then reads them
without parsing JSON or converting Python lists, which was most of folding a streamed event.
Both forms hold the same points, checked by the same rules (`from_columns`, `from_ipc`).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from runledger.ingest.contract import arrow_ipc

# pyarrow's type inference (`pa.array(list)`, on the hot path) tries to import pandas on every
# call when it is not installed, a file-system search each time (~20% of converting a
# 20,000-point event). Marking it absent makes that import fail at once; nothing changes where
# it is installed. (The same holds for dateutil, which is why it is a dependency.)
# Only without NumPy: with NumPy installed pyarrow's pandas shim takes the marker for the module
# and fails on its version (AttributeError at import), so there the search is left as it was.
if "pandas" not in sys.modules and importlib.util.find_spec("pandas") is None \
        and importlib.util.find_spec("numpy") is None:
    sys.modules["pandas"] = None  # type: ignore[assignment]

SCHEMA = pa.schema([("key", pa.string()), ("value", pa.float64()), ("timestamp", pa.int64()),
                    ("step", pa.int64())])
# What a record's points may take in memory once read. A record is at most 16 MiB
# (ingest.producer.MAX_EVENT_BYTES); ingest compresses its buffers (`to_ipc`) but an event holds
# at most about 8 MiB of points uncompressed (runledger.dialects.native.stream), so only a
# record written around ingest could claim more (a decompression bomb).
MAX_DECODED_BYTES = 64 * 1024 * 1024


class BadPoints(TypeError):
    """Metric columns that are not four equally long columns of the right types."""


def from_columns(cols: dict[str, Any]) -> pa.Table:
    """The payload's four lists as a table, checked by the types Arrow infers for each whole
    column (per-point Python work would be the hot path). JSON null values are NaN."""
    raw = [cols["keys"], cols.get("values", []), cols.get("timestamps", []), cols.get("steps", [])]
    if not all(isinstance(c, list) for c in raw):
        raise BadPoints("metric columns must be lists")
    if len({len(c) for c in raw}) != 1:
        raise BadPoints("metric columns have different lengths")
    try:
        keys, values, timestamps, steps = (pa.array(c) for c in raw)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
        raise BadPoints(f"metric columns of mixed or unsupported types: {e}") from None
    n = len(keys)
    if n and keys.type != pa.string() or keys.null_count:
        raise BadPoints("metric keys must be strings")
    if n and (timestamps.type != pa.int64() or steps.type != pa.int64()):
        raise BadPoints("metric timestamps and steps must be integers")
    if n and values.type not in (pa.float64(), pa.int64(), pa.null()):
        raise BadPoints("metric values must be numbers")
    # safe=False: an integer beyond 2**53 becomes the nearest double, as MLflow parses it.
    values = pc.fill_null(values.cast(pa.float64(), safe=False), math.nan)
    return pa.Table.from_arrays([keys.cast(pa.string()), values, timestamps.cast(pa.int64()),
                                 steps.cast(pa.int64())], schema=SCHEMA)


# Buffers in the log are LZ4-compressed (since this version; records written before are
# uncompressed, and `from_ipc` reads both, as every earlier reader does: the IPC stream says
# per batch whether it is compressed). A 20,000-point event shrinks from ~600 KB to 130-280 KB
# for ~0.03 s of CPU per million points (encode plus decode): the broker copies, checksums and
# stores 2-4x fewer bytes, and its G1 heap no longer sees each produce request as a humongous
# (>= half a region) allocation, which had it spending as much CPU in GC as in serving.
IPC_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, SCHEMA, options=IPC_WRITE_OPTIONS) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes | memoryview) -> pa.Table:
    """The table in an IPC stream written by `to_ipc`, checked as strictly as `from_columns`
    (keys valid UTF-8, offsets in range: DuckDB would refuse them only at commit time)."""
    try:
        table = arrow_ipc.read_bounded(data, MAX_DECODED_BYTES)
    except arrow_ipc.StreamRefused as e:
        raise BadPoints(f"not an Arrow IPC stream of metric points: {e}") from None
    if not table.schema.equals(SCHEMA):
        raise BadPoints(f"metric points have schema {table.schema}, expected {SCHEMA}")
    try:
        table.validate(full=True)
    except pa.ArrowInvalid as e:
        raise BadPoints(f"invalid metric points: {e}") from None
    if any(table.column(name).null_count for name in ("key", "timestamp", "step")):
        raise BadPoints("metric keys, timestamps and steps cannot be null")
    value = table.column("value").combine_chunks()
    if value.null_count:
        value = pc.fill_null(value, math.nan)  # as JSON null is
    return pa.Table.from_arrays([table.column("key").combine_chunks(), value,
                                 table.column("timestamp").combine_chunks(), table.column("step").combine_chunks()],
                                schema=SCHEMA)
