"""POST /runs/search with a boolean filter: the MLflow runs/search, whose `filter` is a
Mongo-style document (OR, NOT, IN / NOT IN, regular expressions, existence) instead of an
AND-only string. Same search machinery (query.search_tree compiled by query.search_sql), same
answer shape and page tokens as MLflow's runs/search; docs/search.md has the grammar."""

from __future__ import annotations

from typing import Any

import pydantic
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from runledger.dialects import services
from runledger.dialects.mlflow.schemas import SearchRunsAnswer
from runledger.dialects.openapi import documented
from runledger.dialects.request import json_body
from runledger.ingest.errors import InvalidParameterValue
from runledger.query import reader, search_tree
from runledger.query.search_filter import SearchFilterError
import orjson


class TreeSearchRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)

    experiment_ids: list[str] = pydantic.Field(default_factory=list)
    filter: dict[str, Any] | None = None
    order_by: list[str] = pydantic.Field(default_factory=list)
    max_results: int | None = None
    page_token: str | None = None
    run_view_type: str | int | None = None


def _search(request: Request, body: TreeSearchRequest) -> Response:
    try:
        tree = search_tree.parse_mongo(body.filter)
    except SearchFilterError as e:
        raise InvalidParameterValue(str(e)) from e
    read = services.reader(request)
    with read.cursor() as cur:
        found = reader.search_runs(
            cur, experiment_ids=body.experiment_ids, filter_string=None, filter_tree=tree,
            run_view_type=body.run_view_type, max_results=body.max_results, order_by=body.order_by,
            page_token=body.page_token, latest_table=read.latest_table, cursors=read.search_cursors,
            cache=read.run_cache)
    return Response(orjson.dumps(found), media_type="application/json")


async def search_runs(request: Request) -> Response:
    try:
        body = TreeSearchRequest.model_validate(await json_body(request))
    except pydantic.ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors())
        raise InvalidParameterValue(f"Invalid runs/search request: {problems}") from None
    return await run_in_threadpool(_search, request, body)


def build_router() -> APIRouter:
    router = APIRouter()
    router.add_api_route("/runs/search", search_runs, methods=["POST"], **documented(
        summary="Search runs with a boolean (Mongo-style) filter: OR, NOT, IN, regular expressions",
        body=TreeSearchRequest, response=SearchRunsAnswer, tags=["search"],
        body_examples={"or": {"value": {"experiment_ids": ["1"], "filter": {
            "$or": [{"metrics.loss": {"$lt": 0.3}}, {"params.lr": {"$in": ["0.1", "0.01"]}}]}}}}))
    return router
