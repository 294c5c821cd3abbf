"""The backend version comet_ml asks for first, and a clear 501 for every Comet route Runledger
does not serve (assets, code, HTML, system details, the streaming logger of `comet_ml.start()`...):
the client then raises an error naming the route, rather than reading an empty answer as data."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from runledger.dialects.comet import schemas as S
from runledger.dialects.comet.errors import NotServed
from runledger.dialects.comet.shapes import BACKEND_VERSION
from runledger.dialects.errors import MethodNotAllowed
from runledger.dialects.openapi import documented

_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]


def backend_version() -> Response:
    return Response(b'{"version":"' + BACKEND_VERSION.encode() + b'"}', media_type="application/json")


def not_served(request: Request) -> Response:
    # A served path asked with another method is not "not implemented" but a 405, as on every
    # other prefix (a catch-all matches every method, so routing alone would answer 501). A
    # partial match is a route whose path matches and whose methods do not; catch-alls never are.
    if any(route.matches(request.scope)[0] == Match.PARTIAL for route in request.app.routes):
        raise MethodNotAllowed(f"Method {request.method} is not allowed for {request.url.path}")
    raise NotServed(f"{request.method} {request.url.path} is not served by Runledger's Comet API "
                    "(see docs/comet.md for the routes it serves).")


def build_clientlib_router() -> APIRouter:
    router = APIRouter()
    router.add_api_route("/isAlive/ver", backend_version, methods=["GET"], **documented(
        summary="The Comet backend version comet_ml switches its features by", response=S.CometVersion,
        tags=["comet"], error_model=S.CometErrorBody))
    return router


def build_clientlib_fallback() -> APIRouter:
    # A router of its own, mounted after the served one, so that a served path asked with another
    # method shows as a partial match to not_served (a 405, not a 501).
    router = APIRouter()
    # The catch-alls are not operations (every other path answers 501): not in /openapi.json.
    router.add_api_route("/{rest:path}", not_served, methods=_METHODS, include_in_schema=False)
    return router


def build_rest_fallback() -> APIRouter:
    router = APIRouter()
    router.add_api_route("/{rest:path}", not_served, methods=_METHODS, include_in_schema=False)
    return router
