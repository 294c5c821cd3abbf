"""Bytes <-> Envelope. Decoding upcasts every schema version ever written.

Two record forms. Most events are one orjson document. An event carrying many metric points
(MetricsLogged, RunBatchLogged) is `POINTS_MAGIC`, the header length (4 bytes, big-endian), the
same JSON document with the point columns replaced by `{"points_table": <count>}`, then the
points as an Arrow IPC stream (ingest.contract.metric_table): the projector reads them without parsing
JSON or converting lists. Decoded, such a payload holds `{"points_table": pyarrow.Table}` where
the columns were.

A record that cannot be decoded raises MalformedEvent with a reason; the projector records it
as a rejection and carries on (docs/design.md, invariant 7).
"""

from __future__ import annotations

from typing import Any, Callable

import orjson
import pyarrow as pa

from runledger.ingest.contract import metric_table
from runledger.ingest.contract.events import EVENT_TYPES, SCHEMA_VERSION, Envelope


class MalformedEvent(ValueError):
    """A log record that is not a readable event of a known type and version."""


# Upcasters turn a payload of version N into version N+1, applied in order (also exercised by
# tests/test_codec.py). Version 2 changed no payload: it added an event type and the envelope's
# provenance fields, which a version 1 event reads as unknown (see `_envelope`).
UPCASTERS: dict[int, Callable[[str, dict[str, Any]], dict[str, Any]]] = {
    1: lambda etype, payload: payload,
}


# A JSON document starts with "{" (or whitespace), never with a NUL byte.
POINTS_MAGIC = b"\x00RLA"
# Fewer points than this stay JSON: a synchronous log-metric is one point, and for a handful the
# Arrow stream's fixed cost (schema, framing) outweighs what it saves.
POINTS_MIN = 64
_PLAIN_COLUMNS = {"keys", "values", "timestamps", "steps"}


def encode(event: Envelope) -> bytes:
    doc = {
        "event_id": event.event_id,
        "type": event.type,
        "schema_version": event.schema_version,
        "experiment_id": event.experiment_id,
        "run_id": event.run_id,
        "ingest_time": event.ingest_time,
        "user": event.user,
        "payload": event.payload,
    }
    # Provenance (schema version 2); left out when unknown, as in version 1 records.
    if event.actor_verified is not None:
        doc["actor_verified"] = event.actor_verified
    if event.request_id is not None:
        doc["request_id"] = event.request_id
    if event.api is not None:
        doc["api"] = event.api
    if event.deadline is not None:
        doc["deadline"] = event.deadline
    points = _points_as_table(event)
    if points is None:
        # NaN metric values become JSON null (orjson's behaviour); decode() reads null back as NaN.
        return orjson.dumps(doc)
    placeholder = {"points_table": points.num_rows}
    if event.type == "MetricsLogged":
        doc["payload"] = placeholder
    else:
        doc["payload"] = {**event.payload, "metrics": placeholder}
    header = orjson.dumps(doc)
    return POINTS_MAGIC + len(header).to_bytes(4, "big") + header + metric_table.to_ipc(points)


def _points_as_table(event: Envelope) -> Any:
    """The event's metric points as a table if it should travel as Arrow, else None. Columns
    that fail the fold's checks stay JSON, so the fold rejects them exactly as before."""
    if event.type == "MetricsLogged":
        cols = event.payload
    elif event.type == "RunBatchLogged":
        cols = event.payload.get("metrics")
    else:
        return None
    if isinstance(cols, dict) and isinstance(cols.get("points_table"), pa.Table):
        return cols["points_table"]  # already checked columns (the stream endpoint's Arrow body)
    if not isinstance(cols, dict) or set(cols) != _PLAIN_COLUMNS or not isinstance(cols["keys"], list) \
            or len(cols["keys"]) < POINTS_MIN:
        return None
    try:
        return metric_table.from_columns(cols)
    except metric_table.BadPoints:
        return None


def decode(raw: bytes | None) -> Envelope:
    if raw is None:
        raise MalformedEvent("record has no value")
    if raw[:len(POINTS_MAGIC)] == POINTS_MAGIC:
        return _decode_with_points(raw)
    return _envelope(_json_doc(raw))


def peek_ingest_time(raw: bytes | None) -> int | None:
    """A record's ingest time without decoding its points (None if unreadable): replay stops
    each partition at the first event after a moment."""
    if raw is None:
        return None
    try:
        if raw[:len(POINTS_MAGIC)] == POINTS_MAGIC:
            start = len(POINTS_MAGIC) + 4
            doc = orjson.loads(raw[start:start + int.from_bytes(raw[len(POINTS_MAGIC):start], "big")])
        else:
            doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    value = doc.get("ingest_time") if isinstance(doc, dict) else None
    return value if isinstance(value, int) else None


def _json_doc(raw: bytes | memoryview) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise MalformedEvent(f"not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise MalformedEvent("event is not a JSON object")
    return doc


def _decode_with_points(raw: bytes) -> Envelope:
    start = len(POINTS_MAGIC) + 4
    if len(raw) < start:
        raise MalformedEvent("truncated record: no header length")
    end = start + int.from_bytes(raw[len(POINTS_MAGIC):start], "big")
    if len(raw) < end:
        raise MalformedEvent("truncated record: header longer than the record")
    doc = _json_doc(memoryview(raw)[start:end])
    payload = doc.get("payload")
    if not isinstance(payload, dict):
        raise MalformedEvent("payload is not a JSON object")
    holder = payload if doc.get("type") == "MetricsLogged" else payload.get("metrics")
    count = holder.get("points_table") if isinstance(holder, dict) else None
    if doc.get("type") not in ("MetricsLogged", "RunBatchLogged") or not isinstance(count, int):
        raise MalformedEvent(f"a record with Arrow points must be a metrics event naming its point count, "
                             f"got type {doc.get('type')!r}")
    try:
        table = metric_table.from_ipc(memoryview(raw)[end:])
    except metric_table.BadPoints as e:
        raise MalformedEvent(str(e)) from None
    if table.num_rows != count:
        raise MalformedEvent(f"the record's header names {count} points, its Arrow stream holds {table.num_rows}")
    holder["points_table"] = table
    return _envelope(doc)


def _envelope(doc: dict[str, Any]) -> Envelope:
    event_id, etype, version = doc.get("event_id"), doc.get("type"), doc.get("schema_version")
    if not isinstance(event_id, str) or not event_id:
        raise MalformedEvent("missing event_id")
    if etype not in EVENT_TYPES:
        raise MalformedEvent(f"unknown event type {etype!r}")
    # type(), not isinstance: JSON's true is a bool, which Python counts as the int 1.
    if type(version) is not int or version < 1 or version > SCHEMA_VERSION:
        raise MalformedEvent(f"unsupported schema_version {version!r} for {etype}")
    payload = doc.get("payload")
    if not isinstance(payload, dict):
        raise MalformedEvent("payload is not a JSON object")
    for v in range(version, SCHEMA_VERSION):
        upcast = UPCASTERS[v]  # a missing upcaster is a bug in this module: fail loudly
        try:
            payload = upcast(etype, payload)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise MalformedEvent(f"cannot upcast {etype} payload from schema_version {v}: {e!r}") from e
    ingest_time = doc.get("ingest_time")
    # Bounded to int64: it lands in BIGINT columns, and the envelope is logged even when the
    # payload is refused, so only here can it be caught before it reaches a commit.
    if isinstance(ingest_time, bool) or not isinstance(ingest_time, int) or not -2 ** 63 <= ingest_time < 2 ** 63:
        raise MalformedEvent(f"ingest_time is not an integer in the 64-bit range: {str(ingest_time)[:40]}")
    deadline = doc.get("deadline")
    if deadline is not None and (type(deadline) is not int or not 0 <= deadline < 2 ** 63):
        raise MalformedEvent("deadline is not a non-negative 64-bit integer")
    return Envelope(
        event_id=event_id,
        type=etype,
        experiment_id=_opt_str(doc.get("experiment_id"), "experiment_id"),
        run_id=_opt_str(doc.get("run_id"), "run_id"),
        ingest_time=ingest_time,
        user=str(doc.get("user") or ""),
        payload=payload,
        schema_version=SCHEMA_VERSION,
        actor_verified=_opt_bool(doc.get("actor_verified"), "actor_verified"),
        request_id=_opt_str(doc.get("request_id"), "request_id"),
        api=_opt_str(doc.get("api"), "api"),
        deadline=deadline,
    )


def _opt_str(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise MalformedEvent(f"{name} is not a string")


def _opt_bool(value: Any, name: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise MalformedEvent(f"{name} is not a boolean")
