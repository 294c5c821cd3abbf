"""Comet's REST v2 write routes as APIExperiment calls them. Each becomes the same event the
MLflow endpoint for that write appends, through the same Writer, so the same rules hold (a param
is logged once: a changed value is refused and the first stays; tags overwrite; metrics append)."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from runledger.auth.access import access
from runledger.auth.permissions import Permission
from runledger.dialects import services
from runledger.dialects.comet import schemas as S
from runledger.dialects.comet import shapes
from runledger.dialects.comet.reads import check_workspace
from runledger.dialects.identity import acting_user
from runledger.dialects.mlflow.writes import grant_creator
from runledger.dialects.openapi import documented
from runledger.dialects.request import json_body
from runledger.ingest import limits
from runledger.ingest.contract import entities
from runledger.ingest.contract.events import metrics_columns
from runledger.ingest.errors import InvalidParameterValue, ResourceDoesNotExist, RunledgerError
from runledger.ingest.run_names import generate_run_name
from runledger.ingest.writer import new_event, now_ms
from runledger.log_position import reach_position
from runledger.query import run_summaries

_OK = {"code": 200, "msg": "ok", "data": None, "sdk_error_code": 0}


def _json(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


def _str(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidParameterValue(f"Missing value for required field '{name}'.")
        return None
    if not isinstance(value, str):
        raise InvalidParameterValue(f"Field '{name}' must be a string, got {limits.shown_value(value)}.")
    return value


def _int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise InvalidParameterValue(f"Field '{name}' must be an integer, got {limits.shown_value(value)}.")
    if not -2**63 <= int(value) < 2**63:
        # Steps and times are 64-bit in the log, as MLflow's int64 fields (was a 500 in the writer).
        raise InvalidParameterValue(f"Field '{name}' must fit in 64 bits, got {limits.shown_value(value)}.")
    return int(value)


def value_text(value: Any) -> str:
    """A parameter's or other's value as MLflow's client would log it (`str(value)`): the
    mlflow and comet_ml clients then agree on what one value reads as."""
    return value if isinstance(value, str) else str(value)


async def _run(request: Request, body: dict[str, Any]) -> tuple[str, str]:
    """(run id, experiment id) of the experiment key, which must be writable."""
    key = _str(body, "experimentKey")
    assert key is not None
    run = services.writer(request).writable_run(key)
    return run.run_id, run.experiment_id


async def _commit(request: Request, type_: str, payload: dict[str, Any], run_id: str, experiment_id: str) -> None:
    await services.writer(request).commit(new_event(type_, payload, user=acting_user(request), run_id=run_id,
                                                    experiment_id=experiment_id))


async def _project_id(request: Request, name: str) -> str:
    """The experiment named `name`, created when missing (Comet creates projects on first use)."""
    limits.check_experiment_name(name)
    reader = services.reader(request)
    with reader.cursor() as cur:
        found = run_summaries.experiments(cur, name=name, include_deleted=True)
    if found:
        if found[0].lifecycle_stage != "active":
            raise InvalidParameterValue(entities.experiment_not_active(found[0].experiment_id, found[0].lifecycle_stage))
        access(request).require(found[0].experiment_id, Permission.EDIT)
        return found[0].experiment_id
    settings = services.settings(request)
    try:
        verdict = await services.writer(request).commit(new_event("ExperimentCreated", {
            "name": name, "artifact_location": None, "artifact_root": settings.artifact_root, "tags": [],
        }, user=acting_user(request)))
    except RunledgerError as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return await _project_id(request, name)   # created concurrently: use that one
    exp_id = str(verdict.result["experiment_id"])
    await grant_creator(request, exp_id)   # the creator gets MANAGE, as with experiments/create
    return exp_id


def _require_edit_if_known(request: Request, name: str) -> None:
    """_project_id's permission check alone, on a project that exists here already."""
    with services.reader(request).cursor() as cur:
        found = run_summaries.experiments(cur, name=name, include_deleted=True)
    if found and found[0].lifecycle_stage == "active":
        access(request).require(found[0].experiment_id, Permission.EDIT)


async def create_experiment(request: Request) -> Response:
    body = await json_body(request)
    check_workspace(request, _str(body, "workspaceName"))
    project = _str(body, "projectName")
    assert project is not None
    run_name = _str(body, "experimentName", required=False) or generate_run_name()
    limits.check_length(run_name, limits.MAX_RUN_NAME_LENGTH, "experimentName")
    # A log position the caller passed back is waited for here, after _project_id's permission
    # check on a project this server knows already, so a caller without EDIT is refused at once.
    await reach_position(request, check=lambda: _require_edit_if_known(request, project))
    exp_id = await _project_id(request, project)
    writer = services.writer(request)
    exp = writer.catalog.experiment(exp_id)
    if exp is None:
        raise ResourceDoesNotExist(entities.experiment_not_found(exp_id))
    user = acting_user(request)
    event = new_event("RunCreated", {}, user=user, experiment_id=exp_id)
    run_id = event.event_id
    event = dataclasses.replace(event, run_id=run_id, payload={
        "run_name": run_name, "start_time": now_ms(), "user_id": user, "tags": [],
        "artifact_uri": f"{exp.artifact_location.rstrip('/')}/{run_id}/artifacts"})
    await writer.commit(event)
    return _json({"experimentKey": run_id, "workspaceName": services.settings(request).comet_workspace,
                  "projectName": project, "link": None})


async def log_metric(request: Request) -> Response:
    body = await json_body(request)
    run_id, exp_id = await _run(request, body)
    key = limits.check_key(_str(body, "metricName") or "", "metricName")
    raw = body.get("metricValue")
    try:
        if isinstance(raw, bool) or raw is None:
            raise ValueError
        value = float(raw)
    except (TypeError, ValueError):
        raise InvalidParameterValue(f"metricValue must be a number, got {limits.shown_value(raw)}: MLflow's "
                                    "metrics (which Comet's share storage with) are doubles.") from None
    if body.get("context") is not None:
        raise InvalidParameterValue("A metric context is not stored by this server (MLflow's metrics have none); "
                                    "put it in the metric name instead.")
    timestamp = _int(body, "timestamp")
    timestamp = now_ms() if timestamp is None else timestamp
    if timestamp < 0:
        raise InvalidParameterValue("timestamp must be non-negative.")
    step = _int(body, "step") or 0
    points = [(key, limits.clamp_metric_value(value), timestamp, step)]
    epoch = _int(body, "epoch")
    if epoch is not None:
        # The epoch is the run's `epoch` metric at this step (docs/comet.md), as get_metrics reads it back.
        points.append((run_summaries.EPOCH_KEY, float(epoch), timestamp, step))
    await _commit(request, "MetricsLogged", metrics_columns(points), run_id, exp_id)
    return _json(_OK)


async def log_parameter(request: Request) -> Response:
    body = await json_body(request)
    run_id, exp_id = await _run(request, body)
    key = limits.check_key(_str(body, "parameterName") or "", "parameterName")
    if "parameterValue" not in body:
        raise InvalidParameterValue("Missing value for required field 'parameterValue'.")
    value = limits.truncate(value_text(body["parameterValue"]), limits.MAX_PARAM_VALUE_LENGTH)
    await _commit(request, "ParamsLogged", {"params": [[key, value]]}, run_id, exp_id)
    return _json(_OK)


async def log_other(request: Request) -> Response:
    body = await json_body(request)
    run_id, exp_id = await _run(request, body)
    key = shapes.tag_key_of_other(limits.check_key(_str(body, "key") or "", "key"))
    if "value" not in body:
        raise InvalidParameterValue("Missing value for required field 'value'.")
    value = value_text(body["value"])
    if key == shapes.RUN_NAME_TAG:
        limits.check_length(value, limits.MAX_RUN_NAME_LENGTH, "value")
    value = limits.truncate(value, limits.MAX_RUN_TAG_VALUE_LENGTH)
    await _commit(request, "TagsSet", {"tags": [[key, value]]}, run_id, exp_id)
    return _json(_OK)


async def add_tags(request: Request) -> Response:
    body = await json_body(request)
    run_id, exp_id = await _run(request, body)
    labels = body.get("addedTags")
    if not isinstance(labels, list) or not all(isinstance(t, str) and t for t in labels):
        raise InvalidParameterValue("addedTags must be a list of non-empty strings.")
    tags = [[limits.check_key(t, "addedTags"), ""] for t in labels]   # a label: a tag with an empty value
    if tags:
        await _commit(request, "TagsSet", {"tags": tags}, run_id, exp_id)
    return _json(_OK)


async def set_start_end_time(request: Request) -> Response:
    body = await json_body(request)
    run_id, exp_id = await _run(request, body)
    start, end = _int(body, "startTimeMillis"), _int(body, "endTimeMillis")
    if start is None and end is None:
        raise InvalidParameterValue("Give startTimeMillis, endTimeMillis or both.")
    await _commit(request, "RunUpdated", {"status": None, "end_time": end, "run_name": None, "start_time": start},
                  run_id, exp_id)
    return _json(_OK)


async def update_status(request: Request) -> Response:
    """APIExperiment.set_state: running / finished / crashed -> RUNNING / FINISHED / FAILED."""
    body = await json_body(request)
    run_id, exp_id = await _run(request, body)
    alive, crashed = body.get("isAlive"), body.get("hasCrashed")
    if not isinstance(alive, bool) or not isinstance(crashed or False, bool):
        raise InvalidParameterValue("isAlive (and hasCrashed) must be booleans.")
    status = "RUNNING" if alive else "FAILED" if crashed else "FINISHED"
    await _commit(request, "RunUpdated", {"status": status, "end_time": None if alive else now_ms(),
                                          "run_name": None}, run_id, exp_id)
    return _json(_OK)


async def set_status(request: Request) -> Response:
    """Comet's keep-alive (GET, APIExperiment.update_status): the experiment is running. A run
    already RUNNING appends nothing (a heartbeat every few seconds must not grow the log)."""
    key = request.query_params.get("experimentKey")
    run_id, exp_id = await _run(request, {"experimentKey": key})
    with services.reader(request).cursor() as cur:
        meta = run_summaries.run_meta(cur, run_id)
    if meta is not None and meta.status != "RUNNING":
        await _commit(request, "RunUpdated", {"status": "RUNNING", "end_time": None, "run_name": None},
                      run_id, exp_id)
    return _json({"isAliveBeatDurationMillis": 10_000, "gpuMonitorIntervalMillis": 60_000,
                  "cpuMonitorIntervalMillis": 60_000})


def build_router() -> APIRouter:
    router = APIRouter()
    # 504: written to the log, but the read model did not apply it in time.
    write_errors = (401, 403, 404, 504)
    for path, handler, summary, body, answer in (
        ("/write/experiment/create", create_experiment, "Create an experiment (run), and its project if new",
         S.CometCreateExperimentBody, S.CometCreatedExperiment),
        ("/write/experiment/metric", log_metric, "Log one metric point", S.CometLogMetricBody, S.CometOk),
        ("/write/experiment/parameter", log_parameter, "Log a parameter (once)", S.CometLogParameterBody, S.CometOk),
        ("/write/experiment/log-other", log_other, "Set an other (a run tag)", S.CometLogOtherBody, S.CometOk),
        ("/write/experiment/tags", add_tags, "Add tags (labels)", S.CometAddTagsBody, S.CometOk),
        ("/write/experiment/set-start-end-time", set_start_end_time, "Set the start and/or end time",
         S.CometStartEndTimeBody, S.CometOk),
        ("/write/experiment/update-status", update_status, "Set the state: running, finished or crashed",
         S.CometUpdateStatusBody, S.CometOk),
    ):
        router.add_api_route(path, handler, methods=["POST"], **documented(
            summary=summary, body=body, response=answer, errors=write_errors, tags=["comet"],
            error_model=S.CometErrorBody))
    router.add_api_route("/write/experiment/set-status", set_status, methods=["GET"], **documented(
        summary="Keep-alive: the experiment is running", query=S.CometExperimentQuery, response=S.CometHeartbeat,
        errors=write_errors, tags=["comet"], error_model=S.CometErrorBody))
    return router
