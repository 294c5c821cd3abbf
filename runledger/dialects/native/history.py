"""GET /metrics/history-buckets: a run's metric series summarised per x-range (min, max, last),
for charts of long series (query.history_buckets). Unknown runs are a 404, like runs/get.
Answers are kept (query.history_buckets.BucketCache) until the run's points change."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from fastapi import APIRouter
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from runledger.dialects import services
from runledger.dialects.native import schemas as S
from runledger.dialects.openapi import documented
from runledger.dialects.request import query_fields
from runledger.ingest.errors import InvalidParameterValue, ResourceDoesNotExist
from runledger.query import history_buckets, reader

DEFAULT_BUCKETS = 1000


class BucketColumns(BaseModel):
    x_first: list[int]
    x_last: list[int]
    min: list[float | None]
    max: list[float | None]
    last: list[float | None]
    count: list[int]
    nan: list[int]


class BucketedHistory(BaseModel):
    run_id: str
    key: str
    x: Literal["step", "time"]
    start: int | None
    end: int | None
    points: int
    exact: bool
    buckets: BucketColumns


def _read(request: Request) -> Response:
    f = query_fields(request)
    run_id = f.run_id()
    key = f.req_str("metric_key")
    buckets = f.int64("buckets", default=DEFAULT_BUCKETS)
    assert buckets is not None
    if not 1 <= buckets <= history_buckets.MAX_BUCKETS:
        raise InvalidParameterValue(f"buckets must be between 1 and {history_buckets.MAX_BUCKETS}, got {buckets}.")
    x = f.str("x", default="step")
    if x not in ("step", "time"):
        raise InvalidParameterValue(f"x must be 'step' or 'time', got {x!r}.")
    start, end = f.int64("start"), f.int64("end")
    if start is not None and end is not None and start > end:
        raise InvalidParameterValue(f"start ({start}) must not be greater than end ({end}).")
    reads = services.reader(request)
    asked = (key, x, buckets, start, end)
    # The cursor first: it waits until every write already answered is applied (read-your-writes),
    # and the apply listener has dropped the kept answers that write made stale.
    with reads.cursor() as cur:
        cached = reads.bucket_cache.get(run_id, asked)
        if cached is not None:
            return Response(cached, media_type="application/json")
        token = reads.bucket_cache.token(run_id)   # before the snapshot: a batch applied meanwhile is never kept
        if reader.run_ref(cur, run_id) is None:
            raise ResourceDoesNotExist(f"Run with id={run_id} not found")
        found = history_buckets.bucket_history(cur, run_id, key, buckets=buckets, x=x,  # type: ignore[arg-type]
                                               start=start, end=end)
    body = orjson.dumps(found.to_json())
    reads.bucket_cache.put(run_id, asked, token, body)
    return Response(body, media_type="application/json")


async def get_history_buckets(request: Request) -> Any:
    """?run_id=&metric_key=&buckets=1000&x=step|time&start=&end= (bounds inclusive, optional)."""
    return await run_in_threadpool(_read, request)


def build_router() -> APIRouter:
    router = APIRouter()
    router.add_api_route("/metrics/history-buckets", get_history_buckets, methods=["GET"], **documented(
        summary="A run's metric series summarised per x-range (min, max, last) for charts",
        query=S.HistoryBucketsQuery, response=BucketedHistory, validate_response=True, errors=(404,),
        tags=["history"]))
    return router
