"""How the APIs and the CLI name a place in the log and a moment.

A log position is a Kafka (partition, offset), written "<partition>:<offset>"; a moment is
Unix milliseconds or an ISO 8601 date-time (UTC unless it names an offset), compared with
events' ingest time.
"""

from __future__ import annotations

import datetime as dt
import re

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
