"""The web UI, served by the API server itself at `/` (issue 15): server-rendered page shells
(templates/) and small scripts (static/), no JavaScript toolchain and nothing fetched from the
network. The pages read the public APIs (runs/get, the bucketed history, the audit trail and
tail, SQL) plus a few list reads of their own under `/ui/api` (runledger.ui.routes)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from runledger.auth import rules
from runledger.auth.rules import AUTHENTICATED, EXPERIMENT, READ, Rule
from runledger.ui import routes

STATIC = Path(__file__).parent / "static"

# Access rules (docs/auth.md). The page shells hold no data: signing in is enough, and the
# browser then sends the same credentials with the pages' API calls, which the API's own rules
# check. The lists are read-checked per experiment; the experiments list leaves out what the
# caller may not read (routes.list_experiments). The scripts and the stylesheet are public.
RULES = {
    **{f"GET {page}": Rule(AUTHENTICATED) for page in routes.PAGES},
    "* /ui/static": rules.PUBLIC_RULE,
    "GET /ui/api/experiments": Rule(AUTHENTICATED),
    "GET /ui/api/experiments/{experiment_id}/columns": Rule(READ, rules.path("experiment_id", EXPERIMENT)),
    "GET /ui/api/experiments/{experiment_id}/runs": Rule(READ, rules.path("experiment_id", EXPERIMENT)),
}


def install(app: FastAPI) -> None:
    """Mount the pages, their data routes and the static files on the app, with their rules."""
    app.include_router(routes.build_router())
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    rules.register("", RULES)
