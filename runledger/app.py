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
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from runledger.dialects.route_prefixes import skip_foreign_prefixes
from runledger.dialects import comet as comet_dialect
from runledger.dialects import mlflow as mlflow_dialect
from runledger.dialects import pai as pai_dialect
from runledger.dialects import native as native_dialect
from runledger.dialects import wandb as wandb_dialect
from runledger.dialects import errors, openapi
from runledger.dialects.mlflow import errors as mlflow_errors
from runledger.dialects.native import errors as native_errors
from runledger.dialects.comet import auth_rules as comet_rules
from runledger.dialects.comet import errors as comet_errors
from runledger.dialects.comet import key as comet_key
from runledger.dialects.pai import auth_rules as pai_rules
from runledger.dialects.pai import errors as pai_errors
from runledger.dialects.services import Services
from runledger.query.sql.engine import SqlEngine, SqlLimits
from runledger.ingest.backlog import AppendBacklog
from runledger.projector.consumer import GROUP_COMMIT_POINTS
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
from runledger.query.checkpoints import Checkpointer
from runledger.query.read_service import ReadService
from runledger.query.tail import TailHub
from runledger.query.run_cache import RunCache
from runledger.query.history_buckets import BucketCache
from runledger.query.search_cursors import SearchCursors
from runledger import http_guards
from runledger import memory_trace
from runledger import ui
from runledger import gc_pauses
from runledger import request_timing
from runledger.log_position import LogPositionMiddleware, ruled_offsets
from runledger.auth import rules as auth_rules
from runledger.auth.authenticator import basic_api_key, register_key_reader
from runledger.auth.gate import AuthGate
from runledger.auth.permissions import Permission
from runledger.auth.service import AuthService, load_facts
from runledger.auth.state import SharedAuthState
from runledger.auth.vault import SecretStore
from runledger.dialects.mlflow import auth_rules as mlflow_rules, users as mlflow_users
from runledger.dialects.native import auth_rules as native_rules
from runledger.dialects.wandb import auth_rules as wandb_rules
from runledger.artifact_store import open_store
from runledger.dialects.mlflow import artifacts as mlflow_artifacts
from runledger.settings import Settings
from runledger.readiness import CatchUp, Readiness

log = logging.getLogger(__name__)

API_PREFIXES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")
# MLflow's artifact proxy and its 3.x server info (docs/artifacts.md). The proxy's prefix starts
# with "/api/2.0/mlflow", so `api_of` counts its events as MLflow's API.
ARTIFACT_PREFIXES = (mlflow_artifacts.ARTIFACTS_PREFIX, "/api/3.0/mlflow")
RUNLEDGER_PREFIX = "/api/runledger/v1"
VERSION = "0.1.0"
API_DESCRIPTION = """Runledger: MLflow's tracking API (under `/api/2.0/mlflow` and `/ajax-api/2.0/mlflow`) and
Runledger's own (`/api/runledger/v1`: streaming ingest, SQL, audit trail, operations). Every write is
an event in a Kafka log; reads come from a DuckDB read model folded from it. Errors, on every prefix,
are `{"error_code": ..., "message": ...}` with MLflow's statuses."""


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        # Non-str keys (partition numbers) as strings, as FastAPI's dict[str, Any] response
        # model did before routes declared `response_model=None` (runledger/dialects/openapi.py).
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class ReadinessBody(BaseModel):
    status: str = Field(description="ready, catching_up, kafka_unreachable or starting",
                        examples=["ready", "catching_up"])
    message: str
    events_behind: int | None = Field(None, description="events in the log not yet in the read model "
                                                        "(null when Kafka does not answer)")
    partitions_behind: dict[str, int] | None = Field(None, description="while catching up: per partition")
    progress: str | None = Field(None, description="while catching up: rate, position and ETA")


def api_of(path: str) -> str:
    """Which API a request path belongs to, as events record it."""
    if path.startswith(API_PREFIXES):
        return provenance.API_MLFLOW
    if path.startswith(f"{RUNLEDGER_PREFIX}/metrics/stream"):
        return provenance.API_STREAM
    if path.startswith(comet_dialect.PREFIXES):
        return provenance.API_COMET
    if path == "/graphql":
        return provenance.API_WANDB
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
    memory.configure(settings.memory_release_mb, settings.malloc_arenas,   # before any thread starts
                     settings.arrow_memory_pool, settings.malloc_mmap_threshold_kb)
    activity = memory.Activity()   # requests in flight and commits, for the idle trim
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        assert settings.bootstrap_servers, "bootstrap servers must be resolved before the app starts"
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        partitions = await ensure_topic(settings.bootstrap_servers, settings.topic, settings.partitions)
        store = Store(settings.duckdb_path, threads=settings.duckdb_threads, memory_limit=settings.duckdb_memory_limit,
                      allocator_flush_mb=settings.duckdb_allocator_flush_mb, checkpoint_mb=settings.duckdb_checkpoint_mb,
                      vacuum_tasks=settings.duckdb_vacuum_tasks)
        sql_engine = SqlEngine(store, settings.topic, SqlLimits(
            time_limit_ms=settings.sql_time_limit_ms, memory_mb=settings.sql_memory_mb, max_rows=settings.sql_max_rows,
            max_bytes=settings.sql_max_bytes, max_concurrent=settings.sql_max_concurrent,
            threads=settings.sql_threads, idle_threads=settings.duckdb_threads,
            idle_memory_mb=_mib(settings.duckdb_memory_limit)))
        sql_engine.partitions = partitions
        sql_engine.prepare(settings.latest_table)   # views + instance lockdown, before the projector writes
        run_cache = RunCache(max_bytes=settings.run_cache_mb << 20)
        store.apply_listeners.append(run_cache.drop_changed)
        bucket_cache = BucketCache()
        store.apply_listeners.append(bucket_cache.drop_changed)
        tail_hub = TailHub(asyncio.get_running_loop())
        store.apply_listeners.append(tail_hub.committed)
        # Counts each run's events as batches commit, from the first (a catch-up included).
        checkpointer = Checkpointer(store, settings.audit_checkpoint_events, settings.audit_checkpoint_points)
        store.apply_listeners.append(checkpointer.committed)
        board = VerdictBoard()
        projector = Projector(store, settings.bootstrap_servers, settings.topic, board.resolve,
                              fold_cache_runs=settings.fold_cache_runs)
        await projector.start(partitions)
        task = asyncio.create_task(projector.run(), name="projector")
        task.add_done_callback(_report_projector_exit)
        catch_up = CatchUp(projector, await projector.lag())
        readiness = Readiness(projector, catch_up)
        app.state.readiness = readiness
        store.apply_listeners.append(activity.touch)
        app.state.idle_trim = memory.IdleTrim(activity, store.release_buffers, settings.memory_idle_trim_s,
                                              purge=store.purge_eviction_queues, purge_s=settings.memory_purge_s,
                                              checkpoint=store.checkpoint_small_wal,
                                              checkpoint_s=settings.memory_checkpoint_s)
        releaser = asyncio.create_task(memory.release_loop(idle=app.state.idle_trim), name="memory-release")
        trace = (memory_trace.start(settings.memory_trace, settings.memory_trace_seconds, store.cursor,
                                     settings.memory_trace_python)
                 if settings.memory_trace is not None else None)
        event_log = EventLog(settings.bootstrap_servers, settings.topic, send_timeout=settings.kafka_timeout)
        await event_log.start()
        writer = Writer(event_log, board, ReadModelCatalog(store, settings.latest_table, projector.cache), settings.sync_timeout,
                        settle=projector.caught_up, clock_margin=settings.clock_margin_ms / 1000,
                        unwritable=store.unwritable, ruled=lambda: ruled_offsets(projector))
        backlog = AppendBacklog(lambda: projector.applied_offsets, max_age_s=settings.stream_max_lag_ms / 1000,
                                min_points=GROUP_COMMIT_POINTS)
        projector.commit_listeners.append(backlog.progressed)
        reader = ReadService(store, projector, latest_table=settings.latest_table, run_cache=run_cache,
                             search_cursors=SearchCursors(), bucket_cache=bucket_cache)
        audit = AuditService(store, reader, tail_hub, settings.bootstrap_servers, settings.topic, checkpointer)
        artifact_store, multipart = open_store(settings.artifact_store, settings.data_dir, settings.s3_endpoint_url)
        app.state.services = Services(writer=writer, reader=reader, backlog=backlog, settings=settings,
                                      models=models_reader.ReadModelModelCatalog(store), sql=sql_engine,
                                      audit=audit, artifacts=artifact_store, multipart=multipart)
        # The composition root's own handles (not for routes: they use runledger.dialects.services).
        app.state.store, app.state.projector = store, projector
        if settings.auth:
            auth = AuthService(writer, shared_auth, SecretStore(settings.data_dir),
                               Permission[settings.auth_default_permission],
                               visible=lambda: store.visibility.wait(settings.sync_timeout),
                               free_failures=settings.auth_free_failures)
            with store.cursor() as cur:
                shared_auth.apply_all(load_facts(cur))
            store.apply_listeners.append(auth.committed)
            app.state.auth = auth
        background: asyncio.Task[None] | None = None
        try:
            if catch_up.total == 0:
                await ensure_default_experiment(writer, settings)
                if settings.auth:
                    await ensure_first_admin(app.state.auth, settings)
            else:
                # A long log to fold first: serve at once (liveness, readiness with progress)
                # and create the default experiment once the read model has caught up.
                async def after_catch_up() -> None:
                    await ensure_default_experiment(writer, settings)
                    if settings.auth:
                        await ensure_first_admin(app.state.auth, settings)
                    readiness.started_work_done = True

                background = asyncio.create_task(catch_up.report(then=after_catch_up), name="catch-up")
            # Start-up's objects out of the collector's walks: shorter GC pauses (runledger.gc_pauses).
            gc_pauses.freeze_startup_objects()
            yield
        finally:
            if background is not None:
                background.cancel()
            releaser.cancel()
            if trace is not None:
                trace.set()
            await projector.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
            await projector.close()
            await audit.close()
            await event_log.stop()
            store.close()

    app = FastAPI(title="Runledger", version=VERSION, lifespan=lifespan, default_response_class=OrjsonResponse,
                  docs_url=None, redoc_url=None, description=API_DESCRIPTION,
                  openapi_tags=[{"name": "health", "description": "liveness and readiness probes"}])
    app.state.settings = settings
    for prefix in API_PREFIXES:
        for router in mlflow_dialect.routers(ajax=prefix.startswith("/ajax-api")):
            # Tagged per prefix: /docs groups MLflow's API apart from the UI's mirror of it.
            app.include_router(router, prefix=prefix, tags=["mlflow ajax (UI)" if prefix.startswith("/ajax-api")
                                                            else "mlflow"])
    app.include_router(mlflow_artifacts.build_proxy_router(), prefix=ARTIFACT_PREFIXES[0])
    app.include_router(mlflow_artifacts.build_info_router(), prefix=ARTIFACT_PREFIXES[1])
    # Runledger's own API, outside the MLflow prefixes: streaming ingest and operational reads.
    for router in native_dialect.routers():
        app.include_router(router, prefix=RUNLEDGER_PREFIX)

    ui.install(app)  # the web UI at / (runledger/ui)

    # Comet's REST v2 (at the host root: comet_ml keeps only scheme and host) and PAI's HPO view.
    for prefix, router in comet_dialect.routers():
        app.include_router(router, prefix=prefix)
    app.include_router(pai_dialect.build_router(), prefix=pai_dialect.PREFIX)
    # W&B's public API (wandb.Api) posts to {base_url}/graphql.
    for router in wandb_dialect.routers():
        app.include_router(router)

    @app.get("/health", response_class=PlainTextResponse, tags=["health"],
             summary="Liveness: the process answers (always 200 \"OK\" once started)")
    def health() -> str:
        return "OK"

    @app.get("/health/ready", tags=["health"], response_model=ReadinessBody,
             summary="Readiness: 200 when Kafka answers and the read model has caught up, else 503",
             responses={503: {"model": ReadinessBody, "description": "Kafka unreachable, or the read model is "
                                                                     "still catching up (how far behind)"}})
    async def ready(request: Request) -> Response:
        readiness: Readiness | None = getattr(request.app.state, "readiness", None)
        if readiness is None:
            return OrjsonResponse({"status": "starting", "message": "the server is starting",
                                   "events_behind": None}, status_code=503)
        ok, body = await readiness.check()
        return OrjsonResponse(body, status_code=200 if ok else 503)

    @app.get("/version", response_class=PlainTextResponse, tags=["health"], summary="The server's version")
    def version() -> str:
        return VERSION

    # MLflow 3.x's basic-auth management API (users, per-experiment grants), with its rules.
    for prefix in ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow"):
        app.include_router(mlflow_users.build_users_router(), prefix=prefix)
        auth_rules.register(prefix, mlflow_users.USERS_RULES)
        auth_rules.register(prefix, mlflow_rules.RULES)
    for prefix in ("/api/3.0/mlflow", "/ajax-api/3.0/mlflow"):
        app.include_router(mlflow_users.build_permissions_router(), prefix=prefix)
        auth_rules.register(prefix, mlflow_users.PERMISSIONS_RULES)
    auth_rules.register(RUNLEDGER_PREFIX, native_rules.RULES)
    auth_rules.register(comet_dialect.REST_PREFIX, comet_rules.REST_RULES)
    auth_rules.register(comet_dialect.CLIENTLIB_PREFIX, comet_rules.CLIENTLIB_RULES)
    auth_rules.register(pai_dialect.PREFIX, pai_rules.RULES)
    for prefix in comet_dialect.PREFIXES:   # comet_ml sends its key bare: it is an API token
        register_key_reader(prefix, comet_key.comet_credential)
    auth_rules.register("", wandb_rules.RULES)
    register_key_reader("/graphql", basic_api_key)   # W&B: Basic "api:<key>", the key a Runledger token
    for prefix, declared in mlflow_artifacts.access_rules().items():
        auth_rules.register(prefix, declared)
    auth_rules.register("", {f"GET {p}": auth_rules.PUBLIC_RULE for p in (
        "/health", "/health/ready", "/version", "/docs", "/docs/oauth2-redirect", "/openapi.json")})
    auth_rules.register("", {"* /docs/static": auth_rules.PUBLIC_RULE})   # Swagger UI's own files

    render_error = errors.install(app, {RUNLEDGER_PREFIX: native_errors.render,
                                    **{p: comet_errors.render for p in comet_dialect.PREFIXES},
                                    pai_dialect.PREFIX: pai_errors.render}, default=mlflow_errors.render)
    openapi.install(app)
    openapi.install_docs(app)
    shared_auth = SharedAuthState()
    # Innermost: a read's wait for a log position comes after the auth gate, so a caller
    # without valid credentials or permission is refused at once and cannot make it wait.
    app.add_middleware(LogPositionMiddleware, timeout=settings.sync_timeout, authorised_only=settings.auth)
    if settings.auth:
        # Inside the request id, Host check and body timeouts: they cover its refusals too.
        app.add_middleware(AuthGate, routes=lambda: app.routes, authenticator=lambda: app.state.auth.authenticator,
                           resolver=lambda scope: _resolver(app), default=Permission[settings.auth_default_permission],
                           render=render_error)
    # Outermost last: the request id is set before the host check, so refusals carry it too.
    app.add_middleware(http_guards.BodyTimeoutMiddleware, timeout=settings.body_timeout)
    app.add_middleware(http_guards.AllowedHostsMiddleware, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(http_guards.RequestContext, api_of=api_of)
    app.add_middleware(memory.ActivityMiddleware, activity=activity)   # outermost: sees every request
    # Outside even that: per-phase timestamps of recent requests (GET /api/runledger/v1/request-timings).
    app.add_middleware(request_timing.TimingMiddleware)
    request_timing.install_gc_callback()
    # Last, once every router is included: routers skip paths outside their prefix at once.
    skip_foreign_prefixes(app)

    return app


def _resolver(app: FastAPI):  # type: ignore[no-untyped-def]
    """How the auth gate finds the experiment a located value belongs to (None: no such thing,
    and the route answers its own 404)."""
    services: Services = app.state.services

    def resolve(kind: str, value: str) -> str | None:
        if kind == auth_rules.EXPERIMENT:
            return value if services.writer.catalog.experiment(value) is not None else None
        if kind == auth_rules.RUN:
            run = services.writer.catalog.run(value)
            return None if run is None else run.experiment_id
        if kind == auth_rules.MODEL:
            model = services.models.logged_model(value)
            return None if model is None else model.experiment_id
        if kind == auth_rules.EXPERIMENT_NAME:
            from runledger.query import reader
            with services.reader.cursor() as cur:
                exp = reader.get_experiment_by_name(cur, value)
            return None if exp is None else str(exp["experiment_id"])
        raise AssertionError(f"unknown kind {kind}")
    return resolve


async def ensure_first_admin(auth: AuthService, settings: Settings) -> None:
    """RUNLEDGER_ADMIN_USER / RUNLEDGER_ADMIN_PASSWORD: the first admin, created once (a fixed
    event id makes a second start's append a duplicate the fold ignores)."""
    if not settings.admin_user or settings.admin_user in auth.state.users:
        return
    if not settings.admin_password:
        log.error("RUNLEDGER_ADMIN_USER is set without RUNLEDGER_ADMIN_PASSWORD; no admin was created")
        return
    await auth.create_user(settings.admin_user, settings.admin_password, is_admin=True,
                           event_id=f"runledger-first-admin-{settings.admin_user}")


def _report_projector_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("projector stopped", exc_info=task.exception())


def _mib(size: str | None) -> int | None:
    """A size setting ('384MiB', '2GB') in MiB; None stays None."""
    from runledger.cli import size_bytes   # (the CLI's parser of the sizes settings.py accepts)
    return None if size is None else size_bytes(size) >> 20
