"""Comet's error shape: `{"msg": ..., "code": <HTTP status>, "sdk_error_code": 0}`. The comet_ml
client shows `msg` in its exception text (CometRestApiException), and turns a 401 or 404 into its
own Unauthorized / NotFound; statuses are MLflow's for the same error code."""

from __future__ import annotations

import orjson
from starlette.responses import Response

from runledger.dialects.mlflow.errors import status_of
from runledger.ingest.errors import RunledgerError


class NotServed(RunledgerError):
    """A Comet REST route Runledger does not serve: a clear 501, never an empty or made-up answer."""

    error_code = "NOT_IMPLEMENTED"


def render(error: RunledgerError, request_id: str) -> Response:
    status = status_of(error)
    body = orjson.dumps({"msg": error.message, "code": status, "sdk_error_code": 0,
                         "error_code": error.error_code, "request_id": request_id})
    return Response(body, status_code=status, media_type="application/json")
