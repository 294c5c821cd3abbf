"""Runledger's own API under `/api/runledger/v1`: `stream` (high-volume metric ingest, answered on
Kafka's acknowledgement), `ops` (rejections, projector freshness), `sql` (read-only analytical
SQL), `audit` (trails, as-of reads, diffs, rewind, live tails), `search` (runs/search with a boolean
filter), `history` (bucketed metric history for charts and samplers) and `hpo` (a hyper-parameter
search's trial counts and best trial)."""

from __future__ import annotations

from fastapi import APIRouter

from runledger.dialects.native import audit, history, hpo, ops, search, sql, stream, tokens


def routers() -> list[APIRouter]:
    return [stream.build_router(), ops.build_router(), sql.build_router(), audit.build_router(),
            search.build_router(), history.build_router(), tokens.build_router(), hpo.build_router()]
