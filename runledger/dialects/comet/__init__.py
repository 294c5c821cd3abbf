"""Comet's REST API v2 as the unmodified `comet_ml` client speaks it (docs/comet.md): `reads`
(workspaces, projects, experiments, summaries, metric points, API.query), `writes`
(APIExperiment's logging calls), `service` (the version probe and the clear 501 for every route
not served). The client keeps only scheme and host of its URL, so these live at the host root."""

from __future__ import annotations

from fastapi import APIRouter

from runledger.dialects.comet import reads, service, writes

REST_PREFIX = "/api/rest/v2"
CLIENTLIB_PREFIX = "/clientlib"
PREFIXES = (REST_PREFIX, CLIENTLIB_PREFIX)


def routers() -> list[tuple[str, APIRouter]]:
    """(prefix, router) pairs; the catch-alls come last so served routes match first."""
    return [(REST_PREFIX, reads.build_router()), (REST_PREFIX, writes.build_router()),
            (CLIENTLIB_PREFIX, service.build_clientlib_router()), (REST_PREFIX, service.build_rest_fallback())]
