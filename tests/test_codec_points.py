"""Metric points in the log as Arrow (ingest.contract.codec, ingest.contract.metric_table).

An event with many points travels as a JSON header plus an Arrow IPC stream; decoded, it must
fold exactly like the same event in JSON, and a damaged record is a MalformedEvent with a
reason, never an exception that stops the projector."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from runledger.ingest.contract import metric_table
from runledger.ingest.contract.codec import POINTS_MAGIC, POINTS_MIN, MalformedEvent, decode, encode
from runledger.ingest.contract.events import Envelope, metrics_columns
from runledger.projector.fold import FoldState, LogRecord, fold_batch
from tests.test_fold import create_run, log_batch, log_metrics

RUN = "r1"


def _points(n: int, nan_every: int = 7) -> list[tuple[str, float, int, int]]:
    return [(f"k{i % 3}", math.nan if i % nan_every == 0 else i * 0.5, 1_000 + i, i) for i in range(n)]


def _fold(*events: Envelope, raw: bool) -> list:
    records = [LogRecord(0, i, decode(encode(e)) if raw else e) for i, e in enumerate(events)]
    result = fold_batch(FoldState(), records)
    rows = result.changes.metrics.table().to_pylist()
    return [{**r, "value": "nan" if r["value"] != r["value"] else r["value"]} for r in rows], result


def test_many_points_travel_as_arrow_and_few_as_json() -> None:
    assert encode(log_metrics(*_points(POINTS_MIN), run=RUN)).startswith(POINTS_MAGIC)
    assert encode(log_metrics(*_points(POINTS_MIN - 1), run=RUN)).startswith(b"{")


@pytest.mark.parametrize("make", [
    lambda pts: log_metrics(*pts, run=RUN),
    lambda pts: log_batch(params=[("lr", "0.1")], metrics=pts, tags=[("t", "v")], run=RUN),
], ids=["MetricsLogged", "RunBatchLogged"])
def test_an_arrow_record_folds_like_its_json_form(make) -> None:  # type: ignore[no-untyped-def]
    event = make(_points(500))
    via_log, result = _fold(create_run(RUN), event, raw=True)
    in_memory, expected = _fold(create_run(RUN), event, raw=False)
    assert via_log == in_memory and len(via_log) == 500
    assert result.changes.params == expected.changes.params and result.changes.tags == expected.changes.tags
    assert repr(result.changes.latest) == repr(expected.changes.latest)  # repr: NaN != NaN
    assert [e.payload for e in result.changes.log] == [e.payload for e in expected.changes.log]


def test_a_nan_value_stays_nan_through_arrow() -> None:
    decoded = decode(encode(log_metrics(*_points(100, nan_every=2), run=RUN)))
    values = decoded.payload["points_table"].column("value").to_pylist()
    assert sum(1 for v in values if v != v) == 50


def test_columns_the_fold_would_reject_stay_json_and_are_still_rejected() -> None:
    cols = metrics_columns(_points(100))
    cols["timestamps"][5] = "soon"
    event = Envelope(event_id="e-bad", type="MetricsLogged", run_id=RUN, experiment_id="1", ingest_time=1,
                     user="u", payload=cols)
    raw = encode(event)
    assert raw.startswith(b"{")
    result = fold_batch(FoldState(), [LogRecord(0, 0, decode(encode(create_run(RUN)))), LogRecord(0, 1, decode(raw))])
    assert result.verdicts["e-bad"].error_code == "MALFORMED_EVENT"


def _arrow_record(event: Envelope) -> tuple[bytes, int]:
    raw = encode(event)
    assert raw.startswith(POINTS_MAGIC)
    return raw, len(POINTS_MAGIC) + 4 + int.from_bytes(raw[len(POINTS_MAGIC):len(POINTS_MAGIC) + 4], "big")


@pytest.mark.parametrize("damage, reason", [
    (lambda raw, end: raw[:6], "truncated record"),
    (lambda raw, end: raw[:end - 3], "truncated record"),
    (lambda raw, end: raw[:end] + b"not arrow", "not an Arrow IPC stream"),
    (lambda raw, end: raw[:end] + raw[end:][: (len(raw) - end) // 2], "not an Arrow IPC stream"),
    (lambda raw, end: raw.replace(b'"points_table":100', b'"points_table": 99'), "names 99 points"),
    (lambda raw, end: raw.replace(b'"MetricsLogged"', b'"TagsSet"      '), "must be a metrics event"),
])
def test_a_damaged_arrow_record_is_malformed_with_a_reason(damage, reason: str) -> None:  # type: ignore[no-untyped-def]
    raw, end = _arrow_record(log_metrics(*_points(100), run=RUN))
    with pytest.raises(MalformedEvent, match=reason):
        decode(damage(raw, end))


def test_arrow_points_of_another_schema_or_with_null_keys_are_malformed() -> None:
    raw, end = _arrow_record(log_metrics(*_points(100), run=RUN))
    header = raw[:end]
    wrong = pa.table({"key": ["a"] * 100, "value": [1] * 100, "timestamp": [1] * 100, "step": [1] * 100})
    with pytest.raises(MalformedEvent, match="schema"):
        decode(header + _ipc(wrong))
    nulls = pa.table({"key": [None] * 100, "value": [1.0] * 100, "timestamp": [1] * 100, "step": [1] * 100},
                     schema=metric_table.SCHEMA)
    with pytest.raises(MalformedEvent, match="cannot be null"):
        decode(header + _ipc(nulls))


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()
