"""The moment an as-of read asks about, from request fields: a time (`as_of`, Unix ms or ISO
8601) or a log position (`as_of_position`), never both. Shared by every room that offers as-of
reads (docs/audit.md)."""

from __future__ import annotations

from runledger.dialects.request import Fields, missing
from runledger.ingest.errors import InvalidParameterValue
from runledger.ingest.positions import parse_position, parse_time
from runledger.query import as_of


def moment(f: Fields, time_name: str = "as_of", position_name: str = "as_of_position", *,
           required: bool = True) -> as_of.Moment | None:
    time, position = f.str(time_name), f.str(position_name)
    if time is not None and position is not None:
        raise InvalidParameterValue(f"Pass '{time_name}' or '{position_name}', not both.")
    if position is not None:
        return as_of.Moment(position=parse_position(position, position_name))
    if time is not None:
        return as_of.Moment(time=parse_time(time, time_name))
    if required:
        raise missing(f"{time_name}' or '{position_name}")
    return None
