"""A fast "no" for routers included under a path prefix the request does not start with.

FastAPI tries the routers an app includes one after another, and an included router answers
whether it matches by running every one of its routes' patterns, whatever its prefix. The app
includes the MLflow dialect four times (two API versions, each also under /ajax-api) before
Runledger's own API, so a request to /api/runledger/v1/... was tested against every MLflow route
first: ~0.35 ms of CPU per request, a quarter of a trivial SQL query's server time. A router
whose routes all start with its prefix cannot match a path that does not, so it is skipped
after one string comparison; a path that does start with it is matched exactly as before.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette._utils import get_route_path
from starlette.routing import Match


def _route_paths(route: Any) -> list[Any] | None:
    contexts = getattr(route, "effective_route_contexts", None)
    if contexts is None:
        return None
    return [getattr(c, "path_format", None) for c in contexts()]


def skip_foreign_prefixes(app: FastAPI) -> int:
    """Give every included router whose routes all sit under its prefix a quick reject for
    other paths; returns how many were given one. Call once, after the last include_router."""
    guarded = 0
    for route in app.router.routes:
        prefix = getattr(getattr(route, "include_context", None), "prefix", "") or ""
        paths = _route_paths(route) if prefix else None
        if not paths or not all(isinstance(p, str) and p.startswith(prefix) for p in paths):
            continue    # no prefix, or a route outside it: leave the router as FastAPI made it
        matches = route.matches

        def prefixed_matches(scope: Any, _matches: Any = matches, _prefix: str = prefix) -> tuple[Match, Any]:
            if scope.get("type") in ("http", "websocket") and not get_route_path(scope).startswith(_prefix):
                return Match.NONE, {}
            return _matches(scope)

        route.matches = prefixed_matches
        guarded += 1
    return guarded
