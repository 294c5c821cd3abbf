"""The one page-token codec: a JSON object in base64. What a token holds (an offset, a search
snapshot's id, the query it belongs to) is each reader's business; this only makes and reads
the envelope, and refuses anything that is not one."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import orjson


class BadPageToken(ValueError):
    """The token is not base64 of a JSON object."""


def encode(doc: dict[str, Any], *, urlsafe: bool = True) -> str:
    """`urlsafe=False` gives MLflow's own layout for logged-model search tokens (standard
    base64 of `json.dumps`), which its clients may decode themselves."""
    if urlsafe:
        return base64.urlsafe_b64encode(orjson.dumps(doc)).decode()
    return base64.b64encode(json.dumps(doc).encode()).decode()


def decode(token: str, *, urlsafe: bool = True) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(token.encode()) if urlsafe else base64.b64decode(token.encode(), validate=True)
        doc = orjson.loads(raw)
    except (ValueError, binascii.Error, orjson.JSONDecodeError) as e:
        raise BadPageToken(str(e)) from None
    if not isinstance(doc, dict):
        raise BadPageToken("not an object")
    return doc


# Offsets go into SQL as BIGINT and get a page size added: bounded well below 2**63.
MAX_OFFSET = 2 ** 62


def non_negative_int(value: Any) -> bool:
    """An offset a token may carry: an int in [0, MAX_OFFSET]."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_OFFSET
