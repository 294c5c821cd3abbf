"""MLflow's read endpoints. A DuckDB read runs in the thread pool (plain functions, or
`run_in_threadpool`), each on its own DuckDB cursor, so reads never wait for the projector's
writes; get-run answers on the event loop when it needs no DuckDB read (`get_run`).

The run endpoints answer with ready JSON bytes (`_json`): a returned dict would be validated
and re-serialised by FastAPI (pydantic walks every value of a 100-run page, in one more thread
pool hop for a plain function) before the app's response class dumps it again."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from runledger.dialects.mlflow import schemas as S
from runledger.dialects.openapi import Empty, documented
from runledger.ingest.errors import ResourceDoesNotExist
from runledger.dialects.moments import moment
from runledger.dialects.request import Fields, json_body, query_fields
from runledger.query import memory, reader
from runledger import request_timing
from runledger.dialects import services
from runledger.ingest.contract import entities


def _cursor(request: Request):  # type: ignore[no-untyped-def]
    return services.reader(request).cursor()


def _latest_table(request: Request) -> str:
    return services.reader(request).latest_table


def _json(content: dict[str, Any]) -> Response:
    """`content` as the app's JSON response renders it (orjson), without FastAPI's re-encoding."""
    return Response(orjson.dumps(content), media_type="application/json")


def get_experiment(request: Request) -> dict[str, Any]:
    f = query_fields(request)
    exp_id = f.req_str("experiment_id")
    with _cursor(request) as cur:
        exp = reader.get_experiment(cur, exp_id)
    if exp is None:
        raise ResourceDoesNotExist(entities.experiment_not_found(exp_id))
    return {"experiment": exp}


def get_experiment_by_name(request: Request) -> dict[str, Any]:
    name = query_fields(request).req_str("experiment_name")
    with _cursor(request) as cur:
        exp = reader.get_experiment_by_name(cur, name)
    if exp is None:
        raise ResourceDoesNotExist(f"Could not find experiment with name '{name}'")
    return {"experiment": exp}


def _search_experiments(request: Request, f: Fields) -> dict[str, Any]:
    with _cursor(request) as cur:
        return reader.search_experiments(
            cur, filter_string=f.str("filter"), order_by=f.strings("order_by"),
            view_type=f.data.get("view_type"), max_results=f.int64("max_results"), page_token=f.str("page_token"))


def search_experiments_get(request: Request) -> dict[str, Any]:
    return _search_experiments(request, query_fields(request, repeated=("order_by",)))


async def search_experiments_post(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    return await run_in_threadpool(_search_experiments, request, f)


async def get_run(request: Request) -> Response:
    """On the event loop when the run is answered without DuckDB (ReadService.get_run_at_once:
    a write to it not committed yet, the rendered-run cache, or the projector's folded state:
    right after a write, always); in the thread pool only for a DuckDB read, which may wait for
    a commit and must not hold the loop.

    Why not a plain function (always the thread pool): a get-run right after a write runs
    while that write's commit is under way on the committer thread, which takes and drops the
    GIL around each of its DuckDB statements. Every hop between threads (loop -> pool worker ->
    loop) has to win the GIL back from it, and a thread that keeps losing that race waits a
    whole switch interval (5 ms) before it can force its turn: the slow 1-2% of these reads.
    On the loop the answer needs no hop (GET /api/runledger/v1/request-timings showed the
    server-side time's p99 at a third of the pool's, docs/latency.md)."""
    request_timing.mark("handler")
    try:
        run_id = query_fields(request).run_id()
        reads = services.reader(request)
        t0 = time.perf_counter()
        run: Any = reads.get_run_at_once(run_id, t0)
        if run is None:
            run = await run_in_threadpool(reads.get_run_from_duckdb, run_id, t0)
        if run is None:
            raise ResourceDoesNotExist(entities.run_not_found(run_id))
        if isinstance(run, bytes):
            return Response(b'{"run":' + run + b"}", media_type="application/json")
        return _json({"run": run})
    finally:
        request_timing.mark("handler_end")


def _search_runs(request: Request, f: Fields) -> Response:
    reads = services.reader(request)

    def search(cur: Any, memory: Any = None) -> dict[str, Any]:
        return reader.search_runs(
            cur, experiment_ids=f.strings("experiment_ids"), filter_string=f.str("filter"),
            run_view_type=f.data.get("run_view_type"), max_results=f.int64("max_results"),
            order_by=f.strings("order_by"), page_token=f.str("page_token"), latest_table=_latest_table(request),
            cursors=reads.search_cursors, cache=reads.run_cache, memory=memory,
            results=reads.search_cache)

    # Right after a write, a search that does not depend on what the write changed (beyond
    # the runs it shows, rendered from the folded state) answers without waiting for the commit.
    memory = reads.memory_reads()
    if memory is not None:
        try:
            with reads.cursor_now() as cur:
                return _json(search(cur, memory))
        except reader.MustWait:
            pass  # it does: read again after waiting
    with _cursor(request) as cur:
        found = search(cur)
    return _json(found)


async def search_runs(request: Request) -> Response:
    request_timing.mark("handler")
    try:
        return await _search_runs_answer(request)
    finally:
        request_timing.mark("handler_end")


async def _search_runs_answer(request: Request) -> Response:
    f = Fields(await json_body(request))
    # A repeated search with every answered write committed: its kept answer, without the
    # worker-thread hop a DuckDB read needs (query.search_cache).
    reads = services.reader(request)
    if reads.settled():
        kept = reader.kept_search_runs(
            reads.search_cache, reads.search_cursors, experiment_ids=f.strings("experiment_ids"),
            filter_string=f.str("filter"), run_view_type=f.data.get("run_view_type"),
            max_results=f.int64("max_results"), order_by=f.strings("order_by"), page_token=f.str("page_token"),
            latest_table=_latest_table(request))
        if kept is not None:
            return _json(kept)
    return await run_in_threadpool(_search_runs, request, f)


async def get_metric_history(request: Request) -> Any:
    """metrics/get-history; with `as_of` (Unix ms or ISO 8601) or `as_of_position`, the history
    as it was then, folded from the log (docs/audit.md)."""
    f = query_fields(request)
    run_id = f.run_id()
    key = f.req_str("metric_key")
    then = moment(f, required=False)
    if then is not None:
        return await services.audit(request).metric_history_as_of(
            run_id, key, then, f.int64("max_results"), f.str("page_token"))
    return await run_in_threadpool(_history_now, request, f, run_id, key)


def _history_now(request: Request, f: Fields, run_id: str, key: str) -> Response:
    limit, offset = reader.history_page_bounds(f.int64("max_results"), f.str("page_token"))
    cur = services.reader(request).open_cursor()

    # Streamed in chunks instead of materialised as one list, paged or not (a page may be the
    # whole history); the memory the read grew is handed back once it is sent.
    def chunks():  # type: ignore[no-untyped-def]
        try:
            yield from reader.iter_metric_history_json(cur, run_id, key, limit, offset)
        except Exception as e:
            # Too late for an error status: the response is cut off, but a damaged file
            # is still reported, so the projector rebuilds it.
            services.reader(request).streamed_read_failed(e)
            raise
        finally:
            cur.close()
            memory.release_after_large_read()
    return StreamingResponse(chunks(), media_type="application/json")


def build_router() -> APIRouter:
    router = APIRouter()
    router.add_api_route("/experiments/get", get_experiment, methods=["GET"], **documented(
        summary="Get an experiment by id", query=S.ExperimentIdQuery, response=S.ExperimentAnswer, errors=(404,)))
    router.add_api_route("/experiments/get-by-name", get_experiment_by_name, methods=["GET"], **documented(
        summary="Get an experiment by name", query=S.ExperimentNameQuery, response=S.ExperimentAnswer,
        errors=(404,)))
    router.add_api_route("/experiments/search", search_experiments_get, methods=["GET"], **documented(
        summary="Search experiments", query=S.SearchExperimentsQuery, response=S.SearchExperimentsAnswer))
    router.add_api_route("/experiments/search", search_experiments_post, methods=["POST"], **documented(
        summary="Search experiments", body=S.SearchExperimentsBody, response=S.SearchExperimentsAnswer))
    router.add_api_route("/runs/get", get_run, methods=["GET"], **documented(
        summary="Get a run", query=S.RunIdQuery, response=S.RunAnswer, errors=(404,)))
    router.add_api_route("/runs/search", search_runs, methods=["POST"], **documented(
        summary="Search runs (MLflow's filter grammar)", body=S.SearchRunsBody, response=S.SearchRunsAnswer))
    router.add_api_route("/metrics/get-history", get_metric_history, methods=["GET"], **documented(
        summary="A metric's full history in a run", query=S.MetricHistoryQuery, response=S.MetricsAnswer,
        errors=(404,)))
    return router
