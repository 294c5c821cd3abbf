"""The web UI, served by the API server itself at `/` (issue 15): server-rendered page shells
(templates/) and small scripts (static/), no JavaScript toolchain and nothing fetched from the
network. The pages read the public APIs (runs/get, the bucketed history, the audit trail and
tail, SQL) plus a few list reads of their own under `/ui/api` (runledger.ui.routes)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from runledger.ui import routes

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Mount the pages, their data routes and the static files on the app."""
    app.include_router(routes.build_router())
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
