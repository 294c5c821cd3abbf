"""Comet's REST v2 read routes, as the unmodified comet_ml client (3.58) calls them. Handlers are
plain functions (FastAPI runs them in its thread pool), each on its own DuckDB cursor."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import orjson
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from runledger.auth.access import access
from runledger.auth.permissions import Permission
from runledger.dialects import services
from runledger.dialects.comet import query as comet_query
from runledger.dialects.comet import schemas as S
from runledger.dialects.comet import shapes
from runledger.dialects.openapi import documented
from runledger.dialects.request import json_body
from runledger.ingest.errors import InvalidParameterValue, ResourceDoesNotExist
from runledger.query import memory, run_summaries
from runledger.query.run_summaries import ExperimentRow, RunMeta


def _json(content: Any) -> Response:
    # comet_ml parses a body only when content-type is exactly application/json.
    return Response(orjson.dumps(content), media_type="application/json")


def _workspace(request: Request) -> str:
    return services.settings(request).comet_workspace


def _param(request: Request, name: str, *, required: bool = True) -> str | None:
    value = request.query_params.get(name)
    if required and not value:
        raise InvalidParameterValue(f"Missing query parameter '{name}'.")
    return value


def _flag(request: Request, name: str) -> bool:
    """comet_ml sends booleans as Python prints them ("True"/"False")."""
    return (request.query_params.get(name) or "").lower() in ("true", "1")


def check_workspace(request: Request, workspace: str | None) -> None:
    if workspace is not None and workspace != _workspace(request):
        raise ResourceDoesNotExist(f"No workspace named '{workspace}': this server has one workspace, "
                                   f"'{_workspace(request)}'.")


def find_project(cur: Any, request: Request, workspace: str | None, name: str | None,
                 project_id: str | None = None) -> ExperimentRow:
    check_workspace(request, workspace)
    if not project_id and not name:
        raise InvalidParameterValue("Give projectName (with workspaceName) or projectId.")
    found = (run_summaries.experiments(cur, experiment_id=project_id) if project_id
             else run_summaries.experiments(cur, name=name))
    if not found:
        what = f"id '{project_id}'" if project_id is not None else f"name '{name}'"
        raise ResourceDoesNotExist(f"No project with {what} in workspace '{_workspace(request)}'.")
    # The gate checked a project named by name; one named by id is checked here.
    access(request).require(found[0].experiment_id, Permission.READ)
    return found[0]


def project_id_refused(request: Request, params: Mapping[str, Any]) -> bool:
    """find_project's own check of a project named by id, for the auth rule (Rule.refused_now)."""
    project_id = request.query_params.get("projectId")
    if not project_id or request.query_params.get("projectName"):
        return False             # named by name: the gate checked it
    with services.reader(request).cursor() as cur:
        found = run_summaries.experiments(cur, experiment_id=project_id)
    return bool(found) and access(request).permission(found[0].experiment_id) < Permission.READ


def find_run(cur: Any, key: str | None) -> RunMeta:
    """The run of an experiment key (the gate checked READ on its experiment)."""
    meta = run_summaries.run_meta(cur, key) if key else None
    if meta is None:
        raise ResourceDoesNotExist(f"No experiment with key '{key}'.")
    return meta


# ----- workspaces and projects

def get_workspaces(request: Request) -> Response:
    return _json({"workspaceNames": [_workspace(request)]})


def get_projects(request: Request) -> Response:
    check_workspace(request, _param(request, "workspaceName"))
    with services.reader(request).cursor() as cur:
        found = run_summaries.experiments(cur)
    readable = access(request).read_scope()
    return _json({"projects": [shapes.project(e, _workspace(request)) for e in found
                               if readable.allows(e.experiment_id)]})


def get_project(request: Request) -> Response:
    with services.reader(request).cursor() as cur:
        e = find_project(cur, request, request.query_params.get("workspaceName"),
                         request.query_params.get("projectName"), request.query_params.get("projectId"))
    return _json(shapes.project(e, _workspace(request)))


def get_experiments(request: Request) -> Response:
    with services.reader(request).cursor() as cur:
        e = find_project(cur, request, _param(request, "workspaceName"), _param(request, "projectName"))
        runs = run_summaries.runs_of_experiment(cur, e.experiment_id, deleted=_flag(request, "archived"))
    page, size = request.query_params.get("page"), request.query_params.get("size")
    if page is not None or size is not None:
        if request.query_params.get("sortBy") not in (None, "startTime", "endTime"):
            raise InvalidParameterValue("sortBy must be 'startTime' or 'endTime'.")
        attr = "end_time" if request.query_params.get("sortBy") == "endTime" else "start_time"
        runs.sort(key=lambda m: (getattr(m, attr) or 0, m.run_id),
                  reverse=request.query_params.get("sortOrder") == "desc")
        try:
            p, s = int(page or 1), int(size or len(runs) or 1)
        except ValueError:
            raise InvalidParameterValue("page and size must be integers.") from None
        if p < 1 or s < 1:
            raise InvalidParameterValue("page and size must be positive.")
        runs = runs[(p - 1) * s:p * s]
    ws = _workspace(request)
    return _json({"experiments": [shapes.metadata(m, ws) for m in runs]})


# ----- one experiment (run)

def get_metadata(request: Request) -> Response:
    with services.reader(request).cursor() as cur:
        meta = find_run(cur, request.query_params.get("experimentKey"))
    return _json(shapes.metadata(meta, _workspace(request)))


def get_parameters(request: Request) -> Response:
    with services.reader(request).cursor() as cur:
        meta = find_run(cur, request.query_params.get("experimentKey"))
        found = run_summaries.params(cur, meta.run_id)
    # MLflow keeps no time per param: the run's start stands for it.
    return _json({"values": [shapes.single_value_summary(k, v, meta.start_time, editable=False) for k, v in found]})


def get_metrics_summary(request: Request) -> Response:
    reader = services.reader(request)
    with reader.cursor() as cur:
        meta = find_run(cur, request.query_params.get("experimentKey"))
        found = run_summaries.metric_summaries(cur, meta.run_id, reader.latest_table)
    return _json({"values": [shapes.metric_summary(s) for s in found]})


def get_tags(request: Request) -> Response:
    with services.reader(request).cursor() as cur:
        meta = find_run(cur, request.query_params.get("experimentKey"))
        found = run_summaries.tags(cur, meta.run_id)
    return _json({"tags": [k for k, v in found if shapes.is_label(k, v)]})


def get_others(request: Request) -> Response:
    with services.reader(request).cursor() as cur:
        meta = find_run(cur, request.query_params.get("experimentKey"))
        found = run_summaries.tags(cur, meta.run_id)
    values = [shapes.single_value_summary(shapes.other_name(k), v, meta.start_time, editable=True)
              for k, v in found if not shapes.is_label(k, v)]
    return _json({"values": values})


def _points(request: Request, key: str | None) -> StreamingResponse:
    reader = services.reader(request)
    with reader.cursor() as cur:
        meta = find_run(cur, request.query_params.get("experimentKey"))
    cur = reader.open_cursor()
    try:
        batches = run_summaries.point_batches(cur, meta.run_id, key)
    except Exception:
        cur.close()
        raise

    # Every point, streamed in batches (Comet itself samples past 15,000 values; this does not).
    def chunks() -> Iterator[bytes]:
        try:
            yield b'{"metrics":['
            sent = 0
            for batch in batches:
                if batch.num_rows:
                    chunk = shapes.points_json(batch, sent)
                    yield chunk[1:] if sent == 0 else chunk   # no comma before the first point
                    sent += batch.num_rows
            yield b"]}"
        except Exception as e:
            reader.streamed_read_failed(e)
            raise
        finally:
            cur.close()
            memory.release_after_large_read()
    return StreamingResponse(chunks(), media_type="application/json")


def get_metric(request: Request) -> StreamingResponse:
    key = _param(request, "metricName")
    return _points(request, key)


def get_all_metrics(request: Request) -> StreamingResponse:
    return _points(request, None)


# ----- queries

def get_columns(request: Request) -> Response:
    reader = services.reader(request)
    with reader.cursor() as cur:
        e = find_project(cur, request, _param(request, "workspaceName"), _param(request, "projectName"))
        keys = run_summaries.project_keys(cur, e.experiment_id, reader.latest_table)
        labels = run_summaries.project_labels(cur, e.experiment_id)
    return _json({"columns": comet_query.columns(keys, labels)})


def _query(request: Request, body: dict[str, Any]) -> Response:
    reader = services.reader(request)
    predicates = body.get("predicates")
    if not isinstance(predicates, list):
        raise InvalidParameterValue("'predicates' must be a list.")
    for field in ("workspaceName", "projectName"):
        if body.get(field) is not None and not isinstance(body[field], str):
            raise InvalidParameterValue(f"'{field}' must be a string.")
    tree = comet_query.tree(predicates)
    with reader.cursor() as cur:
        e = find_project(cur, request, body.get("workspaceName"), body.get("projectName"))
        keys = run_summaries.search_run_ids(cur, e.experiment_id, tree, reader.latest_table,
                                            deleted=bool(body.get("archived")))
    return _json({"experimentKeys": keys})


async def query_project(request: Request) -> Response:
    body = await json_body(request)
    return await run_in_threadpool(_query, request, body)


def build_router() -> APIRouter:
    router = APIRouter()
    read_errors = (401, 403, 404)
    for path, handler, summary, query, answer in (
        ("/workspaces", get_workspaces, "The server's one workspace", None, S.CometWorkspaces),
        ("/projects", get_projects, "The projects (MLflow experiments) the caller may read",
         S.CometWorkspaceQuery, S.CometProjects),
        ("/project", get_project, "One project, by name or id", S.CometProjectQuery, S.CometProject),
        ("/experiments", get_experiments, "A project's experiments (runs)", S.CometExperimentsQuery,
         S.CometExperiments),
        ("/experiment/metadata", get_metadata, "One experiment's metadata", S.CometExperimentQuery,
         S.CometExperimentMetadata),
        ("/experiment/parameters", get_parameters, "An experiment's parameters", S.CometExperimentQuery,
         S.CometValues),
        ("/experiment/metrics/summary", get_metrics_summary, "An experiment's metric summaries",
         S.CometExperimentQuery, S.CometValues),
        ("/experiment/metrics/get-metric", get_metric, "Every point of one metric (streamed)",
         S.CometMetricQuery, S.CometMetricPoints),
        ("/experiment/metrics/get-all", get_all_metrics, "Every point of every metric (streamed)",
         S.CometExperimentQuery, S.CometMetricPoints),
        ("/experiment/tags", get_tags, "An experiment's tags (labels)", S.CometExperimentQuery, S.CometTags),
        ("/experiment/log-other", get_others, "An experiment's others (run tags)", S.CometExperimentQuery,
         S.CometValues),
        ("/project/column-names", get_columns, "The names a project query can use", S.CometProjectNameQuery,
         S.CometColumns),
    ):
        router.add_api_route(path, handler, methods=["GET"], **documented(
            summary=summary, query=query, response=answer, errors=read_errors, tags=["comet"],
            error_model=S.CometErrorBody))
    router.add_api_route("/project/query", query_project, methods=["POST"], **documented(
        summary="The experiment keys of a project matching comet_ml's query predicates", body=S.CometQueryBody,
        response=S.CometExperimentKeys, errors=read_errors, tags=["comet"], error_model=S.CometErrorBody))
    return router
