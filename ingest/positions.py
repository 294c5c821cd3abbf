"""How the APIs and the CLI name a place in the log and a moment.

A log position is a Kafka (partition, offset), written "<partition>:<offset>"; a moment is
Unix milliseconds or an ISO 8601 date-time (UTC unless it names an offset), compared with
events' ingest time.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from contextvars import ContextVar
from typing import Iterable

from runledger.ingest.errors import InvalidParameterValue

_POSITION = re.compile(r"(\d{1,6}):(\d{1,19})")


def format_position(partition: int, offset: int) -> str:
    return f"{partition}:{offset}"


def parse_position(value: str, name: str) -> tuple[int, int]:
    match = _POSITION.fullmatch(value.strip())
    if not match:
        raise InvalidParameterValue(f"Invalid {name} {value!r}: expected a log position '<partition>:<offset>', "
                                    "as the trail shows it.")
    return int(match.group(1)), int(match.group(2))


def parse_time(value: str, name: str) -> int:
    """Unix milliseconds, or an ISO 8601 date-time (UTC unless it names an offset)."""
    text = value.strip()
    if re.fullmatch(r"-?\d{1,16}", text):
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise InvalidParameterValue(f"Invalid {name} {value!r}: expected Unix milliseconds or an ISO 8601 "
                                    "date-time such as 2026-12-07T05:30:00Z.") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1000)


# ----- read-your-writes across replicas (docs/replicas.md)

# The header a write answer carries (what it appended) and a read may send back (wait for it),
# in the form the SQL endpoint's `log_position` has: {"<partition>": <next offset>, ...}.
LOG_POSITION_HEADER = "X-Runledger-Log-Position"

# Per request: partition -> the offset after the last record this request appended. Set to a
# fresh dict by the HTTP layer for each request; the writer fills it (a shared dict, so sync
# routes running in a worker thread's copied context fill the same one).
_written: ContextVar[dict[int, int] | None] = ContextVar("runledger_written", default=None)


def begin_request() -> dict[int, int]:
    written: dict[int, int] = {}
    _written.set(written)
    return written


def note_written(positions: Iterable[tuple[int, int]]) -> None:
    """Record (partition, offset) pairs the current request appended."""
    written = _written.get()
    if written is None:
        return
    for partition, offset in positions:
        if offset + 1 > written.get(partition, -1):
            written[partition] = offset + 1


def format_log_position(position: dict[int, int]) -> str:
    return "{" + ",".join(f'"{p}":{o}' for p, o in sorted(position.items())) + "}"


def parse_log_position(value: str) -> dict[int, int]:
    """The header's value; InvalidParameterValue if it is not {"<partition>": <offset>, ...}."""
    try:
        doc = json.loads(value)
        if not isinstance(doc, dict) or len(doc) > 10_000:
            raise ValueError
        out = {}
        for key, offset in doc.items():
            if type(offset) is not int or not 0 <= offset < 2 ** 63 or not _PARTITION.fullmatch(key):
                raise ValueError
            out[int(key)] = offset
        return out
    except ValueError:
        raise InvalidParameterValue(
            f"Invalid {LOG_POSITION_HEADER} header {value[:200]!r}: expected what a write answer's header held, "
            'a JSON object such as {"0": 120, "3": 7} (partition: next offset).') from None


_PARTITION = re.compile(r"\d{1,6}")
