"""Runledger's own API under `/api/runledger/v1`: `stream` (high-volume metric ingest, answered on
Kafka's acknowledgement) and `ops` (rejections, projector freshness)."""

from __future__ import annotations

from fastapi import APIRouter

from runledger.dialects.native import ops, stream


def routers() -> list[APIRouter]:
    return [stream.build_router(), ops.build_router()]
