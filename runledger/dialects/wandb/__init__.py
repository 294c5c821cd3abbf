"""W&B's public API (`wandb.Api()`): POST /graphql, served from the same read model and writer
as the other dialects (docs/wandb.md)."""

from __future__ import annotations

from fastapi import APIRouter

from runledger.dialects.wandb import routes


def routers() -> list[APIRouter]:
    return [routes.build_router()]
