"""Operational reads outside the MLflow API: rejected events, projector freshness, read paths.

The streaming endpoint answers before the projector has applied its events, so these are how
its callers learn the rest: GET /rejections lists what the projector refused (docs/design.md,
invariant 5), GET /lag says how far the read model is behind the log.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from fastapi import APIRouter
from starlette.requests import Request

from runledger.dialects.native import schemas as S
from runledger.dialects.openapi import documented
from runledger.ingest.errors import InvalidParameterValue, TemporarilyUnavailable
from runledger.dialects.request import query_fields
from runledger.dialects import services
from runledger import request_timing

DEFAULT_REJECTIONS = 100
MAX_REJECTIONS = 10_000
# /lag is polled by dashboards and benchmarks: it gives up rather than hang on a sick broker.
LAG_TIMEOUT_S = 5.0
_REJECTION_COLUMNS = ("event_id", "partition", "offset", "type", "run_id", "experiment_id", "ingest_time",
                      "error_code", "reason")


def rejections(request: Request) -> dict[str, Any]:
    """Rejected events, newest first. "Newest" is by ingest time (from the log, so a rebuilt
    read model answers in the same order); undecodable records have none and come last."""
    f = query_fields(request)
    run_id = f.str("run_id")
    max_results = f.int64("max_results", default=DEFAULT_REJECTIONS)
    assert max_results is not None
    if not 1 <= max_results <= MAX_REJECTIONS:
        raise InvalidParameterValue(f"max_results must be between 1 and {MAX_REJECTIONS}, got {max_results}.")
    where, params = ("WHERE run_id = ?", [run_id]) if run_id else ("", [])
    names = ", ".join(f'"{c}"' for c in _REJECTION_COLUMNS)
    with services.reader(request).cursor() as cur:
        rows = cur.execute(
            f'SELECT {names} FROM rejections {where} '
            'ORDER BY ingest_time DESC NULLS LAST, "partition", "offset" DESC LIMIT ?',
            [*params, max_results]).fetchall()
    return {"rejections": [dict(zip(_REJECTION_COLUMNS, row)) for row in rows]}


async def lag(request: Request) -> dict[str, Any]:
    """Per partition, log end offset minus the next offset the projector will apply, and the
    age of the oldest event not yet applied (0 when there is none)."""
    settings = services.settings(request)
    # The age is taken at the moment the applied offsets are read (the lag call reads them
    # first), not once the oldest record's timestamp has been fetched: the fetch's own latency
    # is not the read model's lag, and by then the projector may have applied that record.
    asked_ms = time.time_ns() // 1_000_000
    try:
        reader = services.reader(request)
        offsets = await asyncio.wait_for(reader.lag(), LAG_TIMEOUT_S)
        lagging = {p: applied for p, (end, applied) in offsets.items() if end > applied}
        # Usually the projector has read those records already and waits for their commit; else
        # a fetch (a consumer of its own for each call: ~2.4 ms of CPU each, measured, which a
        # dashboard polling every 100 ms spent while streaming).
        oldest = reader.unapplied_timestamp(lagging) if lagging else None
        if oldest is None:
            oldest = await asyncio.wait_for(
                _oldest_timestamp(settings.bootstrap_servers, settings.topic, lagging), LAG_TIMEOUT_S)
    except (KafkaError, asyncio.TimeoutError) as e:
        raise TemporarilyUnavailable("Kafka did not answer the lag query; try again.") from e
    partitions = [{"partition": p, "end_offset": end, "applied_offset": applied, "lag": end - applied}
                  for p, (end, applied) in sorted(offsets.items())]
    age = 0 if oldest is None else max(0, asked_ms - oldest)
    return {"partitions": partitions, "total_lag": sum(p["lag"] for p in partitions),
            "oldest_unapplied_age_ms": age}


def read_paths(request: Request) -> dict[str, Any]:
    """How get-run reads were answered since start-up (query.read_paths): where a slow read
    came from, without a profiler."""
    return services.reader(request).read_paths.snapshot()


def request_timings(request: Request) -> dict[str, Any]:
    """Recent requests phase by phase, with what the server did meanwhile
    (runledger.request_timing): where a slow request's time went, without a profiler."""
    f = query_fields(request)
    since = f.str("since")
    try:
        since_s = float(since) if since is not None else None
    except ValueError:
        raise InvalidParameterValue(f"since must be a number (an earlier answer's `now`), got {since!r}") from None
    limit = f.int64("limit", default=4096)
    assert limit is not None
    if limit < 0:
        raise InvalidParameterValue(f"limit must be >= 0, got {limit}")
    return request_timing.snapshot(f.str("path"), since_s, limit)


async def _oldest_timestamp(bootstrap: str, topic: str, next_offsets: dict[int, int]) -> int | None:
    """The smallest Kafka record timestamp (set when ingest produced it) among the first
    unapplied record of each partition. A short-lived consumer of its own, so the projector's
    fetch position is never touched; a tiny fetch size, as the broker still returns the first
    record batch whole, and that holds the one record needed."""
    if not next_offsets:
        return None
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=1024, fetch_max_bytes=1024 * len(next_offsets))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in next_offsets]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, next_offsets[tp.partition])
        first: dict[int, int] = {}
        while len(first) < len(tps):
            batch = await consumer.getmany(*[tp for tp in tps if tp.partition not in first], timeout_ms=500)
            for tp, records in batch.items():
                if records and tp.partition not in first:
                    first[tp.partition] = records[0].timestamp
        return min(first.values())
    finally:
        await consumer.stop()


def build_router() -> APIRouter:
    router = APIRouter()
    router.add_api_route("/rejections", rejections, methods=["GET"], **documented(
        summary="Events the projector refused, newest first", query=S.RejectionsQuery, response=S.RejectionsAnswer,
        tags=["ops"]))
    router.add_api_route("/lag", lag, methods=["GET"], **documented(
        summary="How far the read model is behind the log", response=S.LagAnswer, tags=["ops"]))
    router.add_api_route("/read-paths", read_paths, methods=["GET"], **documented(
        summary="How get-run reads were answered: from memory, the run cache, or DuckDB (with or without "
                "waiting for a commit)", response=S.ReadPathsAnswer, tags=["ops"]))
    router.add_api_route("/request-timings", request_timings, methods=["GET"], **documented(
        summary="Recent requests phase by phase (queued, to the handler, handler, back), with the projector's "
                "and the collector's work that overlapped each", query=S.RequestTimingsQuery,
        response=S.RequestTimingsAnswer, tags=["ops"]))
    return router
