"""The event codec (`ingest.contract.codec`): bytes in the log <-> Envelope.

Specified here (docs/design.md, invariant 7, "the log is forever"):
- every event type round-trips through encode/decode unchanged;
- NaN metric values are written as JSON null (orjson cannot write NaN) and stay null in the
  decoded payload; the fold reads null as NaN. +/-inf would also become null, which is why
  ingest clamps them to +/-max double first (as MLflow's SQL store does) and those round-trip;
- a record that is not a readable event (no value, not JSON, not an object, no event id,
  unknown type, unsupported schema version, bad field types) raises MalformedEvent with a
  reason that says what is wrong, so the projector can record it and carry on;
- upcasting: a record of an older schema version is passed through UPCASTERS[v] for every v
  from its version up to SCHEMA_VERSION, in order, and comes out as the current version.
  Only version 1 exists today, so the upcaster tests simulate a v2 (and v3) by monkeypatching
  `ingest.contract.codec.SCHEMA_VERSION` and `ingest.contract.codec.UPCASTERS`, which `decode` reads at call
  time. What this cannot show: `Envelope.schema_version` defaults to `ingest.contract.events`'
  SCHEMA_VERSION, bound at import, so the simulated "old" records are written by giving the
  version explicitly; and the fold itself only knows today's payload shapes.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import orjson
import pytest

import runledger.ingest.contract.codec as codec
from runledger.ingest.contract.codec import MalformedEvent, decode, encode
from runledger.ingest.contract.events import EVENT_TYPES, SCHEMA_VERSION, Envelope, metrics_columns
from runledger.ingest.limits import MAX_DOUBLE, clamp_metric_value
from runledger.projector.fold import FoldState, LogRecord, fold_batch

# ---------------------------------------------------------------------------------------------
# helpers

SAMPLE_PAYLOADS: dict[str, dict[str, Any]] = {
    "ExperimentCreated": {"name": "exp", "artifact_location": None, "artifact_root": "file:///a",
                          "tags": [["k", "v"]]},
    "ExperimentRenamed": {"new_name": "exp2"},
    "ExperimentDeleted": {},
    "ExperimentRestored": {},
    "ExperimentTagSet": {"key": "k", "value": "v"},
    "ExperimentTagDeleted": {"key": "k"},
    "RunCreated": {"run_name": "r", "start_time": 1, "user_id": "u", "artifact_uri": "file:///a/1/r",
                   "tags": [["mlflow.user", "u"]]},
    "RunUpdated": {"status": "FINISHED", "end_time": 2, "run_name": None},
    "RunDeleted": {},
    "RunRestored": {},
    "ParamsLogged": {"params": [["lr", "0.1"], ["unicode", "\u00e9\u6f22"]]},
    "MetricsLogged": metrics_columns([("loss", 0.5, 1_700_000_000_000, 0), ("loss", -3.0, 2, 9_999_999_999)]),
    "TagsSet": {"tags": [["t", "a"], ["t", "b"]]},
    "TagDeleted": {"key": "t"},
    "RunBatchLogged": {"params": [["p", "1"]], "metrics": metrics_columns([("m", 1.0, 1, 1)]),
                       "tags": [["t", "v"]]},
    "RunRewound": {"step": 5},
    "InputsLogged": {"datasets": [{"name": "train", "digest": "abc123", "source_type": "local",
                                   "source": '{"uri": "file:///d"}', "schema": None, "profile": None,
                                   "tags": [["mlflow.data.context", "training"]]}]},
    "LoggedModelCreated": {"model_id": "m-0123456789abcdef0123456789abcdef", "name": "model", "model_type": "agent",
                           "source_run_id": "", "artifact_uri": "file:///a/1/models/m-0/artifacts",
                           "params": [["alpha", "0.5"]], "tags": [["t", "v"]]},
    "LoggedModelFinalized": {"model_id": "m-0123456789abcdef0123456789abcdef", "status": "LOGGED_MODEL_READY"},
    "LoggedModelDeleted": {"model_id": "m-0123456789abcdef0123456789abcdef"},
    "LoggedModelTagsSet": {"model_id": "m-0123456789abcdef0123456789abcdef", "tags": [["t", "a"], ["u", "b"]]},
    "LoggedModelTagDeleted": {"model_id": "m-0123456789abcdef0123456789abcdef", "key": "t"},
    "LoggedModelParamsLogged": {"model_id": "m-0123456789abcdef0123456789abcdef", "params": [["beta", "1"]]},
    "OutputsLogged": {"models": [["m-0123456789abcdef0123456789abcdef", 2]]},
    "ModelHistoryLogged": {"model": {"run_id": "r", "artifact_path": "model", "flavors": {}}},
    "ArtifactLogged": {"path": "plots/a.png", "size": 3, "sha256": "c" * 64},
    "ArtifactDeleted": {"path": "plots", "files": [["plots/a.png", 3]]},
    "LoggedModelArtifactLogged": {"model_id": "m-0123456789abcdef0123456789abcdef", "path": "MLmodel", "size": 1,
                                  "sha256": "d" * 64},
    "LoggedModelArtifactDeleted": {"model_id": "m-0123456789abcdef0123456789abcdef", "path": "MLmodel",
                                   "files": [["MLmodel", 1]]},
    "UserCreated": {"username": "ada", "is_admin": False},
    "UserDeleted": {"username": "ada"},
    "UserAdminSet": {"username": "ada", "is_admin": True},
    "PasswordChanged": {"username": "ada"},
    "PermissionGranted": {"username": "ada", "experiment_id": "1", "permission": "EDIT"},
    "PermissionRevoked": {"username": "ada", "experiment_id": "1"},
    "TokenCreated": {"token_id": "AbCdEfGh12345678", "username": "ada", "name": "ci", "expires_at": None},
    "TokenRevoked": {"token_id": "AbCdEfGh12345678"},
}


def envelope(type_: str = "TagsSet", payload: dict[str, Any] | None = None, **kw: Any) -> Envelope:
    fields: dict[str, Any] = dict(event_id="ev-1", type=type_, experiment_id="1", run_id="run-1",
                                  ingest_time=1_700_000_000_123, user="alice",
                                  payload=SAMPLE_PAYLOADS[type_] if payload is None else payload)
    fields.update(kw)
    return Envelope(**fields)


def raw(**overrides: Any) -> bytes:
    """An encoded TagsSet record with some fields replaced (or removed, when given as REMOVE)."""
    doc = orjson.loads(encode(envelope()))
    for k, v in overrides.items():
        if v is REMOVE:
            doc.pop(k)
        else:
            doc[k] = v
    return orjson.dumps(doc)


REMOVE = object()


def fold_one(event: Envelope) -> Any:
    run = Envelope("c", "RunCreated", "1", event.run_id, 1, "u", SAMPLE_PAYLOADS["RunCreated"])
    return fold_batch(FoldState(), [LogRecord(0, 0, run), LogRecord(0, 1, event)])


# ---------------------------------------------------------------------------------------------
# round trip


def test_every_event_type_has_a_sample_here() -> None:
    assert set(SAMPLE_PAYLOADS) == EVENT_TYPES


@pytest.mark.parametrize("type_", sorted(EVENT_TYPES))
def test_every_event_type_round_trips_unchanged(type_: str) -> None:
    event = envelope(type_)
    assert decode(encode(event)) == event


def test_optional_ids_round_trip_as_none() -> None:
    event = envelope("ExperimentCreated", experiment_id=None, run_id=None)
    assert decode(encode(event)) == event


def test_encoded_record_is_a_json_object_with_its_schema_version() -> None:
    doc = orjson.loads(encode(envelope()))
    assert doc["schema_version"] == SCHEMA_VERSION
    assert set(doc) == {"event_id", "type", "schema_version", "experiment_id", "run_id", "ingest_time",
                        "user", "payload"}


def test_nan_metric_value_is_encoded_as_json_null() -> None:
    event = envelope("MetricsLogged", metrics_columns([("m", math.nan, 1, 0), ("m", 2.0, 1, 0)]))
    assert orjson.loads(encode(event))["payload"]["values"] == [None, 2.0]


def test_nan_metric_value_decodes_as_null_which_the_fold_reads_as_nan() -> None:
    event = decode(encode(envelope("MetricsLogged", metrics_columns([("m", math.nan, 1, 0)]))))
    assert event.payload["values"] == [None]
    result = fold_one(event)
    assert result.verdicts[event.event_id].applied
    assert math.isnan(result.changes.metrics.value[0])


def test_infinity_would_become_null_so_ingest_clamps_it_to_max_double_which_round_trips() -> None:
    assert orjson.loads(encode(envelope("MetricsLogged", metrics_columns([("m", math.inf, 1, 0)]))))[
        "payload"]["values"] == [None]
    clamped = [clamp_metric_value(math.inf), clamp_metric_value(-math.inf)]
    assert clamped == [MAX_DOUBLE, -MAX_DOUBLE]
    event = envelope("MetricsLogged", metrics_columns([("m", v, 1, 0) for v in clamped]))
    assert decode(encode(event)).payload["values"] == clamped


def test_missing_user_decodes_as_empty_string() -> None:
    assert decode(raw(user=None)).user == ""


# ---------------------------------------------------------------------------------------------
# malformed records

MALFORMED: list[Any] = [
    pytest.param(None, "no value", id="no_value"),
    pytest.param(b"", "not JSON", id="empty"),
    pytest.param(b"{not json", "not JSON", id="not_json"),
    pytest.param(b'{"a": NaN}', "not JSON", id="bare_nan_literal"),
    pytest.param(b"\xff\xfe", "not JSON", id="not_utf8"),
    pytest.param(b"[1, 2]", "not a JSON object", id="array"),
    pytest.param(b'"TagsSet"', "not a JSON object", id="string"),
    pytest.param(b"42", "not a JSON object", id="number"),
    pytest.param(b"null", "not a JSON object", id="null"),
    pytest.param(raw(event_id=REMOVE), "missing event_id", id="event_id_missing"),
    pytest.param(raw(event_id=""), "missing event_id", id="event_id_empty"),
    pytest.param(raw(event_id=7), "missing event_id", id="event_id_a_number"),
    pytest.param(raw(type="TagsExploded"), "unknown event type 'TagsExploded'", id="unknown_type"),
    pytest.param(raw(type=REMOVE), "unknown event type None", id="type_missing"),
    pytest.param(raw(schema_version=SCHEMA_VERSION + 1), f"unsupported schema_version {SCHEMA_VERSION + 1}",
                 id="schema_version_from_the_future"),
    pytest.param(raw(schema_version=0), "unsupported schema_version 0", id="schema_version_0"),
    pytest.param(raw(schema_version="1"), "unsupported schema_version '1'", id="schema_version_a_string"),
    pytest.param(raw(schema_version=REMOVE), "unsupported schema_version None", id="schema_version_missing"),
    pytest.param(raw(payload=[1]), "payload is not a JSON object", id="payload_an_array"),
    pytest.param(raw(payload=REMOVE), "payload is not a JSON object", id="payload_missing"),
    pytest.param(raw(ingest_time="noon"), "ingest_time is not an integer", id="ingest_time_a_string"),
    pytest.param(raw(ingest_time=1.5), "ingest_time is not an integer", id="ingest_time_a_float"),
    pytest.param(raw(run_id=5), "run_id is not a string", id="run_id_a_number"),
    pytest.param(raw(experiment_id=["1"]), "experiment_id is not a string", id="experiment_id_a_list"),
]


@pytest.mark.parametrize(("record", "reason"), MALFORMED)
def test_unreadable_record_raises_malformed_event_saying_why(record: bytes | None, reason: str) -> None:
    with pytest.raises(MalformedEvent) as info:
        decode(record)
    assert reason in str(info.value)


def test_unsupported_schema_version_names_the_event_type() -> None:
    with pytest.raises(MalformedEvent, match="for TagsSet"):
        decode(raw(schema_version=99))


def test_malformed_event_is_a_value_error() -> None:
    # callers that guard decode with `except ValueError` keep working
    assert issubclass(MalformedEvent, ValueError)


# ---------------------------------------------------------------------------------------------
# upcasting old schema versions


def test_every_older_schema_version_has_an_upcaster() -> None:
    assert set(codec.UPCASTERS) == set(range(1, codec.SCHEMA_VERSION))


def _v1_to_v2(etype: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A made-up v2: TagDeleted carries a list of keys instead of one key."""
    if etype == "TagDeleted":
        return {"keys": [payload["key"]]}
    return payload


def _v2_to_v3(etype: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A made-up v3: TagDeleted says why."""
    if etype == "TagDeleted":
        return {**payload, "reason": "upcast from v2"}
    return payload


def _simulate(monkeypatch: pytest.MonkeyPatch, version: int,
              upcasters: dict[int, Callable[[str, dict[str, Any]], dict[str, Any]]]) -> list[tuple[int, str]]:
    """Make the codec believe the current version is `version`; return a log of upcaster calls."""
    calls: list[tuple[int, str]] = []

    def recording(v: int, fn: Callable[[str, dict[str, Any]], dict[str, Any]]) -> Any:
        def wrapped(etype: str, payload: dict[str, Any]) -> dict[str, Any]:
            calls.append((v, etype))
            return fn(etype, payload)
        return wrapped

    monkeypatch.setattr(codec, "SCHEMA_VERSION", version)
    monkeypatch.setattr(codec, "UPCASTERS", {v: recording(v, fn) for v, fn in upcasters.items()})
    return calls


def test_v1_record_is_upcast_to_the_current_version(monkeypatch: pytest.MonkeyPatch) -> None:
    old = encode(envelope("TagDeleted", schema_version=1))
    calls = _simulate(monkeypatch, 2, {1: _v1_to_v2})
    event = decode(old)
    assert event.payload == {"keys": ["t"]}
    assert event.schema_version == 2
    assert calls == [(1, "TagDeleted")]
    assert (event.event_id, event.type, event.run_id) == ("ev-1", "TagDeleted", "run-1")


def test_record_of_the_current_version_is_not_upcast(monkeypatch: pytest.MonkeyPatch) -> None:
    current = encode(envelope("TagDeleted", {"keys": ["t"]}, schema_version=2))
    calls = _simulate(monkeypatch, 2, {1: _v1_to_v2})
    assert decode(current).payload == {"keys": ["t"]}
    assert calls == []


def test_upcasters_are_applied_in_order_from_the_records_version(monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = encode(envelope("TagDeleted", schema_version=1))
    v2 = encode(envelope("TagDeleted", {"keys": ["u"]}, schema_version=2))
    calls = _simulate(monkeypatch, 3, {1: _v1_to_v2, 2: _v2_to_v3})
    assert decode(v1).payload == {"keys": ["t"], "reason": "upcast from v2"}
    assert calls == [(1, "TagDeleted"), (2, "TagDeleted")]
    calls.clear()
    assert decode(v2).payload == {"keys": ["u"], "reason": "upcast from v2"}
    assert calls == [(2, "TagDeleted")]


def test_upcaster_leaves_other_event_types_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    old = encode(envelope("ParamsLogged", schema_version=1))
    _simulate(monkeypatch, 2, {1: _v1_to_v2})
    assert decode(old).payload == SAMPLE_PAYLOADS["ParamsLogged"]


def test_record_newer_than_the_simulated_version_is_still_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    future = encode(envelope("TagDeleted", schema_version=3))
    _simulate(monkeypatch, 2, {1: _v1_to_v2})
    with pytest.raises(MalformedEvent, match="unsupported schema_version 3"):
        decode(future)


def test_old_record_an_upcaster_cannot_read_is_a_malformed_event_not_a_crash(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A v1 TagDeleted without "key" was MALFORMED_EVENT for the v1 fold; after a v2 ships it
    # must still be a rejection the projector records, not an exception that stops it.
    odd = encode(envelope("TagDeleted", {}, schema_version=1))
    _simulate(monkeypatch, 2, {1: _v1_to_v2})
    with pytest.raises(MalformedEvent, match=r"cannot upcast TagDeleted payload from schema_version 1: KeyError"):
        decode(odd)
