"""Errors mapped once per dialect: the one hierarchy (runledger.ingest.errors) becomes each API's
wire shape here, chosen by the path's prefix. Framework errors (404, 405, malformed requests)
and unexpected exceptions are turned into the hierarchy first, so every answer has one shape.

A fault of ours (InternalError, or any exception nobody expected) is logged with its traceback
and a request id; the caller gets the id, never the exception's text.
"""

from __future__ import annotations

import logging
import uuid
from typing import Callable

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from runledger.ingest.errors import BadRequest, EndpointNotFound, InternalError, RunledgerError

log = logging.getLogger("runledger.errors")
MAX_MESSAGE_CHARS = 2000

# Renders one error for one dialect: (error, request id) -> the response.
ErrorShape = Callable[[RunledgerError, str], Response]


class MethodNotAllowed(BadRequest):
    """A known path with another method (MLflow answers these with its BAD_REQUEST code)."""


def request_id(request: Request) -> str:
    """The id of this request: the one a middleware assigned, else a new one."""
    rid = getattr(request.state, "request_id", None)
    if not rid:
        rid = request.state.request_id = uuid.uuid4().hex
    return str(rid)


def install(app: FastAPI, shapes: dict[str, ErrorShape], default: ErrorShape) -> Callable[[Request, RunledgerError], Response]:
    """Map the hierarchy to each dialect's shape; `shapes` is keyed by path prefix. Returns the
    renderer, for middleware that answers before the routes (runledger.auth.gate)."""

    def shape_for(path: str) -> ErrorShape:
        for prefix, shape in shapes.items():
            if path.startswith(prefix):
                return shape
        return default

    def answer(request: Request, error: RunledgerError) -> Response:
        rid = request_id(request)
        if isinstance(error, InternalError):
            log.error("internal error on %s %s (request id %s)", request.method, request.url.path, rid,
                      exc_info=error.__cause__ or error)
            error = InternalError(f"Internal error; request id {rid}.")
        if len(error.message) > MAX_MESSAGE_CHARS:  # a value echoed whole somewhere: never a megabyte back
            error = type(error)(error.message[:MAX_MESSAGE_CHARS] + "...", error.error_code)
        response = shape_for(request.url.path)(error, rid)
        response.headers.setdefault("x-request-id", rid)
        return response

    @app.exception_handler(RunledgerError)
    async def known(request: Request, exc: RunledgerError) -> Response:
        return answer(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def framework(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            error: RunledgerError = MethodNotAllowed(f"Method {request.method} is not allowed for {request.url.path}")
        elif exc.status_code == 404:
            error = EndpointNotFound(f"No API endpoint at {request.url.path}")
        else:
            error = BadRequest(str(exc.detail))
        return answer(request, error)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        internal = InternalError(type(exc).__name__)
        internal.__cause__ = exc
        return answer(request, internal)

    return answer
