"""Reading MLflow request bodies and query strings, with MLflow's error messages.

MLflow parses requests as protobuf JSON: int64 fields accept numbers or numeric strings,
doubles accept numbers or "NaN"/"Infinity"/"-Infinity", unknown fields are ignored and a
missing required field is INVALID_PARAMETER_VALUE "Missing value for required parameter".
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from starlette.requests import Request

from runledger.ingest.errors import InvalidParameterValue
from runledger.ingest.limits import MAX_REQUEST_BYTES, invalid_value, request_too_large

_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1
_MAX_DRAIN_BYTES = 256 * 1024 * 1024
_SPECIAL_DOUBLES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


# MLflow appends this to every message of its request-schema checks.
SEE_API_DOCS = "See the API docs for more information about request parameters."


def missing(path: str) -> InvalidParameterValue:
    return InvalidParameterValue(f"Missing value for required parameter '{path}'. {SEE_API_DOCS}")


async def json_body(request: Request, max_bytes: int = MAX_REQUEST_BYTES) -> dict[str, Any]:
    require_json(request)
    parsed = request.scope.get("state", {}).get("runledger.json")
    if parsed is not None:      # read and parsed once by the auth gate (runledger.auth.gate)
        return parsed  # type: ignore[no-any-return]
    return parse_json(await read_capped(request, max_bytes))


def require_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise InvalidParameterValue(
            f"Bad Request. Content-Type must be 'application/json', got {content_type or 'nothing'!r}.")


def parse_json(raw: bytes) -> dict[str, Any]:
    """A request body as MLflow reads it: empty is {}, a JSON string holding JSON is unwrapped."""
    if not raw.strip():
        return {}
    try:
        doc = orjson.loads(raw)
        if isinstance(doc, str):  # legacy clients send JSON inside a JSON string
            doc = orjson.loads(doc)
    except orjson.JSONDecodeError as e:
        raise InvalidParameterValue(f"Malformed JSON in request body: {e}") from e
    if not isinstance(doc, dict):
        raise InvalidParameterValue("Request body must be a JSON object.")
    return doc


async def read_capped(request: Request, max_bytes: int) -> bytes:
    """The body, or a 400 once it passes `max_bytes`. An oversized body is still read (and
    dropped, up to _MAX_DRAIN_BYTES) so that the client, still sending, gets the 400 rather
    than a reset connection, which MLflow's client would retry as a network error."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= max_bytes:
            chunks.append(chunk)
        elif size > _MAX_DRAIN_BYTES:
            raise request_too_large(size, max_bytes, at_least=True)
    if size > max_bytes:
        raise request_too_large(size, max_bytes)
    body = b"".join(chunks)
    request._body = body  # Starlette's cache: a second json_body()/body() on this request reuses it
    return body


class Fields:
    """Typed access to one request's fields; every accessor raises MLflow's 400 on bad input."""

    def __init__(self, data: dict[str, Any], path: str = "") -> None:
        self.data = data
        self.path = path

    def _p(self, name: str) -> str:
        return f"{self.path}{name}"

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def str(self, name: str, *, required: bool = False, default: str | None = None,
            allow_empty: bool = True) -> str | None:
        v = self.data.get(name)
        if v is None or (v == "" and not allow_empty):
            if required:
                raise missing(self._p(name))
            return default
        if not isinstance(v, str):
            raise invalid_value(self._p(name), v, f"Expected a string, got {type(v).__name__}.")
        return v

    def run_id(self) -> str:
        """The request's run: `run_id`, or MLflow's older name `run_uuid`; missing is MLflow's 400."""
        found = self.str("run_id") or self.str("run_uuid")
        if not found:
            raise missing("run_id")
        return found

    def req_str(self, name: str, allow_empty: bool = False) -> str:
        v = self.str(name, required=True, allow_empty=allow_empty)
        assert v is not None
        return v

    def int64(self, name: str, *, required: bool = False, default: int | None = None) -> int | None:
        v = self.data.get(name)
        if v is None:
            if required:
                raise missing(self._p(name))
            return default
        if isinstance(v, str):
            try:
                v = int(v.strip())
            except ValueError:
                raise invalid_value(self._p(name), v, "Expected an integer.") from None
        if isinstance(v, float) and v.is_integer():  # protobuf's JSON parser takes 1.7e12 for an int64
            # A JSON integer past int64 reaches here as a rounded float (-2**63 - 1 becomes
            # -2.0**63): refuse the bounds themselves rather than accept a different number.
            if not -(2.0 ** 63) < v < 2.0 ** 63:
                raise invalid_value(self._p(name), v, "Out of range for a 64-bit integer.")
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise invalid_value(self._p(name), v, "Expected an integer.")
        if not _INT64_MIN <= v <= _INT64_MAX:
            raise invalid_value(self._p(name), v, "Out of range for a 64-bit integer.")
        return v

    def double(self, name: str, *, required: bool = False) -> float | None:
        v = self.data.get(name)
        if v is None:
            if required:
                raise missing(self._p(name))
            return None
        if isinstance(v, str):
            if v in _SPECIAL_DOUBLES:
                return _SPECIAL_DOUBLES[v]
            try:
                return float(v)
            except ValueError:
                raise invalid_value(self._p(name), v, "Expected a number.") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise invalid_value(self._p(name), v, "Expected a number.")
        return float(v)

    def objects(self, name: str) -> list["Fields"]:
        v = self.data.get(name)
        if v is None:
            return []
        if not isinstance(v, list):
            raise invalid_value(self._p(name), v, "Expected a list.")
        out = []
        for i, item in enumerate(v):
            if not isinstance(item, dict):
                raise invalid_value(f"{self._p(name)}[{i}]", item, "Expected an object.")
            out.append(Fields(item, f"{self._p(name)}[{i}]."))
        return out

    def strings(self, name: str) -> list[str]:
        v = self.data.get(name)
        if v is None:
            return []
        if isinstance(v, str):
            return [v]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise invalid_value(self._p(name), v, "Expected a list of strings.")
        return v


def query_fields(request: Request, repeated: tuple[str, ...] = ()) -> Fields:
    """GET parameters as Fields; names in `repeated` keep every value (`?a=1&a=2`)."""
    q = request.query_params
    data: dict[str, Any] = {k: q.get(k) for k in q.keys()}
    for name in repeated:
        if name in q:
            data[name] = q.getlist(name)
    return Fields(data)
