"""The audit trail: the `event_log` table read back in log order, filtered and paged.

Each entry says what happened (type and a summary: a metric batch shows its point count, keys
and step range, not its points), who asked (the actor, and whether that identity was
verified), how (the API and the request id) and when (ingest time), and what the projector
decided (applied, or rejected with its error code and reason). Events written before schema
version 2 show None for what they did not record.

Positions: an event's place in the log is its Kafka (partition, offset), written "p:o". A
run's events share one partition, so its trail is in offset order; a trail across runs
(an experiment's, the global one) is ordered by ingest time, then position.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import duckdb
import orjson

from runledger.ingest.errors import InvalidParameterValue
from runledger.ingest.positions import format_position, parse_position, parse_time  # noqa: F401 (re-exported)
from runledger.projector.fold import LogEntry

DEFAULT_PAGE = 100
MAX_PAGE = 1000

@dataclass(frozen=True)
class TrailFilter:
    types: list[str] = field(default_factory=list)
    actor: str | None = None
    since: int | None = None      # ingest time, inclusive
    until: int | None = None      # ingest time, inclusive
    verdict: str | None = None    # "applied" | "rejected"
    # which experiments' events the caller may see (docs/auth.md): None = all; otherwise
    # ("allow", ids) or ("deny", ids); events of no experiment are shown only with None
    readable: tuple[str, tuple[str, ...]] | None = None


_COLUMNS = ('"partition", "offset", ingest_time, event_id, type, run_id, experiment_id, user_id, actor_verified, '
            "api, request_id, payload, error_code, message")


def entry(row: tuple[Any, ...]) -> dict[str, Any]:
    (partition, offset, time, event_id, type_, run_id, experiment_id, user, verified, api, request_id,
     payload, error_code, message) = row
    return {
        "position": format_position(partition, offset), "partition": partition, "offset": offset,
        "time": time, "event_id": event_id, "type": type_, "run_id": run_id, "experiment_id": experiment_id,
        "actor": {"name": user or None, "verified": verified},
        "api": api, "request_id": request_id,
        "summary": None if payload is None else orjson.loads(payload),
        "verdict": {"status": "applied" if error_code is None else "rejected",
                    "error_code": error_code, "reason": message or None},
    }


def entry_of(e: LogEntry) -> dict[str, Any]:
    """`entry` of a log entry as the projector just committed it (the live tail's source)."""
    payload = None if e.payload is None else orjson.dumps(e.payload)
    return entry((e.partition, e.offset, e.ingest_time, e.event_id, e.type, e.run_id, e.experiment_id, e.user,
                  e.actor_verified, e.api, e.request_id, payload, e.error_code, e.message))


def trail(cur: duckdb.DuckDBPyConnection, *, run_id: str | None = None, experiment_id: str | None = None,
          filters: TrailFilter = TrailFilter(), max_results: int | None = None,
          page_token: str | None = None) -> dict[str, Any]:
    """One page of the trail of a run, of an experiment (its own events and its runs'), or of
    everything; `next_page_token` continues it (keyset paging: entries appended meanwhile
    show up on later pages, none twice)."""
    limit = DEFAULT_PAGE if max_results is None else max_results
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidParameterValue(f"Invalid value {max_results} for parameter 'max_results': "
                                    f"it must be between 1 and {MAX_PAGE}.")
    where: list[str] = []
    params: list[Any] = []
    if run_id is not None or experiment_id is not None:
        where, params = _scope(run_id, experiment_id)
    order = (['"partition"', '"offset"'] if run_id is not None
             else ["coalesce(ingest_time, -1)", '"partition"', '"offset"'])
    if filters.readable is not None:
        mode, ids = filters.readable
        if mode == "allow":
            where.append("list_contains(?::VARCHAR[], experiment_id)")
        else:
            where.append("experiment_id IS NOT NULL AND NOT list_contains(?::VARCHAR[], experiment_id)")
        params.append(list(ids))
    if filters.types:
        where.append("type IN (SELECT unnest(?::VARCHAR[]))")
        params.append(filters.types)
    if filters.actor is not None:
        where.append("coalesce(user_id, '') = ?")
        params.append(filters.actor)
    if filters.since is not None:
        where.append("ingest_time >= ?")
        params.append(filters.since)
    if filters.until is not None:
        where.append("ingest_time <= ?")
        params.append(filters.until)
    if filters.verdict == "applied":
        where.append("error_code IS NULL")
    elif filters.verdict == "rejected":
        where.append("error_code IS NOT NULL")
    elif filters.verdict is not None:
        raise InvalidParameterValue(f"Invalid verdict {filters.verdict!r}: expected 'applied' or 'rejected'.")
    if page_token:
        after = _decode_token(page_token, len(order))
        where.append(f"({', '.join(order)}) > ({', '.join('?' * len(order))})")
        params += after
    sql = (f"SELECT {_COLUMNS}, {', '.join(order)} FROM event_log"
           + (f" WHERE {' AND '.join(where)}" if where else "")
           + f" ORDER BY {', '.join(order)} LIMIT ?")
    rows = cur.execute(sql, [*params, limit + 1]).fetchall()
    out: dict[str, Any] = {"events": [entry(r[:14]) for r in rows[:limit]]}
    if len(rows) > limit:
        out["next_page_token"] = _encode_token(list(rows[limit - 1][14:]))
    return out


def entries_between(cur: duckdb.DuckDBPyConnection, run_id: str, partition: int, after_offset: int | None,
                    to_offset: int) -> list[dict[str, Any]]:
    """The run's trail entries in (after_offset, to_offset] of its partition."""
    rows = cur.execute(
        f'SELECT {_COLUMNS} FROM event_log WHERE run_id = ? AND "partition" = ? AND "offset" > ? AND "offset" <= ? '
        'ORDER BY "offset"', [run_id, partition, -1 if after_offset is None else after_offset, to_offset]).fetchall()
    return [entry(r) for r in rows]


def entries_after(cur: duckdb.DuckDBPyConnection, cursor: dict[int, int], *, run_id: str | None = None,
                  experiment_id: str | None = None, limit: int = 10_000) -> list[dict[str, Any]]:
    """Entries of a run or an experiment past `cursor` (partition -> last offset seen; a
    partition not named is read from its start): what a resumed tail missed."""
    where, params = _scope(run_id, experiment_id)
    seen = " ".join('WHEN ? THEN "offset" > ?' for _ in cursor)
    for p, o in cursor.items():
        params += [p, o]
    if cursor:
        where.append(f'CASE "partition" {seen} ELSE TRUE END')
    order = '"partition", "offset"' if run_id is not None else 'coalesce(ingest_time, -1), "partition", "offset"'
    rows = cur.execute(f"SELECT {_COLUMNS} FROM event_log WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?",
                       [*params, limit]).fetchall()
    return [entry(r) for r in rows]


def _scope(run_id: str | None, experiment_id: str | None) -> tuple[list[str], list[Any]]:
    if run_id is not None:
        return ["run_id = ?"], [run_id]
    assert experiment_id is not None
    return (["(experiment_id = ? OR run_id IN (SELECT run_id FROM runs WHERE experiment_id = ?))"],
            [experiment_id, experiment_id])


def _encode_token(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode()


def _decode_token(token: str, n: int) -> list[int]:
    try:
        key = orjson.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, orjson.JSONDecodeError):
        key = None
    if not isinstance(key, list) or len(key) != n or not all(isinstance(k, int) for k in key):
        raise InvalidParameterValue(f"Invalid page_token {token!r}: pass the next_page_token of the same trail.")
    return key
