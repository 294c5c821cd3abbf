"""Bytes <-> Envelope. Encoding is orjson; decoding upcasts every schema version ever written.

A record that cannot be decoded raises MalformedEvent with a reason; the projector records it
as a rejection and carries on (DESIGN.md invariant 7).
"""

from __future__ import annotations

from typing import Any, Callable

import orjson

from ingest.events import EVENT_TYPES, SCHEMA_VERSION, Envelope


class MalformedEvent(ValueError):
    """A log record that is not a readable event of a known type and version."""


# Upcasters turn a payload of version N into version N+1, applied in order. Version 1 is the
# first one written, so there are none yet; the mechanism is exercised by tests/test_codec.py.
UPCASTERS: dict[int, Callable[[str, dict[str, Any]], dict[str, Any]]] = {}


def encode(event: Envelope) -> bytes:
    # NaN metric values become JSON null (orjson's behaviour); decode() reads null back as NaN.
    return orjson.dumps({
        "event_id": event.event_id,
        "type": event.type,
        "schema_version": event.schema_version,
        "experiment_id": event.experiment_id,
        "run_id": event.run_id,
        "ingest_time": event.ingest_time,
        "user": event.user,
        "payload": event.payload,
    })


def decode(raw: bytes | None) -> Envelope:
    if raw is None:
        raise MalformedEvent("record has no value")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise MalformedEvent(f"not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise MalformedEvent("event is not a JSON object")
    event_id, etype, version = doc.get("event_id"), doc.get("type"), doc.get("schema_version")
    if not isinstance(event_id, str) or not event_id:
        raise MalformedEvent("missing event_id")
    if etype not in EVENT_TYPES:
        raise MalformedEvent(f"unknown event type {etype!r}")
    if not isinstance(version, int) or version < 1 or version > SCHEMA_VERSION:
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
    if not isinstance(ingest_time, int):
        raise MalformedEvent("ingest_time is not an integer")
    return Envelope(
        event_id=event_id,
        type=etype,
        experiment_id=_opt_str(doc.get("experiment_id"), "experiment_id"),
        run_id=_opt_str(doc.get("run_id"), "run_id"),
        ingest_time=ingest_time,
        user=str(doc.get("user") or ""),
        payload=payload,
        schema_version=SCHEMA_VERSION,
    )


def _opt_str(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise MalformedEvent(f"{name} is not a string")
