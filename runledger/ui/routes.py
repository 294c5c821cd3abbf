"""The UI's pages and the list reads they need (experiments with run counts, an experiment's
column keys, a sorted, filtered page of its run table). Everything else the pages show comes
from the public APIs, so the UI shows exactly what a script would get, errors included."""

from __future__ import annotations

import html
from pathlib import Path
from string import Template
from typing import Any

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse

from runledger.auth.access import access
from runledger.dialects import services
from runledger.dialects.openapi import documented
from runledger.dialects.request import query_fields
from runledger.query import run_table

TEMPLATES = Path(__file__).parent / "templates"
_PAGE = Template((TEMPLATES / "page.html").read_text(encoding="utf-8"))
DEFAULT_PAGE_SIZE = 100


class ExperimentRow(BaseModel):
    experiment_id: str
    name: str
    creation_time: int | None
    last_update_time: int | None
    runs: int
    running: int


class ExperimentList(BaseModel):
    experiments: list[ExperimentRow]


class ColumnKeys(BaseModel):
    experiment_id: str
    name: str
    params: list[str]
    metrics: list[str]


class RunRow(BaseModel):
    run_id: str
    run_name: str | None
    status: str
    user_id: str | None
    start_time: int | None
    end_time: int | None
    duration_ms: int | None
    params: dict[str, str]
    metrics: dict[str, float | str]


class ExperimentsQuery(BaseModel):
    q: str | None = Field(None, description="Part of the name, any case.")


class RunTableQuery(BaseModel):
    filter: str | None = Field(None, description="A runs/search filter (MLflow's grammar).")
    sort: str = Field("start", description="name, status, user, start, end, duration, run_id, param:<key> or "
                      "metric:<key>.")
    order: str = Field("desc", description="asc or desc; missing values sort last either way.")
    offset: int = Field(0, ge=0)
    limit: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=run_table.MAX_PAGE)
    param: list[str] = Field(default_factory=list, description="Param columns to return (repeated).")
    metric: list[str] = Field(default_factory=list, description="Latest-metric columns to return (repeated).")


class RunTablePage(BaseModel):
    total: int
    offset: int
    runs: list[RunRow]


def _page(title: str, script: str, boot: dict[str, Any]) -> HTMLResponse:
    """A page shell: the header, an empty main filled by `script`, and its start-up data as JSON
    (escaped for a <script> element: `<` never appears raw, so no `</script>` can end it early)."""
    data = orjson.dumps(boot).decode().replace("<", "\\u003c")
    body = _PAGE.substitute(title=html.escape(title), script=script, boot=data)
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})


def experiments_page() -> HTMLResponse:
    return _page("Experiments", "experiments.js", {})


def experiment_page(experiment_id: str) -> HTMLResponse:
    return _page("Runs", "runs.js", {"experiment_id": experiment_id})


def run_page(run_id: str) -> HTMLResponse:
    return _page("Run", "run.js", {"run_id": run_id})


def compare_page() -> HTMLResponse:
    return _page("Compare runs", "compare.js", {})


def sql_page() -> HTMLResponse:
    return _page("SQL", "sql.js", {})


def _experiments(request: Request) -> dict[str, Any]:
    f = query_fields(request)
    readable = access(request).read_scope()   # only what the caller may read (docs/auth.md)
    with services.reader(request).cursor() as cur:
        return {"experiments": [e for e in run_table.experiments(cur, f.str("q")) if readable.allows(e["experiment_id"])]}


async def list_experiments(request: Request) -> Any:
    """?q= : active experiments whose name contains q, with run counts."""
    return await run_in_threadpool(_experiments, request)


def _columns(request: Request, experiment_id: str) -> dict[str, Any]:
    reader = services.reader(request)
    with reader.cursor() as cur:
        name = run_table.experiment_name(cur, experiment_id)
        return {"experiment_id": experiment_id, "name": name,
                **run_table.column_keys(cur, experiment_id, reader.latest_table)}


async def experiment_columns(request: Request, experiment_id: str) -> Any:
    return await run_in_threadpool(_columns, request, experiment_id)


def _runs(request: Request, experiment_id: str) -> dict[str, Any]:
    f = query_fields(request, repeated=("param", "metric"))
    page = run_table.TablePage(
        experiment_id=experiment_id, filter=f.str("filter") or "", sort=f.str("sort") or "start",
        ascending=(f.str("order") or "desc").lower() == "asc",
        offset=f.int64("offset", default=0) or 0, limit=f.int64("limit", default=DEFAULT_PAGE_SIZE) or 0,
        params=tuple(f.strings("param")), metrics=tuple(f.strings("metric")))
    reader = services.reader(request)
    with reader.cursor() as cur:
        run_table.experiment_name(cur, experiment_id)  # an unknown experiment is a 404, not an empty table
        return run_table.run_page(cur, page, reader.latest_table)


async def experiment_runs(request: Request, experiment_id: str) -> Any:
    """?filter=<runs/search filter>&sort=<column>&order=asc|desc&offset=&limit=&param=k&metric=k"""
    return await run_in_threadpool(_runs, request, experiment_id)


PAGES = {"/": experiments_page, "/experiments/{experiment_id}": experiment_page, "/runs/{run_id}": run_page,
         "/compare": compare_page, "/sql": sql_page}


def build_router() -> APIRouter:
    router = APIRouter()
    for path, page in PAGES.items():
        router.add_api_route(path, page, methods=["GET"], response_class=HTMLResponse, include_in_schema=False)
    router.add_api_route("/ui/api/experiments", list_experiments, methods=["GET"], **documented(
        summary="Web UI: active experiments whose name contains q, with run counts", query=ExperimentsQuery,
        response=ExperimentList, validate_response=True, tags=["ui"]))
    router.add_api_route("/ui/api/experiments/{experiment_id}/columns", experiment_columns, methods=["GET"],
                         **documented(summary="Web UI: an experiment's param and metric keys, most common first",
                                      response=ColumnKeys, validate_response=True, errors=(403, 404), tags=["ui"]))
    router.add_api_route("/ui/api/experiments/{experiment_id}/runs", experiment_runs, methods=["GET"], **documented(
        summary="Web UI: one sorted, filtered page of an experiment's run table", query=RunTableQuery,
        response=RunTablePage, validate_response=True, errors=(403, 404), tags=["ui"]))
    return router
