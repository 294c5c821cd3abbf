"""Encoders for SQL answers: JSON rows for small answers, streamed NDJSON, CSV, Arrow IPC and
Parquet for anything large. Streamed encoders take record batches one at a time and hand back
bytes as they go, so a large result is never held whole in memory."""

from __future__ import annotations

import base64
import datetime
import decimal
import io
import math
import uuid
from typing import Any, Callable

import orjson
import pyarrow as pa
import pyarrow.compute as pc

FORMATS = ("json", "ndjson", "csv", "arrow", "parquet")
MEDIA_TYPES = {
    "json": "application/json", "ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8",
    "arrow": "application/vnd.apache.arrow.stream", "parquet": "application/vnd.apache.parquet",
}
TRUNCATED_KEY = "runledger.truncated"


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    return str(value)


def _float_text(v: float | None) -> float | str | None:
    # JSON has no NaN or infinity; MLflow's API writes them as strings, and so do we.
    if v is None or math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def _timestamp_texts(column: pa.Array | pa.ChunkedArray) -> list[str | None]:
    """A TIMESTAMP column (microseconds, no time zone) as the ISO 8601 text orjson writes for
    the datetime objects `to_pylist` makes (no fraction when it is zero). Arrow's cast to text
    ("2026-12-07 16:34:47.532351", always six digits) made ISO by two vectorised replacements:
    half the CPU of numpy's datetime_as_string, which was itself far cheaper than one datetime
    object per value. Nulls stay null."""
    text = pc.replace_substring(column.cast(pa.string()), " ", "T", max_replacements=1)
    # Only the fraction has a ".", so this drops exactly a zero fraction.
    return pc.replace_substring(text, ".000000", "", max_replacements=1).to_pylist()


def column_values(column: pa.Array | pa.ChunkedArray) -> list[Any]:
    kind = column.type
    if pa.types.is_timestamp(kind) and kind.unit == "us" and kind.tz is None:
        return _timestamp_texts(column)
    values = column.to_pylist()
    if pa.types.is_floating(column.type) and len(column) and pc.any(pc.invert(pc.is_finite(column))).as_py():
        values = [_float_text(v) for v in values]
    return values


def rows_of(batch: pa.RecordBatch) -> list[tuple[Any, ...]]:
    """A batch as a list of rows (tuples in column order)."""
    if batch.num_columns == 0:
        return [[] for _ in range(batch.num_rows)]
    # Tuples: orjson writes them as arrays, and building a list per row cost more than encoding.
    return list(zip(*(column_values(c) for c in batch.columns)))  # type: ignore[arg-type]


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


class _Sink(io.RawIOBase):
    """A file pyarrow writes into; `take()` hands over what was written since the last call."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        b = bytes(data)
        self._parts.append(b)
        self._pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self._pos

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class StreamEncoder:
    """Turns record batches into a format's bytes: `begin(schema)`, `batch(b)`, then `end(truncated)`."""

    def begin(self, schema: pa.Schema) -> bytes:
        raise NotImplementedError

    def batch(self, batch: pa.RecordBatch) -> bytes:
        raise NotImplementedError

    def end(self, truncated: str | None) -> bytes:
        """`truncated`: None for a complete answer, else why it stops early."""
        raise NotImplementedError


class NdjsonEncoder(StreamEncoder):
    """One JSON object per row. A truncated stream ends with a line
    `{"runledger.truncated": "<why>"}` (no row can have that key: it is not a column name DuckDB
    would produce unless asked, and then the value is not a string of this form)."""

    def begin(self, schema: pa.Schema) -> bytes:
        self.names = schema.names
        return b""

    def batch(self, batch: pa.RecordBatch) -> bytes:
        names = self.names
        return b"".join(dumps(dict(zip(names, row))) + b"\n" for row in rows_of(batch))

    def end(self, truncated: str | None) -> bytes:
        return b"" if truncated is None else dumps({TRUNCATED_KEY: truncated}) + b"\n"


class CsvEncoder(StreamEncoder):
    """RFC 4180 CSV with a header row, written by pyarrow. Nested values (lists, structs, maps)
    are written as JSON text. A truncated stream ends with the line `# runledger.truncated: <why>`."""

    def begin(self, schema: pa.Schema) -> bytes:
        import pyarrow.csv as pacsv
        self.nested = [i for i, f in enumerate(schema) if pa.types.is_nested(f.type) or pa.types.is_binary(f.type)
                       or pa.types.is_large_binary(f.type)]
        fields = [pa.field(f.name, pa.string()) if i in self.nested else f for i, f in enumerate(schema)]
        self.schema = pa.schema(fields)
        self.sink = _Sink()
        self.writer = pacsv.CSVWriter(self.sink, self.schema)
        return self.sink.take()

    def batch(self, batch: pa.RecordBatch) -> bytes:
        if self.nested:
            cols = list(batch.columns)
            for i in self.nested:
                cols[i] = pa.array([None if v is None else dumps(v).decode() for v in cols[i].to_pylist()],
                                   pa.string())
            batch = pa.record_batch(cols, schema=self.schema)
        self.writer.write_batch(batch)
        return self.sink.take()

    def end(self, truncated: str | None) -> bytes:
        self.writer.close()
        tail = self.sink.take()
        return tail if truncated is None else tail + f"# {TRUNCATED_KEY}: {truncated}\n".encode()


class ArrowEncoder(StreamEncoder):
    """An Arrow IPC stream. A truncated stream ends with an empty batch whose custom metadata
    holds `runledger.truncated`."""

    def begin(self, schema: pa.Schema) -> bytes:
        self.schema = schema
        self.sink = _Sink()
        self.writer = pa.ipc.new_stream(self.sink, schema)
        return self.sink.take()

    def batch(self, batch: pa.RecordBatch) -> bytes:
        self.writer.write_batch(batch)
        return self.sink.take()

    def end(self, truncated: str | None) -> bytes:
        if truncated is not None:
            empty = pa.RecordBatch.from_pylist([], schema=self.schema)
            self.writer.write_batch(empty, custom_metadata={TRUNCATED_KEY: truncated})
        self.writer.close()
        return self.sink.take()


class ParquetEncoder(StreamEncoder):
    """A Parquet file (zstd), written as it goes, in row groups of up to ROW_GROUP_ROWS rows: the
    batches of one row group are held until it is written (fewer, larger row groups make the
    file smaller and the export about twice as fast as one row group per batch). The footer's
    key-value metadata holds `runledger.truncated` when the answer stops early."""

    ROW_GROUP_ROWS = 1 << 20

    def begin(self, schema: pa.Schema) -> bytes:
        import pyarrow.parquet as pq
        self.sink = _Sink()
        self.writer = pq.ParquetWriter(self.sink, schema, compression="zstd")
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        return self.sink.take()

    def batch(self, batch: pa.RecordBatch) -> bytes:
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        if self.pending_rows >= self.ROW_GROUP_ROWS:
            self._flush()
        return self.sink.take()

    def _flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.Table.from_batches(self.pending), row_group_size=max(1, self.pending_rows))
            self.pending, self.pending_rows = [], 0

    def end(self, truncated: str | None) -> bytes:
        self._flush()
        if truncated is not None:
            self.writer.add_key_value_metadata({TRUNCATED_KEY: truncated})
        self.writer.close()
        return self.sink.take()


ENCODERS: dict[str, Callable[[], StreamEncoder]] = {
    "ndjson": NdjsonEncoder, "csv": CsvEncoder, "arrow": ArrowEncoder, "parquet": ParquetEncoder}


