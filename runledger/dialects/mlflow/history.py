"""GET metrics/get-history-bulk-interval (api and ajax-api) and the ajax-only get-history-bulk."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from runledger.dialects.mlflow import schemas as S
from runledger.dialects.openapi import Empty, documented
from runledger.ingest.errors import InvalidParameterValue
from runledger.dialects.request import SEE_API_DOCS, missing, query_fields
from runledger.query import history
from runledger.dialects import services

MAX_RUNS = 100
MAX_SAMPLED_PER_RUN = 2500
MAX_BULK_RESULTS = 25000


# MLflow words these two endpoints' run-id errors differently (a schema check for the sampled
# one, hand-written checks for the bulk one); scripts match on the text, so we do too.
def _sampled_run_ids(ids: list[str]) -> list[str]:
    if not ids:
        raise missing("run_ids")
    if len(ids) > MAX_RUNS:
        raise InvalidParameterValue(
            f"GetMetricHistoryBulkInterval request must specify at most {MAX_RUNS} run_ids. "
            f"Received {len(ids)} run_ids. {SEE_API_DOCS}")
    return ids


def _bulk_run_ids(ids: list[str]) -> list[str]:
    if not ids:
        raise InvalidParameterValue("GetMetricHistoryBulk request must specify at least one run_id.")
    if len(ids) > MAX_RUNS:
        raise InvalidParameterValue(
            f"GetMetricHistoryBulk request cannot specify more than {MAX_RUNS} run_ids. Received {len(ids)} run_ids.")
    return ids


def get_history_bulk_interval(request: Request) -> Response:
    f = query_fields(request, repeated=("run_ids",))
    run_ids = _sampled_run_ids(f.strings("run_ids"))
    key = f.req_str("metric_key")
    max_results = f.int64("max_results", default=MAX_SAMPLED_PER_RUN)
    assert max_results is not None
    if not 1 <= max_results <= MAX_SAMPLED_PER_RUN:
        raise InvalidParameterValue(f"max_results must be between 1 and {MAX_SAMPLED_PER_RUN}.")
    start, end = f.int64("start_step"), f.int64("end_step")
    if (start is None) != (end is None):
        raise InvalidParameterValue("If either start step or end step are specified, both must be specified.")
    if start is not None and end is not None and start > end:
        raise InvalidParameterValue(
            f"end_step must be greater than start_step. Found start_step={start} and end_step={end}.")
    with services.reader(request).cursor() as cur:
        samples = history.sampled_points(cur, run_ids, key, max_results, start, end)
    # Sampled first (a failure is still a clean error), then rendered a run at a time.
    return StreamingResponse(history.sampled_history_json(samples, run_ids, key), media_type="application/json")


def get_history_bulk(request: Request) -> Response:
    f = query_fields(request, repeated=("run_id",))
    run_ids = _bulk_run_ids(f.strings("run_id"))
    key = f.str("metric_key")
    if not key:
        raise InvalidParameterValue("GetMetricHistoryBulk request must specify a metric_key.")
    max_results = min(f.int64("max_results", default=MAX_BULK_RESULTS) or MAX_BULK_RESULTS, MAX_BULK_RESULTS)
    if max_results <= 0:
        raise InvalidParameterValue("max_results must be a positive integer.")
    with services.reader(request).cursor() as cur:
        metrics = history.bulk_history(cur, run_ids, key, max_results)
    # Ready bytes: a returned dict of 25,000 points would be walked by the framework's encoder first.
    return Response(orjson.dumps({"metrics": metrics}), media_type="application/json")


def build_router(ajax: bool) -> APIRouter:
    router = APIRouter()
    router.add_api_route("/metrics/get-history-bulk-interval", get_history_bulk_interval, methods=["GET"],
                         **documented(summary="Sampled histories of one metric in several runs",
                                      query=S.HistoryBulkIntervalQuery, response=S.MetricsAnswer))
    if ajax:
        router.add_api_route("/metrics/get-history-bulk", get_history_bulk, methods=["GET"], **documented(
            summary="Histories of one metric in several runs (the UI's)", query=S.HistoryBulkQuery,
            response=S.MetricsAnswer))
    return router
