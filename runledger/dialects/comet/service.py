"""The backend version comet_ml asks for first, and a clear 501 for every Comet route Runledger
does not serve (assets, code, HTML, system details, the streaming logger of `comet_ml.start()`...):
the client then raises an error naming the route, rather than reading an empty answer as data."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from runledger.dialects.comet.errors import NotServed
from runledger.dialects.comet.shapes import BACKEND_VERSION

_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]


def backend_version() -> Response:
    return Response(b'{"version":"' + BACKEND_VERSION.encode() + b'"}', media_type="application/json")


def not_served(request: Request) -> Response:
    raise NotServed(f"{request.method} {request.url.path} is not served by Runledger's Comet API "
                    "(see docs/comet.md for the routes it serves).")


def build_clientlib_router() -> APIRouter:
    router = APIRouter()
    router.add_api_route("/isAlive/ver", backend_version, methods=["GET"], include_in_schema=False)
    router.add_api_route("/{rest:path}", not_served, methods=_METHODS, include_in_schema=False)
    return router


def build_rest_fallback() -> APIRouter:
    router = APIRouter()
    router.add_api_route("/{rest:path}", not_served, methods=_METHODS, include_in_schema=False)
    return router
