"""MLflow's error shape: `{"error_code": ..., "message": ...}` with the HTTP status MLflow gives
each ErrorCode (mlflow/exceptions.py); codes it does not list are 500."""

from __future__ import annotations

import orjson
from starlette.responses import Response

from runledger.dialects.errors import MethodNotAllowed
from runledger.ingest.errors import RunledgerError

HTTP_STATUS = {
    "INVALID_PARAMETER_VALUE": 400, "BAD_REQUEST": 400, "RESOURCE_ALREADY_EXISTS": 400,
    "RESOURCE_DOES_NOT_EXIST": 404, "ENDPOINT_NOT_FOUND": 404, "NOT_FOUND": 404,
    "PERMISSION_DENIED": 403, "UNAUTHENTICATED": 401, "RESOURCE_CONFLICT": 409, "ABORTED": 409,
    "REQUEST_LIMIT_EXCEEDED": 429, "RESOURCE_EXHAUSTED": 429, "INTERNAL_ERROR": 500,
    "INVALID_STATE": 500, "NOT_IMPLEMENTED": 501, "TEMPORARILY_UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504, "METHOD_NOT_ALLOWED": 405,
    # Runledger's SQL endpoint: the caller's query was too big for its limits.
    "QUERY_TIMEOUT": 400, "QUERY_OUT_OF_MEMORY": 400, "CANCELLED": 499,
}


def status_of(error: RunledgerError) -> int:
    if isinstance(error, MethodNotAllowed):
        return 405
    return HTTP_STATUS.get(error.error_code, 500)


def render(error: RunledgerError, request_id: str) -> Response:
    body = orjson.dumps({"error_code": error.error_code, "message": error.message})
    return Response(body, status_code=status_of(error), media_type="application/json")
