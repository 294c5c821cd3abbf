"""Analytical SQL from Python (docs/sql.md): `sql()` returns a `pyarrow.Table`.

    from runledger.client import sql
    table = sql("SELECT * FROM latest_metrics", "http://127.0.0.1:5000")
    df = table.to_pandas()

pyarrow is optional for this distribution (`pip install runledger-client[arrow]`) and is
imported only when `sql()` is called; `sql_stream()` hands back the raw body of any format.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import TYPE_CHECKING, Any, Iterator

import httpx

from runledger.client.stream import _error_of

if TYPE_CHECKING:
    import pyarrow

SQL_PATH = "/api/runledger/v1/sql"
TRUNCATED_KEY = b"runledger.truncated"


class SqlQueryError(Exception):
    """The server refused or failed a SQL query; `error_code` and `message` are its answer."""

    def __init__(self, status_code: int, error_code: str | None, message: str) -> None:
        super().__init__(f"{status_code} {error_code}: {message}")
        self.status_code = status_code
        self.error_code = error_code
        self.message = message


def default_url() -> str:
    """The server to talk to: RUNLEDGER_URL, else MLFLOW_TRACKING_URI when it is an http(s) URL,
    else http://RUNLEDGER_HOST:RUNLEDGER_PORT, the variables the server reads (127.0.0.1:5000)."""
    for name in ("RUNLEDGER_URL", "MLFLOW_TRACKING_URI"):
        value = os.environ.get(name, "")
        if value.startswith(("http://", "https://")):
            return value.rstrip("/")
    host = os.environ.get("RUNLEDGER_HOST") or os.environ.get("HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{os.environ.get('RUNLEDGER_PORT') or os.environ.get('PORT') or 5000}"


def sql_stream(query: str, url: str | None = None, *, format: str = "arrow", max_rows: int | None = None,
               timeout_ms: int | None = None, timeout: float = 600,
               headers: dict[str, str] | None = None) -> Iterator[bytes]:
    """The raw body of a SQL answer in `format`, as it arrives (raises SqlQueryError first if
    the server refuses the query)."""
    body: dict[str, Any] = {"query": query, "format": format}
    if max_rows is not None:
        body["max_rows"] = max_rows
    if timeout_ms is not None:
        body["timeout_ms"] = timeout_ms
    with httpx.Client(base_url=(url or default_url()).rstrip("/"), timeout=timeout, headers=headers) as http:
        with http.stream("POST", SQL_PATH, json=body) as r:
            if r.status_code >= 300:
                r.read()
                raise SqlQueryError(r.status_code, *_error_of(r))
            yield from r.iter_bytes()


def sql(query: str, url: str | None = None, *, max_rows: int | None = None, timeout_ms: int | None = None,
        timeout: float = 600, headers: dict[str, str] | None = None) -> "pyarrow.Table":
    """Run a read-only SQL query and return its answer as a `pyarrow.Table` (`.to_pandas()` is
    one call away). Streams Arrow IPC, so large answers are not copied as JSON. If the server
    cut the answer at its byte limit (or `max_rows`), a warning says so and the table's schema
    metadata holds `runledger.truncated`."""
    import pyarrow as pa  # only SQL users need pyarrow

    chunks = sql_stream(query, url, format="arrow", max_rows=max_rows, timeout_ms=timeout_ms,
                        timeout=timeout, headers=headers)
    reader = pa.ipc.open_stream(io.BufferedReader(_IterReader(chunks), buffer_size=1 << 20))
    batches = []
    truncated: str | None = None
    while True:
        try:
            batch, meta = reader.read_next_batch_with_custom_metadata()
        except StopIteration:
            break
        if meta is not None and TRUNCATED_KEY in meta:
            truncated = meta[TRUNCATED_KEY].decode()
        if batch.num_rows:
            batches.append(batch)
    table = pa.Table.from_batches(batches, schema=reader.schema)
    if truncated is not None:
        warnings.warn(f"SQL answer truncated: {truncated}", stacklevel=2)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), TRUNCATED_KEY: truncated})
    return table


class _IterReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (for pyarrow's stream reader)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n
