"""Runledger's own API under `/api/runledger/v1`: `stream` (high-volume metric ingest, answered on
Kafka's acknowledgement) `ops` (rejections, projector freshness) and `sql`
(read-only analytical SQL)."""

from __future__ import annotations

from fastapi import APIRouter

from runledger.dialects.native import ops, sql, stream


def routers() -> list[APIRouter]:
    return [stream.build_router(), ops.build_router(), sql.build_router()]
