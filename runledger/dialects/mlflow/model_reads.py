"""Read endpoints for MLflow 3.x logged models: GET `logged-models/{model_id}` and
POST `logged-models/search` (writes are in runledger.dialects.mlflow.model_writes)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from runledger.dialects.mlflow import schemas as S
from runledger.dialects.openapi import Empty, documented
from runledger.ingest.errors import InvalidParameterValue, ResourceDoesNotExist
from runledger.dialects.request import Fields, json_body, missing, query_fields
from runledger.query import models_reader
from runledger.dialects import services
from runledger.ingest.contract import entities


def get_logged_model(request: Request, model_id: str) -> dict[str, Any]:
    allow_deleted = (query_fields(request).str("allow_deleted") or "false").lower() == "true"
    with services.reader(request).cursor() as cur:
        model = models_reader.get_logged_model(cur, model_id, allow_deleted=allow_deleted)
    if model is None:
        raise ResourceDoesNotExist(entities.model_not_found(model_id))
    return {"model": model}


def parse_datasets(items: list[Fields]) -> list[models_reader.DatasetFilter]:
    out = []
    for d in items:
        name = d.str("dataset_name")
        if not name:
            raise InvalidParameterValue("`dataset_name` in the `datasets` clause must be specified.")
        out.append(models_reader.DatasetFilter(name, d.str("dataset_digest") or None))
    return out


def parse_order_by(items: list[Fields]) -> list[models_reader.ModelOrder]:
    out = []
    for ob in items:
        field_name = ob.str("field_name") or ""
        ascending = ob.data.get("ascending", True)
        if not isinstance(ascending, bool):
            raise InvalidParameterValue(f"Invalid value {ascending!r} for parameter '{ob.path}ascending' supplied: "
                                        "Expected a boolean.")
        out.append(models_reader.ModelOrder(field_name, ascending, ob.str("dataset_name") or None, ob.str("dataset_digest") or None))
    return out


def _search(request: Request, f: Fields) -> dict[str, Any]:
    if f.data.get("experiment_ids") is None:
        raise missing("experiment_ids")
    with services.reader(request).cursor() as cur:
        return models_reader.search_logged_models(
            cur, experiment_ids=f.strings("experiment_ids"), filter_string=f.str("filter"),
            datasets=parse_datasets(f.objects("datasets")), max_results=f.int64("max_results"),
            order_by=parse_order_by(f.objects("order_by")),
            page_token=f.str("page_token"))


async def search_logged_models(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    return await run_in_threadpool(_search, request, f)


def build_router() -> APIRouter:
    router = APIRouter()
    router.add_api_route("/logged-models/search", search_logged_models, methods=["POST"], **documented(
        summary="Search logged models", body=S.SearchLoggedModelsBody, response=S.SearchLoggedModelsAnswer))
    router.add_api_route("/logged-models/{model_id}", get_logged_model, methods=["GET"], **documented(
        summary="Get a logged model", response=S.LoggedModelAnswer, errors=(404,)))
    return router
