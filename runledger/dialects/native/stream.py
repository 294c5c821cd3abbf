"""POST /api/runledger/v1/metrics/stream: many metric points per request, in columns.

Unlike the MLflow endpoints, this path answers once Kafka has acknowledged the events
(acks=all), not once the projector has applied them (docs/design.md, invariant 5): it is built
for volume. Everything the projector would reject for a reason visible now (unknown or
deleted run, bad key, bad number) is refused here with MLflow's error; what can only fail
later (the run deleted before its points are applied) lands in the rejections table.

Validation works on whole columns. Plainly valid JSON columns (and every Arrow body) become
one Arrow table checked with kernels and one check per distinct key (runledger.dialects.native.stream_arrow),
which is also the form the points are written to the log in. Anything else goes through
`parse_points` (C-level `set(map(type, ...))`, `min`/`max`, a per-point loop only for columns
that need converting: special-value strings, whole-number floats), which also names the first
bad element of a refused request. See docs/streaming.md for the contract.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from runledger.dialects.native import schemas as S
from runledger.dialects.openapi import documented
from runledger.ingest import limits
from runledger.dialects.native import stream_arrow, stream_json
from runledger.ingest.backlog import AppendBacklog
from runledger.client import limits as published
from runledger.ingest.errors import InvalidParameterValue
from runledger.dialects.request import missing, parse_json, read_capped, require_json
from runledger.auth.access import access
from runledger.log_position import reach_position
from runledger.auth.permissions import Permission
from runledger.dialects.identity import acting_user
from runledger.ingest.writer import Writer, new_event
from runledger.dialects import services

# The published limits (runledger.client.limits). 100k points with long keys can legitimately
# exceed the MLflow endpoints' 8 MiB body cap, hence a cap of the stream's own.
MAX_POINTS = published.MAX_STREAM_REQUEST_POINTS
MAX_EVENT_POINTS = published.MAX_EVENT_POINTS
MAX_REQUEST_BYTES = published.MAX_STREAM_BODY_BYTES
# Each event stays far below the topic's 16 MiB max.message.bytes, whatever the keys.
EVENT_BYTES_BUDGET = 8 * 1024 * 1024

_EVENT_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1
_NUMBERS_OR_NULL = frozenset({float, int, type(None)})
# JSON has no NaN or infinity literals; these strings stand in for them (protobuf JSON's
# spelling). NaN travels as null in the event (ingest.contract.codec); infinities are clamped as
# MLflow's SQL store does.
_SPECIAL = {"NaN": None, "Infinity": limits.MAX_DOUBLE, "-Infinity": -limits.MAX_DOUBLE}
_BAD = object()
_VALUE_HINT = 'Expected a number, null, "NaN", "Infinity" or "-Infinity".'


@dataclass(frozen=True, slots=True)
class Points:
    """Validated columns, ready to be a MetricsLogged payload (values: float/int, None = NaN)."""

    keys: list[str]
    values: list[float | int | None]
    timestamps: list[int]
    steps: list[int]
    max_key_bytes: int

    def __len__(self) -> int:
        return len(self.keys)


def parse_points(doc: dict[str, Any]) -> Points:
    """Check the four columns of a request body; raise MLflow's 400 for the first problem."""
    keys, values, timestamps = _column(doc, "keys"), _column(doc, "values"), _column(doc, "timestamps")
    n = len(keys)
    steps = _column(doc, "steps") if doc.get("steps") is not None else [0] * n
    if not 1 <= n <= MAX_POINTS:
        raise InvalidParameterValue(
            f"A stream request must carry between 1 and {MAX_POINTS} points, got {n}. "
            "Please split up your request into multiple requests.")
    lengths = {"keys": n, "values": len(values), "timestamps": len(timestamps), "steps": len(steps)}
    if len(set(lengths.values())) != 1:
        raise InvalidParameterValue(f"The columns must have the same length, got {lengths}.")
    max_key_bytes = _check_keys(keys)
    return Points(keys, _values(values), _int64s(timestamps, "timestamps", non_negative=True),
                  _int64s(steps, "steps", non_negative=False), max_key_bytes)


def _checked_columns(doc: dict[str, Any]) -> "Points | tuple[pa.Table, int]":
    """The body's points: as a table when they are plainly valid (the common case, and the
    form they are written to the log in), else checked element by element (runledger.dialects.native.stream_arrow
    .from_json_columns says which)."""
    return stream_arrow.from_json_columns(doc, MAX_POINTS) or parse_points(doc)


def event_payloads(points: Points) -> list[dict[str, Any]]:
    """Split into MetricsLogged payloads of at most MAX_EVENT_POINTS points and about
    EVENT_BYTES_BUDGET bytes each. The cut depends only on the points, so a retried request
    is cut the same way and each part keeps its event id."""
    per_event = _points_per_event(points.max_key_bytes)
    return [{"keys": points.keys[i:i + per_event], "values": points.values[i:i + per_event],
             "timestamps": points.timestamps[i:i + per_event], "steps": points.steps[i:i + per_event]}
            for i in range(0, len(points), per_event)]


def _points_per_event(max_key_bytes: int) -> int:
    return max(1, min(MAX_EVENT_POINTS, EVENT_BYTES_BUDGET // (max_key_bytes + published.POINT_BYTES_BESIDES_KEY)))


def log_event_ids(run_id: str, event_id: str, parts: int) -> list[str]:
    """Ids of the events in the log. Scoped by run so that two runs' clients numbering their
    requests alike never collide; ':' cannot occur in a run id or a client event id."""
    if parts == 1:
        return [f"{run_id}:{event_id}"]
    return [f"{run_id}:{event_id}:{i}" for i in range(parts)]


async def stream_metrics(request: Request) -> dict[str, Any]:
    arrow = request.headers.get("content-type", "").split(";")[0].strip().lower() == stream_arrow.CONTENT_TYPE
    plain: "tuple[dict[str, Any], tuple[pa.Table, int]] | None" = None
    if arrow:
        # The body is the points; the run and the request's event id come in the query string.
        doc: dict[str, Any] = dict(request.query_params)
        body = await read_capped(request, MAX_REQUEST_BYTES)
    else:
        require_json(request)
        raw = await read_capped(request, MAX_REQUEST_BYTES)
        # Parsed off the event loop: a 100,000-point body is ~15 ms of JSON. A plainly valid body
        # is read straight into checked Arrow columns (stream_json); anything else by orjson.
        plain = await run_in_threadpool(stream_json.parse_plain, raw, MAX_POINTS)
        doc = plain[0] if plain is not None else await run_in_threadpool(parse_json, raw)
    run_id = doc.get("run_id")
    if not isinstance(run_id, str) or not run_id:
        raise missing("run_id")
    limits.check_run_id(run_id)
    catalog = services.writer(request).catalog
    known = catalog.run(run_id)
    if known is not None:       # before the points are parsed, and before anything is appended
        access(request).require(known.experiment_id, Permission.EDIT)
    # A log position the caller passed back (the run may come from another replica's write):
    # waited for only now, so a caller refused above is answered at once.
    await reach_position(request)
    if known is None and (known := catalog.run(run_id)) is not None:
        access(request).require(known.experiment_id, Permission.EDIT)
    event_id = doc.get("event_id")
    if event_id is None:
        event_id = uuid.uuid4().hex
    elif not isinstance(event_id, str) or not _EVENT_ID.match(event_id):
        raise limits.invalid_value("event_id", event_id, "Expected 8 to 64 characters of [A-Za-z0-9_-].")
    # Off the event loop: the projector and the synchronous endpoints share it.
    if arrow:
        checked = await run_in_threadpool(stream_arrow.parse_table, body, MAX_POINTS, MAX_REQUEST_BYTES)
    elif plain is not None:
        checked = plain[1]
    else:
        checked = await run_in_threadpool(_checked_columns, doc)
    if isinstance(checked, Points):
        n, payloads = len(checked), event_payloads(checked)
    else:
        table, max_key_bytes = checked
        n, per = table.num_rows, _points_per_event(max_key_bytes)
        payloads = [{"points_table": table.slice(i, per)} for i in range(0, n, per)]
    writer: Writer = services.writer(request)
    run = writer.writable_run(run_id)
    user = acting_user(request)
    backlog: AppendBacklog = services.backlog(request)
    await backlog.admit()
    # One append for all parts: it returns only once Kafka has acknowledged every one of them.
    positions = await writer.append([
        new_event("MetricsLogged", payload, user=user, run_id=run.run_id, experiment_id=run.experiment_id,
                  event_id=log_id)
        for log_id, payload in zip(log_event_ids(run.run_id, event_id, len(payloads)), payloads)])
    backlog.appended(positions, n)
    return {"event_id": event_id, "points": n}


def build_router() -> APIRouter:
    router = APIRouter()
    router.add_api_route("/metrics/stream", stream_metrics, methods=["POST"], **documented(
        summary="Stream many metric points (answered on Kafka's acknowledgement)", body=S.StreamBody,
        query=S.StreamQuery, response=S.StreamAnswer, errors=(404, 413), tags=["stream"],
        raw_body=stream_arrow.CONTENT_TYPE,
        description="docs/streaming.md. JSON columns, or an Arrow IPC stream body "
                    "(application/vnd.apache.arrow.stream) with run_id and event_id in the query string."))
    return router


# ----- columns

def _column(doc: dict[str, Any], name: str) -> list[Any]:
    v = doc.get(name)
    if v is None:
        raise missing(name)
    if not isinstance(v, list):
        raise limits.invalid_value(name, v, "Expected a list.")
    return v


def _first(column: list[Any], bad: Any) -> int:
    """Position of the first element for which `bad` is true (error path only)."""
    return next(i for i, v in enumerate(column) if bad(v))


def _check_keys(keys: list[Any]) -> int:
    """Every distinct key passes limits.check_key; returns the longest key's UTF-8 size."""
    try:
        distinct = set(keys)
    except TypeError:  # an unhashable element (list, object) cannot be a key
        i = _first(keys, lambda k: type(k) is not str)
        raise limits.invalid_value(f"keys[{i}]", keys[i], "Expected a string.") from None
    if any(type(k) is not str for k in distinct):
        i = _first(keys, lambda k: type(k) is not str)
        raise limits.invalid_value(f"keys[{i}]", keys[i], "Expected a string.")
    try:
        for k in distinct:
            limits.check_key(k)
    except InvalidParameterValue:
        # Report the first bad key in request order, not in set order (which varies by run).
        bad = {k for k in distinct if not limits.key_ok(k)}
        i = _first(keys, lambda k: k in bad)
        limits.check_key(keys[i], f"keys[{i}]")
        raise
    return max(len(k.encode()) for k in distinct)



def _values(values: list[Any]) -> list[float | int | None]:
    types = set(map(type, values))
    if types <= _NUMBERS_OR_NULL:
        # orjson never yields an infinity or NaN (JSON has neither), so the column is final.
        return values
    if types - _NUMBERS_OR_NULL - {str}:  # bool, list, object...
        i = _first(values, lambda v: type(v) not in _NUMBERS_OR_NULL and type(v) is not str)
        raise limits.invalid_value(f"values[{i}]", values[i], _VALUE_HINT)
    out = [_SPECIAL.get(v, _BAD) if type(v) is str else v for v in values]
    if _BAD in out:
        i = out.index(_BAD)
        raise limits.invalid_value(f"values[{i}]", values[i], _VALUE_HINT)
    return out


def _int64s(column: list[Any], name: str, *, non_negative: bool) -> list[int]:
    types = set(map(type, column))
    if not types <= {int, float}:
        i = _first(column, lambda v: type(v) not in (int, float))
        raise limits.invalid_value(f"{name}[{i}]", column[i], "Expected an integer.")
    if float in types:
        # A whole-number float is an integer, as MLflow's protobuf JSON parser takes it.
        if not all(math.isfinite(v) and v == int(v) for v in column if type(v) is float):
            i = _first(column, lambda v: type(v) is float and not (math.isfinite(v) and v == int(v)))
            raise limits.invalid_value(f"{name}[{i}]", column[i], "Expected an integer.")
        column = [int(v) for v in column]
    lo, hi = min(column), max(column)
    if lo < _INT64_MIN or hi > _INT64_MAX:
        i = _first(column, lambda v: not _INT64_MIN <= v <= _INT64_MAX)
        raise limits.invalid_value(f"{name}[{i}]", column[i], "Out of range for a 64-bit integer.")
    if non_negative and lo < 0:
        i = _first(column, lambda v: v < 0)
        raise limits.invalid_value(f"{name}[{i}]", column[i], "Metric timestamp must be non-negative.")
    return column
