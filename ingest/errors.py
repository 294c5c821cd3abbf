"""Errors a caller can see, each carrying MLflow's error_code and HTTP status.

The FastAPI app maps the whole family once (runledger.app) to
`{"error_code": ..., "message": ...}` with the status below.
"""

from __future__ import annotations

# MLflow's ErrorCode -> HTTP status (mlflow/exceptions.py); unknown codes are 500.
HTTP_STATUS = {
    "INVALID_PARAMETER_VALUE": 400, "BAD_REQUEST": 400, "RESOURCE_ALREADY_EXISTS": 400,
    "RESOURCE_DOES_NOT_EXIST": 404, "ENDPOINT_NOT_FOUND": 404, "NOT_FOUND": 404,
    "PERMISSION_DENIED": 403, "UNAUTHENTICATED": 401, "RESOURCE_CONFLICT": 409, "ABORTED": 409,
    "REQUEST_LIMIT_EXCEEDED": 429, "RESOURCE_EXHAUSTED": 429, "INTERNAL_ERROR": 500,
    "INVALID_STATE": 500, "NOT_IMPLEMENTED": 501, "TEMPORARILY_UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504, "METHOD_NOT_ALLOWED": 405,
}


class MlflowError(Exception):
    """Base of every user-visible failure; `error_code` picks the HTTP status."""

    error_code = "INTERNAL_ERROR"

    def __init__(self, message: str, error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if error_code is not None:
            self.error_code = error_code

    @property
    def status_code(self) -> int:
        return HTTP_STATUS.get(self.error_code, 500)

    def body(self) -> dict[str, str]:
        return {"error_code": self.error_code, "message": self.message}


class InvalidParameterValue(MlflowError):
    error_code = "INVALID_PARAMETER_VALUE"


class ResourceDoesNotExist(MlflowError):
    error_code = "RESOURCE_DOES_NOT_EXIST"


class ResourceAlreadyExists(MlflowError):
    error_code = "RESOURCE_ALREADY_EXISTS"


class EndpointNotFound(MlflowError):
    error_code = "ENDPOINT_NOT_FOUND"


class LogUnavailable(MlflowError):
    """The write is not in the log and never will take effect (DESIGN.md invariant 14), so
    retrying is safe."""

    error_code = "TEMPORARILY_UNAVAILABLE"


class LogUnreachable(LogUnavailable):
    """No broker could be reached, so the write was never handed to a producer: certainly not
    in the log."""


class ProjectionTimeout(MlflowError):
    """The write is in the log but the projector had not ruled on it within the wait limit:
    not a failure, its outcome is pending."""

    error_code = "DEADLINE_EXCEEDED"


class OutcomeUnknown(MlflowError):
    """Kafka did not acknowledge the write and the log cannot be read to tell whether it got
    there in time: the write may or may not take effect."""

    error_code = "DEADLINE_EXCEEDED"
