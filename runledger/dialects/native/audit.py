"""Audit and time travel over HTTP (Runledger's own API): the trail of runs, experiments and
everything, as-of reads and diffs folded from the log, non-destructive rewind, live tails.

Reading logic lives in runledger.query (audit_trail, as_of, tail, reached through
query.audit_service); rewind is one event appended by the writer and applied by the fold
(projector.fold `_on_RunRewound`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from runledger.auth.access import access
from runledger.dialects.native import schemas as S
from runledger.dialects.openapi import documented
from runledger.ingest.errors import ResourceDoesNotExist
from runledger.dialects import services
from runledger.dialects.identity import acting_user
from runledger.dialects.moments import moment
from runledger.dialects.request import Fields, json_body, query_fields
from runledger.ingest.positions import parse_time
from runledger.ingest.writer import new_event
from runledger.query import as_of, audit_trail, tail


# ----- response models (the OpenAPI schema of these endpoints)

class Actor(BaseModel):
    name: str | None
    verified: bool | None


class TrailVerdict(BaseModel):
    status: Literal["applied", "rejected"]
    error_code: str | None
    reason: str | None


class TrailEntry(BaseModel):
    position: str
    partition: int
    offset: int
    time: int | None
    event_id: str
    type: str
    run_id: str | None
    experiment_id: str | None
    actor: Actor
    api: str | None
    request_id: str | None
    summary: dict[str, Any] | None
    verdict: TrailVerdict


class TrailPage(BaseModel):
    events: list[TrailEntry]
    next_page_token: str | None = None


class KeyedChanges(BaseModel):
    added: list[dict[str, Any]]
    changed: list[dict[str, Any]]
    removed: list[dict[str, Any]]


class PointsAdded(BaseModel):
    key: str
    points_added: int
    step_min: int
    step_max: int


class RewindInRange(BaseModel):
    event_id: str
    step: int
    points_hidden: int


class RunDiff(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    run_id: str
    from_: dict[str, Any] = Field(alias="from")
    to: dict[str, Any]
    existed_before: bool
    info: dict[str, dict[str, Any]]
    params: KeyedChanges
    tags: KeyedChanges
    metrics: list[PointsAdded]
    latest_metrics: KeyedChanges
    rewinds: list[RewindInRange]
    events: list[TrailEntry]


class RewindResult(BaseModel):
    run_id: str
    step: int
    event_id: str


# ----- helpers

def _filters(f: Fields) -> audit_trail.TrailFilter:
    types = [t for raw in f.strings("type") for t in raw.split(",") if t]
    return audit_trail.TrailFilter(
        types=types, actor=f.str("actor"),
        since=_time(f, "since"), until=_time(f, "until"), verdict=f.str("verdict"))


def _time(f: Fields, name: str) -> int | None:
    value = f.str(name)
    return None if value is None else parse_time(value, name)


def _page(request: Request, **scope: str) -> dict[str, Any]:
    f = query_fields(request, repeated=("type",))
    return services.audit(request).trail(filters=_filters(f), max_results=f.int64("max_results"),
                                         page_token=f.str("page_token"), **scope)


# ----- trail

def run_events(request: Request, run_id: str) -> dict[str, Any]:
    return _page(request, run_id=run_id)


def experiment_events(request: Request, experiment_id: str) -> dict[str, Any]:
    return _page(request, experiment_id=experiment_id)


def all_events(request: Request) -> dict[str, Any]:
    """Everything, less the events of experiments the caller may not read (docs/auth.md)."""
    f = query_fields(request, repeated=("type",))
    read = access(request).read_scope()
    filters = dataclasses.replace(_filters(f), readable=None if read.mode == "all" else (read.mode, read.ids))
    return services.audit(request).trail(filters=filters, max_results=f.int64("max_results"),
                                         page_token=f.str("page_token"))


# ----- as-of, history, diff

async def get_run(request: Request, run_id: str, response: Response) -> Any:
    """runs/get, now or as of a moment (`as_of` = Unix ms or ISO 8601, `as_of_position`). An
    as-of answer says in X-Runledger-As-Of-Basis where its fold started (docs/audit.md)."""
    f = query_fields(request)
    then = moment(f, "as_of", "as_of_position", required=False)
    audit = services.audit(request)
    if then is None:
        run = await run_in_threadpool(audit.run_now, run_id)
        if run is None:
            raise ResourceDoesNotExist(f"Run with id={run_id} not found")
    else:
        basis: dict[str, Any] = {}
        run = await audit.run_as_of(run_id, then, basis=basis)
        response.headers["X-Runledger-As-Of-Basis"] = as_of.describe_basis(basis)
    return {"run": run}


async def run_artifacts(request: Request, run_id: str) -> Any:
    """The files in the run's artifact folder (path, size, sha256, who and when), now or as of a
    moment (`as_of` / `as_of_position`), as the log recorded uploads and deletions."""
    f = query_fields(request)
    then = moment(f, "as_of", "as_of_position", required=False)
    audit = services.audit(request)
    if then is None:
        if await run_in_threadpool(audit.run_now, run_id) is None:
            raise ResourceDoesNotExist(f"Run with id={run_id} not found")
        files = await run_in_threadpool(audit.artifacts_now, run_id)
    else:
        files = await audit.artifacts_as_of(run_id, then)
    return {"run_id": run_id, "files": files}


async def get_metric_history(request: Request) -> Any:
    """metrics/get-history (MLflow's shape) as of a moment."""
    f = query_fields(request)
    run_id = f.run_id()
    then = moment(f, "as_of", "as_of_position")
    assert then is not None
    return await services.audit(request).metric_history_as_of(
        run_id, f.req_str("metric_key"), then, f.int64("max_results"), f.str("page_token"))


async def run_diff(request: Request, run_id: str) -> Any:
    f = query_fields(request)
    start = moment(f, "from", "from_position")
    end = moment(f, "to", "to_position")
    assert start is not None and end is not None
    return RunDiff.model_validate(await services.audit(request).run_diff(run_id, start, end))


# ----- rewind

async def rewind(request: Request, run_id: str) -> RewindResult:
    """Hide the run's points above `step` from reads, by appending a RunRewound event."""
    f = Fields(await json_body(request))
    step = f.int64("step", required=True)
    assert step is not None
    writer = services.writer(request)
    run = writer.writable_run(run_id)
    event = new_event("RunRewound", {"step": step}, user=acting_user(request), run_id=run.run_id,
                      experiment_id=run.experiment_id)
    await writer.commit(event)
    return RewindResult(run_id=run.run_id, step=step, event_id=event.event_id)


# ----- live tail

def _tail(request: Request, *, run_id: str | None = None, experiment_id: str | None = None) -> Response:
    f = query_fields(request)
    ping = f.double("ping")
    last = request.headers.get("last-event-id") or f.str("last_event_id")
    if last:
        tail.parse_cursor(last)  # a bad id is a 400 now, not a broken stream later
    audit = services.audit(request)

    def read_after(cursor: dict[int, int]) -> list[dict[str, Any]]:
        return audit.entries_after(cursor, run_id=run_id, experiment_id=experiment_id, limit=tail.CATCH_UP_PAGE)

    body = tail.stream(audit.tail_hub, read_after, run_id=run_id, experiment_id=experiment_id,
                       last_event_id=last, ping_seconds=15.0 if ping is None else min(max(ping, 0.05), 60.0))
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def run_tail(request: Request, run_id: str) -> Response:
    return _tail(request, run_id=run_id)


def experiment_tail(request: Request, experiment_id: str) -> Response:
    return _tail(request, experiment_id=experiment_id)


# ----- verification

def verify_checksums(request: Request) -> dict[str, Any]:
    """Every table's row count and order-independent checksum with the log offsets they reflect,
    from one snapshot: what `runledger verify` compares with a replay while the server runs."""
    return services.audit(request).checksums()


def build_router() -> APIRouter:
    router = APIRouter()
    tags = ["audit"]
    router.add_api_route("/verify/checksums", verify_checksums, methods=["GET"], **documented(
        summary="Every table's row count and checksum, with the log offsets they reflect",
        response=S.ChecksumsAnswer, tags=tags))
    # The trail, diff and rewind answers are validated models (response_model): documented and checked.
    for path, handler, summary in (
            ("/events", all_events, "The audit trail: every event, oldest first"),
            ("/runs/{run_id}/events", run_events, "A run's audit trail"),
            ("/experiments/{experiment_id}/events", experiment_events, "An experiment's audit trail")):
        router.add_api_route(path, handler, methods=["GET"], **documented(
            summary=summary, query=S.TrailQuery, response=TrailPage, validate_response=True, errors=(404,),
            tags=tags))
    router.add_api_route("/runs/{run_id}/diff", run_diff, methods=["GET"], **documented(
        summary="What changed in a run between two moments", query=S.DiffQuery, response=RunDiff,
        validate_response=True, errors=(404,), tags=tags))
    router.add_api_route("/runs/{run_id}/rewind", rewind, methods=["POST"], **documented(
        summary="Hide a run's points above a step (an appended RunRewound event; nothing is erased)",
        body=S.RewindBody, response=RewindResult, validate_response=True, errors=(404,), tags=tags))
    for path, handler, summary in (
            ("/runs/{run_id}/tail", run_tail, "A run's events as they happen (Server-Sent Events)"),
            ("/experiments/{experiment_id}/tail", experiment_tail,
             "An experiment's events as they happen (Server-Sent Events)")):
        router.add_api_route(path, handler, methods=["GET"], **documented(
            summary=summary, query=S.TailQuery, response_media_type="text/event-stream",
            response_description="event: <type>, id: <position>, data: a trail entry (JSON), per event",
            tags=tags))
    router.add_api_route("/metrics/get-history", get_metric_history, methods=["GET"], **documented(
        summary="A metric's history as of a moment (MLflow's shape)", query=S.HistoryAsOfQuery,
        response=S.NativeMetricsAnswer, errors=(404,), tags=tags))
    router.add_api_route("/runs/{run_id}/artifacts", run_artifacts, methods=["GET"], **documented(
        summary="The files of a run's artifact folder now, or as of a moment (path, size, sha256, who, when)",
        query=S.AsOfQuery, errors=(404,), tags=tags))
    router.add_api_route("/runs/{run_id}", get_run, methods=["GET"], **documented(
        summary="A run now, or as of a moment (MLflow's shape)", query=S.AsOfQuery, response=S.NativeRunAnswer,
        errors=(404,), tags=tags))
    return router
