"""The one error hierarchy: every failure a caller can see, whatever API it came through.

An error carries a code (MLflow's ErrorCode names, the most widely scripted against) and a
message. It knows nothing of HTTP: each dialect room maps the family once to its wire shape
and status (runledger.dialects.errors; MLflow's `{"error_code", "message"}` and its statuses).
"""

from __future__ import annotations


class RunledgerError(Exception):
    """Base of every user-visible failure."""

    error_code = "INTERNAL_ERROR"

    def __init__(self, message: str, error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if error_code is not None:
            self.error_code = error_code


# Transitional name, kept while older branches merge in; new code raises RunledgerError.
MlflowError = RunledgerError


class InvalidParameterValue(RunledgerError):
    error_code = "INVALID_PARAMETER_VALUE"


class BadRequest(RunledgerError):
    error_code = "BAD_REQUEST"


class ResourceDoesNotExist(RunledgerError):
    error_code = "RESOURCE_DOES_NOT_EXIST"


class ResourceAlreadyExists(RunledgerError):
    error_code = "RESOURCE_ALREADY_EXISTS"


class EndpointNotFound(RunledgerError):
    error_code = "ENDPOINT_NOT_FOUND"


class TemporarilyUnavailable(RunledgerError):
    error_code = "TEMPORARILY_UNAVAILABLE"


class LogUnavailable(TemporarilyUnavailable):
    """Kafka did not acknowledge the write; nothing was acknowledged, so retrying is safe."""


class ProjectionTimeout(RunledgerError):
    """The write is in the log but the projector did not apply it within the wait limit."""

    error_code = "DEADLINE_EXCEEDED"


class InternalError(RunledgerError):
    """A fault of ours (a bug, a damaged read model). Its message is logged, never sent: the
    caller gets a request id to quote."""

    error_code = "INTERNAL_ERROR"
