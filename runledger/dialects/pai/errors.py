"""PAI's error shape: `{"RequestId", "Code", "Message"}` with the HTTP status MLflow gives the same
error code (404 for an unknown experiment or trial)."""

from __future__ import annotations

import orjson
from starlette.responses import Response

from runledger.dialects.mlflow.errors import status_of
from runledger.ingest.errors import RunledgerError


def render(error: RunledgerError, request_id: str) -> Response:
    body = orjson.dumps({"RequestId": request_id, "Code": error.error_code, "Message": error.message,
                         "error_code": error.error_code})   # Runledger's own name, as in every dialect
    return Response(body, status_code=status_of(error), media_type="application/json")
