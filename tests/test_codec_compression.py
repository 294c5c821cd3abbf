"""Metric points in the log are LZ4-compressed Arrow (ingest.contract.metric_table.to_ipc); records
written before, with uncompressed buffers, are still read and fold to the same rows
(docs/design.md, invariant 7)."""

from __future__ import annotations

import pyarrow as pa

from runledger.ingest.contract import metric_table
from runledger.ingest.contract.codec import POINTS_MAGIC, decode, encode
from runledger.projector.fold import FoldState, LogRecord, fold_batch
from tests.test_fold import create_run, log_metrics

RUN = "r1"
POINTS = [(f"k{i % 4}", i * 0.25, 1_700_000_000_000 + i, i) for i in range(5_000)]


def _uncompressed(record: bytes) -> bytes:
    """The same record as a build before compression wrote it: header unchanged, the points'
    IPC stream without compressed buffers."""
    start = len(POINTS_MAGIC) + 4
    end = start + int.from_bytes(record[len(POINTS_MAGIC):start], "big")
    table = metric_table.from_ipc(record[end:])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, metric_table.SCHEMA) as writer:
        writer.write_table(table)
    return record[:end] + sink.getvalue().to_pybytes()


def _fold(*records: bytes) -> list[dict]:
    events = [create_run(run=RUN)] + [decode(r) for r in records]
    result = fold_batch(FoldState(), [LogRecord(0, i, e) for i, e in enumerate(events)])
    return result.changes.metrics.table().to_pylist()


def test_new_records_carry_their_points_compressed() -> None:
    record = encode(log_metrics(*POINTS, run=RUN))
    assert record.startswith(POINTS_MAGIC)
    assert len(record) < len(_uncompressed(record)) * 0.75


def test_a_record_written_before_compression_folds_to_the_same_rows() -> None:
    record = encode(log_metrics(*POINTS, run=RUN))
    old = _uncompressed(record)
    assert len(old) > len(record)
    assert _fold(old) == _fold(record)
    assert len(_fold(old)) == len(POINTS)
