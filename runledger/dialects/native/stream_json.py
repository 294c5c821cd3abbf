"""The stream endpoint's JSON body, parsed straight into Arrow columns when it is plainly valid.

Parsing the columns with orjson makes one Python object per element (a 20,000-point body is
80,000 floats, ints and strings), and `stream_arrow.from_json_columns` then walks them all again
to build Arrow arrays: together about a third of the server's CPU per point. simdjson (pysimdjson)
reads a homogeneous number array into a contiguous buffer in C, so the value, timestamp and step
columns never exist as Python objects; only the keys do.

simdjson is strict where we want it to be: an array holding anything but numbers (null, "NaN",
true), an integer column holding a float (even 2.0), or a number out of range makes it raise,
and this module then answers None. The caller falls back to the orjson path, which accepts what
this does not (special-value strings, whole-number floats, null values) and names the first bad
element of a refused request with the same messages as before. See docs/streaming.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import simdjson

from runledger.ingest import limits
from runledger.ingest.contract import metric_table


def parse_plain(raw: bytes, max_points: int) -> tuple[dict[str, Any], tuple[pa.Table, int]] | None:
    """For a plainly valid body: its `run_id`/`event_id` fields and its points as a checked table
    in `metric_table.SCHEMA` with the longest key's UTF-8 size (as `stream_arrow.from_json_columns`
    gives them). None for anything else (including every body that must be refused), which the
    caller then parses with orjson."""
    try:
        # A parser per body: a parser kept per worker thread would hold buffers the size of the
        # largest body it has seen (up to 32 MiB) in each thread; allocating them anew costs
        # nothing measurable next to the parse.
        parser = simdjson.Parser()
        doc = parser.parse(raw)
        if not isinstance(doc, simdjson.Object):
            return None
        names = list(doc.keys())
        if len(names) != len(set(names)):  # orjson keeps the last of a repeated field; leave it to it
            return None
        run_id, event_id = doc.get("run_id"), doc.get("event_id")
        # Other types are left to the orjson path, which phrases the error.
        if not isinstance(run_id, str) or not (event_id is None or isinstance(event_id, str)):
            return None
        columns = [doc.get(name) for name in ("keys", "values", "timestamps", "steps")]
        if not all(isinstance(c, simdjson.Array) for c in columns[:3]) or not (
                columns[3] is None or isinstance(columns[3], simdjson.Array)):
            return None
        n = len(columns[0])
        if not 1 <= n <= max_points or any(c is not None and len(c) != n for c in columns):
            return None
        # as_buffer raises unless every element has the type: 'd' takes any number, 'i' only
        # integers that fit in 64 bits. The buffers are copies, independent of the parser.
        values = pa.array(np.frombuffer(columns[1].as_buffer(of_type="d"), np.float64))
        timestamps = pa.array(np.frombuffer(columns[2].as_buffer(of_type="i"), np.int64))
        steps = (pa.array(np.frombuffer(columns[3].as_buffer(of_type="i"), np.int64)) if columns[3] is not None
                 else pa.array(np.zeros(n, np.int64)))
        keys = pa.array(columns[0].as_list(), pa.string())
    except (ValueError, TypeError, KeyError, pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None
    if keys.null_count or pc.min(timestamps).as_py() < 0:
        return None
    distinct = pc.unique(keys).to_pylist()
    if not all(limits.key_ok(k) for k in distinct):
        return None
    # JSON has no NaN or infinities and nulls were refused above, so the values are final.
    table = pa.Table.from_arrays([keys, values, timestamps, steps], schema=metric_table.SCHEMA)
    return {"run_id": run_id, "event_id": event_id}, (table, max(len(k.encode()) for k in distinct))
