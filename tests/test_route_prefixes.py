"""Routers included under a prefix skip requests outside it (runledger.dialects.route_prefixes):
every route of the real app is still found where it was, and a path outside a router's prefix
never runs that router's route patterns."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from starlette.routing import Match

from runledger.app import create_app
from runledger.dialects.route_prefixes import skip_foreign_prefixes
from runledger.settings import Settings


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(Settings())


def _scope(app: FastAPI, method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": [],
            "query_string": b"", "app": app}


def _first_matches(app: FastAPI, scope: dict[str, Any], guarded: bool) -> tuple[int | None, int | None]:
    """Indexes of the first FULL and the first PARTIAL match among the app's routes."""
    full = partial = None
    for i, route in enumerate(app.router.routes):
        match, _ = route.matches(dict(scope)) if guarded else type(route).matches(route, dict(scope))
        if match == Match.FULL and full is None:
            full = i
        if match == Match.PARTIAL and partial is None:
            partial = i
    return full, partial


def _concrete(path_format: str) -> str:
    return re.sub(r"\{[^}:]+:path\}", "a/b", re.sub(r"\{[^}:]+\}", "x1", path_format))


def test_every_route_of_the_app_resolves_to_the_same_router_as_without_the_skip(app: FastAPI) -> None:
    checked = 0
    for route in app.router.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        for ctx in contexts() if contexts else [route]:
            path = getattr(ctx, "path_format", None)
            if not isinstance(path, str):
                continue
            for method in sorted(getattr(ctx, "methods", None) or {"GET"}):
                scope = _scope(app, method, _concrete(path))
                assert _first_matches(app, scope, guarded=True) == _first_matches(app, scope, guarded=False), \
                    f"{method} {path}"
                checked += 1
    assert checked > 150   # every route of every dialect, each method


def test_unknown_paths_and_wrong_methods_match_as_without_the_skip(app: FastAPI) -> None:
    for method, path in [("GET", "/nope"), ("PUT", "/api/runledger/v1/sql"), ("DELETE", "/api/2.0/mlflow/runs/get"),
                         ("GET", "/api/2.0/mlflow/no-such-thing"), ("GET", "/api/runledger/v1")]:
        scope = _scope(app, method, path)
        assert _first_matches(app, scope, guarded=True) == _first_matches(app, scope, guarded=False), f"{method} {path}"


def test_a_path_outside_a_routers_prefix_is_refused_without_trying_its_routes() -> None:
    tried: list[str] = []
    inner = APIRouter()

    @inner.get("/thing")
    def thing() -> str:
        return "ok"

    demo = FastAPI()
    demo.include_router(inner, prefix="/one")
    demo.include_router(inner, prefix="/two")
    assert skip_foreign_prefixes(demo) == 2
    for route in inner.routes:
        original = route.matches

        def counting(scope: Any, _original: Any = original) -> Any:
            tried.append(scope["path"])
            return _original(scope)
        route.matches = counting  # type: ignore[method-assign]
    first, second = demo.router.routes[-2:]
    assert first.matches(_scope(demo, "GET", "/two/thing"))[0] == Match.NONE
    assert tried == []
    assert second.matches(_scope(demo, "GET", "/two/thing"))[0] == Match.FULL


def test_a_router_with_a_route_outside_its_prefix_is_left_alone() -> None:
    demo = FastAPI()
    demo.include_router(APIRouter(), prefix="")   # no prefix: nothing to compare with
    assert skip_foreign_prefixes(demo) == 0
