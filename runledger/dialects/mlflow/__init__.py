"""MLflow's tracking REST API: `writes` (experiments and runs), `reads` (runs/get, runs/search,
experiments/get, metrics/get-history), `history` (bulk and sampled history), `inputs`
(runs/log-inputs), `datasets` (ajax-only search-datasets), `model_writes`/`model_reads`
(MLflow 3.x logged models), `run_models` (runs/log-model, runs/outputs, experiments/list),
`artifacts` (the artifact proxy under /api/2.0/mlflow-artifacts and artifact reads)."""

from __future__ import annotations

from fastapi import APIRouter

from runledger.dialects.mlflow import (artifacts, datasets, history, inputs, model_reads, model_writes, reads,
                                      run_models, writes)


def routers(*, ajax: bool) -> list[APIRouter]:
    """The routers mounted under one MLflow prefix; `ajax` adds the UI-only endpoints."""
    found = [writes.build_router(), inputs.build_router(), model_writes.build_router(),
             model_reads.build_router(), reads.build_router(), history.build_router(ajax=ajax),
             run_models.build_router(), artifacts.build_router()]
    if ajax:
        found.append(datasets.build_router())
    return found
