"""The composition root: one process runs ingest, the projector and the query API.

DuckDB allows one read-write process per file (DESIGN.md invariant 6), so the projector and
the API that reads its file live together; more read capacity means more replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any, AsyncIterator

import orjson
from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from runledger.ingest import inputs_routes
from runledger.ingest import models_routes as ingest_models_routes
from runledger.ingest import routes as ingest_routes
from runledger.ingest import streaming as ingest_streaming
from runledger.ingest.backlog import AppendBacklog
from runledger.ingest.catalog import ExperimentRef, RunRef
from runledger.ingest.errors import MlflowError
from runledger.ingest.outcomes import VerdictBoard
from runledger.ingest.producer import EventLog
from runledger.ingest.topic import ensure_topic
from runledger.ingest.writer import Writer, new_event
from runledger.projector.consumer import Projector
from runledger.projector.fold_cache import FoldCache
from runledger.projector.store import ReadModelUnavailable, Store
from runledger.query import datasets_routes, history_routes, memory, reader
from runledger.query.run_cache import RunCache
from runledger.query.run_info import run_info_json
from runledger.query.search_cursors import SearchCursors
from runledger.query import routes as query_routes
from runledger.query import ops_routes
from runledger.query import models_reader, models_routes as query_models_routes
from runledger import http_guards
from runledger.settings import Settings

log = logging.getLogger(__name__)

API_PREFIXES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")
RUNLEDGER_PREFIX = "/api/runledger/v1"
VERSION = "0.1.0"
MAX_ERROR_MESSAGE_CHARS = 2000


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ReadModelCatalog:
    """Answers ingest's pre-write questions: from the projector's fold cache when it holds the
    answer (the latest folded state, no query), else from the DuckDB read model."""

    def __init__(self, store: Store, settings: Settings, cache: FoldCache | None = None) -> None:
        self.store = store
        self.settings = settings
        self.cache = cache

    def experiment(self, experiment_id: str) -> ExperimentRef | None:
        if self.cache is not None and self.cache.experiments is not None:
            exp = self.cache.experiments.get(experiment_id)
            return None if exp is None else ExperimentRef(exp.experiment_id, exp.lifecycle_stage,
                                                          exp.artifact_location)
        with self.store.cursor() as cur:
            row = cur.execute("SELECT experiment_id, lifecycle_stage, artifact_location FROM experiments "
                              "WHERE experiment_id = ?", [experiment_id]).fetchone()
        return None if row is None else ExperimentRef(*row)

    def run(self, run_id: str) -> RunRef | None:
        entry = self.cache.runs.get(run_id) if self.cache is not None else None
        if entry is not None:
            exp = self.experiment(entry.row.experiment_id) if entry.row is not None else None
            if entry.row is None or exp is None:
                return None
            return RunRef(run_id, entry.row.experiment_id, entry.row.lifecycle_stage, exp.lifecycle_stage)
        with self.store.cursor() as cur:
            ref = reader.run_ref(cur, run_id)
        return None if ref is None else RunRef(run_id, *ref)

    def run_info(self, run_id: str) -> dict[str, Any]:
        entry = self.cache.runs.get(run_id) if self.cache is not None else None
        if entry is not None and entry.row is not None:
            exp = self.experiment(entry.row.experiment_id)
            deleted = entry.row.lifecycle_stage == "deleted" or (exp is not None and exp.lifecycle_stage == "deleted")
            return run_info_json(entry.row, "deleted" if deleted else "active")
        return self.run_json(run_id)["info"]

    def run_ids(self, experiment_id: str, *, lifecycle_stage: str, started_at_or_before: int | None = None,
                deleted_at_or_after: int | None = None, limit: int | None = None) -> list[str]:
        sql = "SELECT run_id FROM runs WHERE experiment_id = ? AND lifecycle_stage = ?"
        params: list[Any] = [experiment_id, lifecycle_stage]
        if started_at_or_before is not None:
            sql, params = sql + " AND start_time <= ?", [*params, started_at_or_before]
        if deleted_at_or_after is not None:
            sql, params = sql + " AND deleted_time >= ?", [*params, deleted_at_or_after]
        sql += " ORDER BY start_time, run_id"
        if limit is not None:
            sql, params = sql + " LIMIT ?", [*params, limit]
        with self.store.cursor() as cur:
            return [r[0] for r in cur.execute(sql, params).fetchall()]

    def run_json(self, run_id: str) -> dict[str, Any]:
        with self.store.cursor() as cur:
            run = reader.get_run(cur, run_id, self.settings.latest_table)
        assert run is not None, f"run {run_id} was applied but is not readable"
        return run


async def ensure_default_experiment(writer: Writer, settings: Settings) -> None:
    """Experiment "0" named "Default" exists, as in MLflow. The fixed event id makes a second
    append (every start before the projector caught up) a duplicate the fold ignores."""
    if writer.catalog.experiment("0") is not None:
        return
    await writer.commit(new_event(
        "ExperimentCreated",
        {"name": "Default", "artifact_location": None, "artifact_root": settings.artifact_root, "tags": []},
        user="", experiment_id="0", event_id="runledger-default-experiment-0"))


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        assert settings.bootstrap_servers, "bootstrap servers must be resolved before the app starts"
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        partitions = await ensure_topic(settings.bootstrap_servers, settings.topic, settings.partitions)
        store = Store(settings.duckdb_path, threads=settings.duckdb_threads, memory_limit=settings.duckdb_memory_limit)
        app.state.run_cache = RunCache(max_bytes=settings.run_cache_mb << 20)
        store.apply_listeners.append(app.state.run_cache.drop_changed)
        board = VerdictBoard()
        projector = Projector(store, settings.bootstrap_servers, settings.topic, board.resolve)
        await projector.start(partitions)
        task = asyncio.create_task(projector.run(), name="projector")
        task.add_done_callback(_report_projector_exit)
        releaser = asyncio.create_task(memory.release_loop(), name="memory-release")
        event_log = EventLog(settings.bootstrap_servers, settings.topic, send_timeout=settings.kafka_timeout)
        await event_log.start()
        writer = Writer(event_log, board, ReadModelCatalog(store, settings, projector.cache), settings.sync_timeout)
        app.state.store, app.state.writer, app.state.projector = store, writer, projector
        app.state.append_backlog = AppendBacklog(lambda: projector.applied_offsets,
                                                 max_age_s=settings.stream_max_lag_ms / 1000)
        projector.commit_listeners.append(app.state.append_backlog.progressed)
        app.state.model_catalog = models_reader.ReadModelModelCatalog(store)
        try:
            await ensure_default_experiment(writer, settings)
            yield
        finally:
            releaser.cancel()
            await projector.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
            await projector.close()
            await event_log.stop()
            store.close()

    app = FastAPI(title="Runledger", version=VERSION, lifespan=lifespan, default_response_class=OrjsonResponse,
                  docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    app.state.search_cursors = SearchCursors()
    for prefix in API_PREFIXES:
        app.include_router(ingest_routes.build_router(), prefix=prefix)
        app.include_router(inputs_routes.build_router(), prefix=prefix)
        app.include_router(ingest_models_routes.build_router(), prefix=prefix)
        app.include_router(query_models_routes.build_router(), prefix=prefix)
        app.include_router(query_routes.build_router(), prefix=prefix)
        app.include_router(history_routes.build_router(ajax=prefix.startswith("/ajax-api")), prefix=prefix)
        if prefix.startswith("/ajax-api"):
            app.include_router(datasets_routes.build_router(), prefix=prefix)

    # Runledger's own API, outside the MLflow prefixes: streaming ingest and operational reads.
    app.include_router(ingest_streaming.build_router(), prefix=RUNLEDGER_PREFIX)
    app.include_router(ops_routes.build_router(), prefix=RUNLEDGER_PREFIX)

    @app.get("/health", response_class=PlainTextResponse)
    def health() -> str:
        return "OK"

    @app.get("/version", response_class=PlainTextResponse)
    def version() -> str:
        return VERSION

    @app.exception_handler(MlflowError)
    async def mlflow_error(request: Request, exc: MlflowError) -> Response:
        body = exc.body()
        if len(body["message"]) > MAX_ERROR_MESSAGE_CHARS:  # a value echoed whole somewhere: never a megabyte back
            body["message"] = body["message"][:MAX_ERROR_MESSAGE_CHARS] + "..."
        return OrjsonResponse(body, status_code=exc.status_code)

    @app.exception_handler(ReadModelUnavailable)
    async def read_model_unavailable(request: Request, exc: ReadModelUnavailable) -> Response:
        return OrjsonResponse({"error_code": "TEMPORARILY_UNAVAILABLE", "message": str(exc)}, status_code=503)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            body = {"error_code": "BAD_REQUEST",
                    "message": f"Method {request.method} is not allowed for {request.url.path}"}
        elif exc.status_code == 404:
            body = {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API endpoint at {request.url.path}"}
        else:
            body = {"error_code": "BAD_REQUEST", "message": str(exc.detail)}
        return OrjsonResponse(body, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        # The traceback goes to the log under the request id; the caller gets only the id, never
        # exception text (it can carry SQL, paths or values of other requests).
        rid = http_guards.request_id(request.scope) or uuid.uuid4().hex
        log.error("unhandled error on %s %s, request id %s", request.method, request.url.path, rid,
                  exc_info=(type(exc), exc, exc.__traceback__))
        return OrjsonResponse({"error_code": "INTERNAL_ERROR", "message": f"Internal error; request id {rid}"},
                              status_code=500, headers={http_guards.REQUEST_ID_HEADER: rid})

    # Outermost last: the request id is set before the host check, so refusals carry it too.
    app.add_middleware(http_guards.BodyTimeoutMiddleware, timeout=settings.body_timeout)
    app.add_middleware(http_guards.AllowedHostsMiddleware, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(http_guards.RequestIdMiddleware)

    return app


def _report_projector_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("projector stopped", exc_info=task.exception())
