"""The composition root: one process runs ingest, the projector and the query API.

DuckDB allows one read-write process per file (docs/design.md, invariant 6), so the projector and
the API that reads its file live together; more read capacity means more replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator

import orjson
from fastapi import FastAPI
from starlette.responses import JSONResponse, PlainTextResponse

from runledger.dialects import mlflow as mlflow_dialect
from runledger.dialects import native as native_dialect
from runledger.dialects import errors
from runledger.dialects.mlflow import errors as mlflow_errors
from runledger.dialects.native import errors as native_errors
from runledger.dialects.services import Services
from runledger.query.sql.engine import SqlEngine, SqlLimits
from runledger.ingest.backlog import AppendBacklog
from runledger.ingest import provenance
from runledger.ingest.outcomes import VerdictBoard
from runledger.ingest.producer import EventLog
from runledger.ingest.topic import ensure_topic
from runledger.ingest.writer import Writer, new_event
from runledger.projector.consumer import Projector
from runledger.projector.store import Store
from runledger.query import memory, models_reader
from runledger.query.catalog import ReadModelCatalog
from runledger.query.audit_service import AuditService
from runledger.query.read_service import ReadService
from runledger.query.tail import TailHub
from runledger.query.run_cache import RunCache
from runledger.query.history_buckets import BucketCache
from runledger.query.search_cursors import SearchCursors
from runledger import http_guards
from runledger import ui
from runledger.settings import Settings

log = logging.getLogger(__name__)

API_PREFIXES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")
RUNLEDGER_PREFIX = "/api/runledger/v1"
VERSION = "0.1.0"


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def api_of(path: str) -> str:
    """Which API a request path belongs to, as events record it."""
    if path.startswith(API_PREFIXES):
        return provenance.API_MLFLOW
    if path.startswith(f"{RUNLEDGER_PREFIX}/metrics/stream"):
        return provenance.API_STREAM
    return provenance.API_RUNLEDGER


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
        sql_engine = SqlEngine(store, settings.topic, SqlLimits(
            time_limit_ms=settings.sql_time_limit_ms, memory_mb=settings.sql_memory_mb, max_rows=settings.sql_max_rows,
            max_bytes=settings.sql_max_bytes, max_concurrent=settings.sql_max_concurrent))
        sql_engine.partitions = partitions
        sql_engine.prepare(settings.latest_table)   # views + instance lockdown, before the projector writes
        run_cache = RunCache(max_bytes=settings.run_cache_mb << 20)
        store.apply_listeners.append(run_cache.drop_changed)
        bucket_cache = BucketCache()
        store.apply_listeners.append(bucket_cache.drop_changed)
        tail_hub = TailHub(asyncio.get_running_loop())
        store.apply_listeners.append(tail_hub.committed)
        board = VerdictBoard()
        projector = Projector(store, settings.bootstrap_servers, settings.topic, board.resolve)
        await projector.start(partitions)
        task = asyncio.create_task(projector.run(), name="projector")
        task.add_done_callback(_report_projector_exit)
        releaser = asyncio.create_task(memory.release_loop(), name="memory-release")
        event_log = EventLog(settings.bootstrap_servers, settings.topic, send_timeout=settings.kafka_timeout)
        await event_log.start()
        writer = Writer(event_log, board, ReadModelCatalog(store, settings.latest_table, projector.cache), settings.sync_timeout,
                        settle=projector.caught_up, clock_margin=settings.clock_margin_ms / 1000)
        backlog = AppendBacklog(lambda: projector.applied_offsets, max_age_s=settings.stream_max_lag_ms / 1000)
        projector.commit_listeners.append(backlog.progressed)
        reader = ReadService(store, projector, latest_table=settings.latest_table, run_cache=run_cache,
                             search_cursors=SearchCursors(), bucket_cache=bucket_cache)
        audit = AuditService(store, reader, tail_hub, settings.bootstrap_servers, settings.topic)
        app.state.services = Services(writer=writer, reader=reader, backlog=backlog, settings=settings,
                                      models=models_reader.ReadModelModelCatalog(store), sql=sql_engine,
                                      audit=audit)
        # The composition root's own handles (not for routes: they use runledger.dialects.services).
        app.state.store, app.state.projector = store, projector
        try:
            await ensure_default_experiment(writer, settings)
            yield
        finally:
            releaser.cancel()
            await projector.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
            await projector.close()
            await audit.close()
            await event_log.stop()
            store.close()

    app = FastAPI(title="Runledger", version=VERSION, lifespan=lifespan, default_response_class=OrjsonResponse,
                  docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    for prefix in API_PREFIXES:
        for router in mlflow_dialect.routers(ajax=prefix.startswith("/ajax-api")):
            app.include_router(router, prefix=prefix)
    # Runledger's own API, outside the MLflow prefixes: streaming ingest and operational reads.
    for router in native_dialect.routers():
        app.include_router(router, prefix=RUNLEDGER_PREFIX)

    ui.install(app)  # the web UI at / (runledger/ui)

    @app.get("/health", response_class=PlainTextResponse)
    def health() -> str:
        return "OK"

    @app.get("/version", response_class=PlainTextResponse)
    def version() -> str:
        return VERSION

    errors.install(app, {RUNLEDGER_PREFIX: native_errors.render}, default=mlflow_errors.render)
    # Outermost last: the request id is set before the host check, so refusals carry it too.
    app.add_middleware(http_guards.BodyTimeoutMiddleware, timeout=settings.body_timeout)
    app.add_middleware(http_guards.AllowedHostsMiddleware, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(http_guards.RequestContext, api_of=api_of)

    return app


def _report_projector_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("projector stopped", exc_info=task.exception())
