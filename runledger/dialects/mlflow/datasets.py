"""POST experiments/search-datasets (ajax-api only, as in MLflow): the datasets an experiment's
runs used, one summary per (name, digest, context), most recently logged first."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from runledger.dialects.mlflow import schemas as S
from runledger.dialects.openapi import Empty, documented
from runledger.ingest.errors import InvalidParameterValue
from runledger.dialects.request import Fields, json_body
from runledger.dialects import services

MAX_EXPERIMENTS = 20
MAX_SUMMARIES = 1000


def _summaries(request: Request, experiment_ids: list[str]) -> list[dict[str, Any]]:
    with services.reader(request).cursor() as cur:
        rows = cur.execute(
            "SELECT experiment_id, name, digest, context FROM run_datasets "
            "WHERE experiment_id IN (SELECT unnest(?::VARCHAR[])) "
            "GROUP BY experiment_id, name, digest, context "
            "ORDER BY max(logged_time) DESC, experiment_id, name, digest, context LIMIT ?",
            [experiment_ids, MAX_SUMMARIES]).fetchall()
    return [{k: v for k, v in zip(("experiment_id", "name", "digest", "context"), r) if v is not None}
            for r in rows]


async def search_datasets(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    ids = f.strings("experiment_ids")
    if not ids:
        raise InvalidParameterValue("SearchDatasets request must specify at least one experiment_id.")
    if len(ids) > MAX_EXPERIMENTS:
        raise InvalidParameterValue(
            f"SearchDatasets request cannot specify more than {MAX_EXPERIMENTS} experiment_ids. Received {len(ids)}.")
    found = await run_in_threadpool(_summaries, request, ids)
    return {"dataset_summaries": found} if found else {}


def build_router() -> APIRouter:
    router = APIRouter()
    router.add_api_route("/experiments/search-datasets", search_datasets, methods=["POST"], **documented(
        summary="Datasets used by experiments' runs (the UI's)", body=S.SearchDatasetsBody,
        response=S.SearchDatasetsAnswer))
    return router
