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
    """The write is not in the log and never will take effect (invariant 14), so retrying is
    safe."""


class LogUnreachable(LogUnavailable):
    """No broker could be reached, so the write was never handed to a producer: certainly not
    in the log."""


class StorageFull(TemporarilyUnavailable):
    """The server's data folder is full: the write was refused before it was sent, so
    retrying is safe once space is freed."""


class ProjectionTimeout(RunledgerError):
    """The write is in the log but the projector had not ruled on it within the wait limit:
    not a failure, its outcome is pending."""

    error_code = "DEADLINE_EXCEEDED"


class OutcomeUnknown(RunledgerError):
    """Kafka did not acknowledge the write and the log cannot be read to tell whether it got
    there in time: the write may or may not take effect."""

    error_code = "DEADLINE_EXCEEDED"


class InternalError(RunledgerError):
    """A fault of ours (a bug, a damaged read model). Its message is logged, never sent: the
    caller gets a request id to quote."""

    error_code = "INTERNAL_ERROR"


class Unauthenticated(RunledgerError):
    """No valid credentials (HTTP 401; runledger.auth)."""
    error_code = "UNAUTHENTICATED"


class PermissionDenied(RunledgerError):
    """Valid credentials without the permission the request needs (HTTP 403; runledger.auth)."""
    error_code = "PERMISSION_DENIED"
