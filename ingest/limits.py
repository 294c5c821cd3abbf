"""MLflow's size, count and naming limits (mlflow/utils/validation.py, 3.x), in one place.

What a client must respect is published in runledger.client.limits (the client distribution);
the numbers and the key rule are read from there, and every request is still checked here."""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

import orjson

from runledger.client import limits as published
from runledger.ingest.errors import InvalidParameterValue

MAX_KEY_LENGTH = published.MAX_KEY_LENGTH
MAX_PARAM_VALUE_LENGTH = 6000        # longer values are truncated, as MLflow does by default
MAX_RUN_TAG_VALUE_LENGTH = 8000      # likewise truncated
MAX_EXPERIMENT_NAME_LENGTH = 500
MAX_EXPERIMENT_TAG_VALUE_LENGTH = 20000  # an error, not truncated
MAX_BATCH_METRICS = 1000
MAX_BATCH_PARAMS = 100
MAX_BATCH_TAGS = 100
MAX_BATCH_ENTITIES = 1000
MAX_DOUBLE = published.MAX_DOUBLE
clamp_metric_value = published.clamp_metric_value
MAX_ARTIFACT_LOCATION_LENGTH = 2048  # MLFLOW_ARTIFACT_LOCATION_MAX_LENGTH's default
# A request body above this is refused with 400 before it is parsed. One request becomes one
# event, and an event never outgrows its request by more than a few KB, so this keeps every
# event well under the topic's max.message.bytes (ingest.producer.MAX_EVENT_BYTES, 16 MiB):
# an oversized write is the caller's error, never a retryable 5xx from Kafka. The biggest
# request the MLflow client sends (a full log-batch) is about 1.5 MB.
MAX_REQUEST_BYTES = 8 * 1024 * 1024

_RUN_ID = re.compile(r"^[a-zA-Z0-9][\w\-]{0,255}$")
_EXPERIMENT_ID = re.compile(r"^[a-zA-Z0-9][\w\-]{0,63}$")


MAX_RUN_NAME_LENGTH = 250           # MLflow's runs.name column is String(250)
MAX_USER_ID_LENGTH = 256            # and runs.user_id String(256); longer values fail on MySQL/Postgres
# An error message shows at most this much of the offending value: enough to recognise it,
# never a megabyte copied back into the answer (and the logs).
SHOWN_VALUE_CHARS = 200


def shown_value(value: Any) -> str:
    """`value` as an error message shows it: JSON (else repr), cut to SHOWN_VALUE_CHARS + '...'."""
    if isinstance(value, str) and len(value) > 4 * SHOWN_VALUE_CHARS:
        value = value[:SHOWN_VALUE_CHARS + 1]  # don't serialise a megabyte only to cut it
    text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode() if _jsonable(value) else repr(value)
    return text if len(text) <= SHOWN_VALUE_CHARS else text[:SHOWN_VALUE_CHARS] + "..."


def invalid_value(path: str, value: Any, why: str | None = None) -> InvalidParameterValue:
    suffix = f": {why}" if why else "."
    return InvalidParameterValue(f"Invalid value {shown_value(value)} for parameter '{path}' supplied{suffix}")


def check_length(value: str, limit: int, path: str) -> str:
    """A string field MLflow stores in a bounded column: over `limit` characters is a 400."""
    if len(value) > limit:
        raise InvalidParameterValue(f"'{path}' exceeds the maximum length of {limit} characters "
                                    f"(got {len(value)})")
    return value


def _jsonable(value: Any) -> bool:
    try:
        orjson.dumps(value)
        return True
    except TypeError:
        return False


def check_key(key: str, path: str = "key") -> str:
    """A metric, param or tag key: MLflow's characters, length, and no path tricks (the rule is
    the published one, runledger.client.limits.key_problem)."""
    problem = published.key_problem(key)
    if problem is None:
        return key
    if problem == published.KEY_TOO_LONG:  # MLflow words this one without echoing the value
        raise InvalidParameterValue(f"'{path}' {problem}")
    raise invalid_value(path, key, problem)


def key_ok(key: str) -> bool:
    """Whether `check_key` would accept `key`."""
    try:
        check_key(key)
        return True
    except InvalidParameterValue:
        return False


def check_run_id(run_id: str, path: str = "run_id") -> str:
    if not _RUN_ID.match(run_id):
        raise invalid_value(path, run_id)
    return run_id


def check_experiment_id(exp_id: str) -> str:
    if not _EXPERIMENT_ID.match(exp_id):
        raise InvalidParameterValue(f"Invalid experiment ID: {shown_value(exp_id)}")
    return exp_id


def check_experiment_name(name: str) -> str:
    if name == "":
        raise InvalidParameterValue("Invalid experiment name: ''")
    if len(name) > MAX_EXPERIMENT_NAME_LENGTH:
        raise InvalidParameterValue(
            f"'name' exceeds the maximum length of {MAX_EXPERIMENT_NAME_LENGTH} characters")
    return name


def check_artifact_location(location: str) -> str:
    """MLflow's checks on a caller-chosen experiment artifact location (the scheme allow-list aside)."""
    if location.startswith("runs:"):
        raise invalid_value("artifact_location", location, "Artifact location cannot be a runs:/ URI.")
    if len(location) > MAX_ARTIFACT_LOCATION_LENGTH:
        raise InvalidParameterValue(
            f"'artifact_location' exceeds the maximum length of {MAX_ARTIFACT_LOCATION_LENGTH} characters")
    parsed = urllib.parse.urlparse(location)
    if parsed.fragment or parsed.params:
        raise invalid_value("artifact_location", location, "The URL can't include fragments or params.")
    return location


def request_too_large(size: int, limit: int = MAX_REQUEST_BYTES, *, at_least: bool = False) -> InvalidParameterValue:
    got = f"more than {size}" if at_least else str(size)
    return InvalidParameterValue(
        f"The request body must be at most {limit} bytes, got {got} bytes. "
        "Please split up your request into multiple requests.")


def truncate(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[:limit]


def check_batch_sizes(n_metrics: int, n_params: int, n_tags: int) -> None:
    for n, limit, what in ((n_metrics, MAX_BATCH_METRICS, "metrics"), (n_params, MAX_BATCH_PARAMS, "params"),
                           (n_tags, MAX_BATCH_TAGS, "tags")):
        if n > limit:
            raise InvalidParameterValue(
                f"A batch logging request can contain at most {limit} {what}. Got {n} {what}. "
                "Please split up your request into multiple requests.")
    total = n_metrics + n_params + n_tags
    if total > MAX_BATCH_ENTITIES:
        raise InvalidParameterValue(
            f"A batch logging request can contain at most {MAX_BATCH_ENTITIES} metrics, params and tags "
            f"in total. Got {total}. Please split up your request into multiple requests.")
