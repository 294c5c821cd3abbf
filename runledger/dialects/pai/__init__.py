"""Alibaba PAI's HPO view (paiautoml 2022-08-28: GetHpoExperiment, ListHpoTrials, GetHpoTrial) over
the runs a hyper-parameter search logged (docs/pai.md); the study itself is read by query.hpo."""

from __future__ import annotations

from runledger.dialects.pai.routes import build_router

PREFIX = "/api/automl/v1/hpo"

__all__ = ["PREFIX", "build_router"]
