"""The limits a Runledger client must respect: part of the public API contract.

This module is the published copy. The server reads the same numbers and rules from here and
still checks every request itself (it trusts no client), so a client that respects these is
never refused for them, and one that does not gets a 400 saying which limit it crossed.
"""

from __future__ import annotations

import math
import posixpath
import re

# The stream endpoint: POST /api/runledger/v1/metrics/stream.
STREAM_PATH = "/api/runledger/v1/metrics/stream"
# Points one stream request may carry; the server cuts a request into log events of at most
# MAX_EVENT_POINTS points (a client producing straight to Kafka sends events of that size).
MAX_STREAM_REQUEST_POINTS = 100_000
MAX_EVENT_POINTS = 50_000
# Bytes of one stream request's body.
MAX_STREAM_BODY_BYTES = 32 * 1024 * 1024
# Worst-case JSON size of one point besides its key: quotes and commas, a float such as
# -1.7976931348623157e+308, and two int64s. Sizes requests and events whatever the keys.
POINT_BYTES_BESIDES_KEY = 3 + 25 + 21 + 21

# Keys of metrics, params and tags (MLflow's rules, mlflow/utils/validation.py).
MAX_KEY_LENGTH = 250
KEY_TOO_LONG = f"exceeds the maximum length of {MAX_KEY_LENGTH} characters"
_KEY_CHARACTERS = re.compile(r"^[/\w.\- :]*$")

# +/-inf is stored as +/- the largest double, as MLflow's SQL store does; NaN is kept.
MAX_DOUBLE = 1.7976931348623157e308


def key_problem(key: str) -> str | None:
    """Why `key` is not a valid metric, param or tag key, or None when it is."""
    if not _KEY_CHARACTERS.match(key):
        return ("Names may only contain alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), "
                "colon(:) and slashes (/).")
    norm = posixpath.normpath(key)
    if norm != key or norm == "." or norm.startswith("..") or norm.startswith("/"):
        return ("Names may be treated as files in certain cases, and must not resolve to other names when "
                f"treated as such. This name would resolve to {norm!r}")
    if len(key) > MAX_KEY_LENGTH:
        return KEY_TOO_LONG
    return None


def clamp_metric_value(value: float) -> float:
    """+/-inf as +/- MAX_DOUBLE; every other value (NaN included) unchanged."""
    if value == math.inf:
        return MAX_DOUBLE
    if value == -math.inf:
        return -MAX_DOUBLE
    return value
