"""POST|GET /api/runledger/v1/sql: read-only SQL over the public views (docs/sql.md).

`format=json` answers one JSON document with at most `max_rows` rows (`truncated` says when
more existed); `ndjson`, `csv`, `arrow` (IPC stream) and `parquet` stream record batches as
DuckDB produces them, up to RUNLEDGER_SQL_MAX_MB. The checks and limits live in
runledger.query.sql; this module is the HTTP side: parsing, encoding, and cancelling a query
whose client went away.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Callable, Literal, TypeVar

import anyio
import orjson
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from runledger.auth.access import access
from runledger.dialects.openapi import ERROR_DESCRIPTIONS, ErrorBody
from runledger.dialects import services
from runledger.dialects.request import parse_json, read_capped
from runledger.ingest.errors import InvalidParameterValue
from runledger.query.sql import formats
from runledger.query.sql.engine import SqlEngine, SqlError, SqlQuery

T = TypeVar("T")
MAX_BODY_BYTES = 1 << 20
BATCH_ROWS = 122_880          # DuckDB vectors are 2,048 rows; 60 of them per streamed batch
DISCONNECT_POLL_S = 0.2

_EXAMPLE_QUERY = ("SELECT p.value AS lr, max(m.value) AS best_accuracy FROM params p "
                  "JOIN latest_metrics m USING (run_id) WHERE p.key = 'lr' AND m.key = 'accuracy' "
                  "GROUP BY ALL ORDER BY best_accuracy DESC")


class SqlRequest(BaseModel):
    """One read-only SELECT over the public views."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"query": _EXAMPLE_QUERY, "format": "json", "max_rows": 100},
        {"query": "SELECT * FROM metrics WHERE key = 'loss'", "format": "parquet"}]})

    query: str = Field(description="One SELECT statement over the views listed in docs/sql.md.")
    format: Literal["json", "ndjson", "csv", "arrow", "parquet"] = Field(
        "json", description="json: one document, rows capped; the others stream.")
    max_rows: int | None = Field(None, ge=1, description="At most this many rows (JSON: capped by "
                                 "RUNLEDGER_SQL_MAX_ROWS; streamed formats: no cap unless given).")
    timeout_ms: int | None = Field(None, ge=1, description="Stop the query sooner than the server's limit.")


class SqlColumn(BaseModel):
    name: str
    type: str = Field(description="DuckDB's type name, e.g. VARCHAR, BIGINT, DOUBLE, TIMESTAMP.")


class SqlAnswer(BaseModel):
    """A JSON answer (`format=json`)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "columns": [{"name": "lr", "type": "VARCHAR"}, {"name": "best_accuracy", "type": "DOUBLE"}],
        "rows": [["0.01", 0.93], ["0.1", 0.88]], "row_count": 2, "truncated": False, "elapsed_ms": 4.2,
        "log_position": {"0": 120, "1": 98, "2": 131, "3": 87}}]})

    columns: list[SqlColumn]
    rows: list[list[Any]] = Field(description="Rows as arrays in column order. NaN and infinities are "
                                  "the strings \"NaN\", \"Infinity\", \"-Infinity\"; TIMESTAMP is ISO 8601.")
    row_count: int
    truncated: bool = Field(description="More rows existed than max_rows.")
    elapsed_ms: float
    log_position: dict[str, int] = Field(description="Per log partition, the next offset the read model "
                                         "had not applied when the query started: the answer reflects "
                                         "every event before these offsets and none after.")


_STREAM_DOC = {media: {"schema": {"type": "string", "format": "binary"}}
               for fmt, media in formats.MEDIA_TYPES.items() if fmt != "json"}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": SqlAnswer, "content": _STREAM_DOC,
          "description": "JSON for format=json; a streamed body for the others (header "
                         "X-Runledger-Log-Position holds the log position)."},
    400: {"model": ErrorBody, "description": "Refused (not one read-only SELECT over the public views), a query "
                                             "error, QUERY_TIMEOUT or QUERY_OUT_OF_MEMORY."},
    429: {"model": ErrorBody,
          "description": "REQUEST_LIMIT_EXCEEDED: RUNLEDGER_SQL_MAX_CONCURRENT queries are running."},
    500: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[500]},
}


def _engine(request: Request) -> SqlEngine:
    engine = services.services(request).sql
    assert engine is not None, "the SQL engine is created at start-up"
    return engine


async def post_sql(request: Request) -> Response:
    body = parse_json(await read_capped(request, MAX_BODY_BYTES))
    return await _answer(request, _validated(body))


async def get_sql(request: Request, query: str, format: str = "json", max_rows: int | None = None,
                  timeout_ms: int | None = None) -> Response:
    """The same as POST, for links and `curl -O`: e.g. `?format=csv&query=SELECT ...`."""
    fields: dict[str, Any] = {"query": query, "format": format}
    if max_rows is not None:
        fields["max_rows"] = max_rows
    if timeout_ms is not None:
        fields["timeout_ms"] = timeout_ms
    return await _answer(request, _validated(fields))


def _validated(body: Any) -> SqlRequest:
    try:
        return SqlRequest.model_validate(body)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in e.errors())
        raise InvalidParameterValue(f"Bad SQL request: {problems}.") from None


async def _thread(fn: Callable[[], T]) -> T:
    # abandon_on_cancel: a cancelled request stops waiting at once; the query is interrupted
    # by its `finally`, which also ends the worker thread's wait inside DuckDB.
    return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)


async def _answer(request: Request, req: SqlRequest) -> Response:
    engine = _engine(request)
    engine.acquire()
    batch_rows = BATCH_ROWS if req.format != "json" else min(BATCH_ROWS, _json_limit(engine, req) + 1)
    scope = access(request).read_scope()       # the experiments this caller may read (docs/auth.md)
    if req.format == "json":
        return await _json(request, engine, req, batch_rows, scope)
    q = await anyio.to_thread.run_sync(lambda: engine.open(req.query, req.timeout_ms, batch_rows, scope=scope))
    return await _stream(q, engine, req)


def _json_limit(engine: SqlEngine, req: SqlRequest) -> int:
    return min(req.max_rows or engine.limits.max_rows, engine.limits.max_rows)


class _JsonJob:
    """A JSON query's opening and fetching, on ONE worker thread (each hop between the event
    loop and a thread costs ~0.1 ms, a tenth of a trivial query). The query is shared with
    the event loop side, which cancels it when the client goes away or the request is dropped."""

    def __init__(self, engine: SqlEngine, req: SqlRequest, batch_rows: int, scope: Any) -> None:
        self.engine, self.req, self.batch_rows, self.scope = engine, req, batch_rows, scope
        self.limit = _json_limit(engine, req)
        self.q: SqlQuery | None = None
        self.gone = False
        self.lock = threading.Lock()

    def run(self) -> bytes:
        """The JSON answer, encoded off the event loop; the query is closed here once read."""
        q = self.engine.open(self.req.query, self.req.timeout_ms, self.batch_rows, scope=self.scope)
        with self.lock:
            if self.gone:            # the request ended while the query was opening
                q.close()
                raise SqlError("The query was cancelled.", "CANCELLED")
            self.q = q
        try:
            rows, truncated = self._fetch(q)
            return formats.dumps({"columns": q.columns, "rows": rows, "row_count": len(rows), "truncated": truncated,
                                  "elapsed_ms": q.elapsed_ms, "log_position": q.log_position})
        finally:
            q.close()

    def _fetch(self, q: SqlQuery) -> tuple[list[list[Any]], bool]:
        rows: list[list[Any]] = []
        while True:
            batch = q.next_batch()
            if batch is None:
                return rows, False
            room = self.limit - len(rows)
            if batch.num_rows > room:
                rows.extend(formats.rows_of(batch.slice(0, room)))
                return rows, True
            rows.extend(formats.rows_of(batch))

    def cancel(self) -> None:
        with self.lock:
            q = self.q
        if q is not None:
            q.cancel()

    def end(self) -> None:
        with self.lock:
            self.gone, q = True, self.q
        if q is not None:
            q.close()


async def _json(request: Request, engine: SqlEngine, req: SqlRequest, batch_rows: int, scope: Any) -> Response:
    job = _JsonJob(engine, req, batch_rows, scope)
    try:
        task = asyncio.ensure_future(_thread(job.run))
        # Nobody reads the answer of a client that went away: interrupt its query.
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if not done and await request.is_disconnected():
                job.cancel()
        return Response(task.result(), media_type="application/json")
    finally:
        job.end()


class _Streamer:
    """Pulls batches and encodes them, on a worker thread; stops at the byte or row cap."""

    def __init__(self, q: SqlQuery, fmt: str, max_bytes: int, max_rows: int | None) -> None:
        self.q = q
        self.encoder = formats.ENCODERS[fmt]()
        self.max_bytes = max_bytes
        self.max_rows = max_rows
        self.sent = 0
        self.rows = 0
        self.cut = False      # rows of a batch were dropped at the row cap
        self.done = False

    def first(self) -> bytes:
        head = self.encoder.begin(self.q.schema)
        rest = self.next_chunk()
        return head + (rest or b"")

    def next_chunk(self) -> bytes | None:
        if self.done:
            return None
        truncated: str | None = None
        if self.sent >= self.max_bytes:
            truncated = f"the answer reached the byte limit of {self.max_bytes} (RUNLEDGER_SQL_MAX_MB)"
        elif self.max_rows is not None and self.rows >= self.max_rows:
            truncated = f"max_rows={self.max_rows} reached"
        batch = None
        if truncated is None:
            batch = self.q.next_batch()
            if batch is not None and self.max_rows is not None and self.rows + batch.num_rows > self.max_rows:
                batch = batch.slice(0, self.max_rows - self.rows)
                self.cut = True
        if batch is None:
            self.done = True
            if truncated is not None and not self.cut and not self._more():
                truncated = None
            out = self.encoder.end(truncated)
            self.q.close()
        else:
            self.rows += batch.num_rows
            out = self.encoder.batch(batch)
        self.sent += len(out)
        return out

    def _more(self) -> bool:
        """Whether rows remain past a cap (so the cap really cut the answer short)."""
        try:
            nxt = self.q.next_batch()
        except Exception:
            return True
        return nxt is not None and nxt.num_rows > 0


async def _stream(q: SqlQuery, engine: SqlEngine, req: SqlRequest) -> Response:
    streamer = _Streamer(q, req.format, engine.limits.max_bytes, req.max_rows)
    try:
        # The first batch is computed before answering, so that a query failing early (most
        # do: binding, a sort, an aggregate, the time limit) gets a proper JSON error.
        first = await _thread(streamer.first)
    except BaseException:
        q.close()
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            yield first
            while True:
                try:
                    chunk = await _thread(streamer.next_chunk)
                except Exception as e:
                    if req.format in ("csv", "ndjson"):
                        # Headers are gone: the error becomes the last line (see docs/sql.md).
                        msg = getattr(e, "message", "the query failed")
                        yield (f"# runledger.error: {msg}\n".encode() if req.format == "csv"
                               else formats.dumps({"runledger.error": msg}) + b"\n")
                        return
                    raise  # binary formats: the body ends without its end-of-stream marker
                if chunk is None:
                    return
                if chunk:
                    yield chunk
        finally:
            q.close()

    headers = {"X-Runledger-Log-Position": orjson.dumps(q.log_position).decode(), "Cache-Control": "no-store"}
    if req.format in ("csv", "parquet", "arrow"):
        ext = {"csv": "csv", "parquet": "parquet", "arrow": "arrows"}[req.format]
        headers["Content-Disposition"] = f'attachment; filename="runledger-query.{ext}"'
    return StreamingResponse(body(), media_type=formats.MEDIA_TYPES[req.format], headers=headers)


def build_router() -> APIRouter:
    router = APIRouter(tags=["sql"])
    request_body = {"required": True, "content": {"application/json": {
        "schema": SqlRequest.model_json_schema(ref_template="#/components/schemas/{model}"),
        "examples": {"json": {"value": {"query": _EXAMPLE_QUERY, "format": "json", "max_rows": 100}},
                     "parquet": {"value": {"query": "SELECT * FROM metrics", "format": "parquet"}}}}}}
    router.add_api_route("/sql", post_sql, methods=["POST"], summary="Run a read-only SQL query",
                         description=__doc__, responses=_RESPONSES, openapi_extra={"requestBody": request_body})
    router.add_api_route("/sql", get_sql, methods=["GET"], summary="Run a read-only SQL query (download)",
                         responses=_RESPONSES)
    return router
