"""A hyper-parameter search in Runledger's own shape: GET /hpo/{study_id} answers its trial counts
per state and its best trial (docs/pai.md has the rules; PAI's view of the same study is
runledger.dialects.pai)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request

from runledger.auth.access import access
from runledger.auth.permissions import Permission
from runledger.dialects import services
from runledger.ingest.errors import ResourceDoesNotExist
from runledger.query import hpo


def study(request: Request, study_id: str) -> dict[str, Any]:
    reader = services.reader(request)
    with reader.cursor() as cur:
        found = hpo.load(cur, study_id, reader.latest_table)
    if found is None:
        raise ResourceDoesNotExist(f"No study '{study_id}': give a parent run id or an experiment id.")
    access(request).require(found.experiment_id, Permission.READ)
    best = found.best()
    return {"study": {
        "id": found.study_id, "kind": found.kind, "name": found.name, "experiment_id": found.experiment_id,
        "status": found.status, "objective": {"metric": found.objective, "direction": found.direction},
        "trial_count": len(found.trials), "trial_states": found.counts(),
        "best_trial": None if best is None or best.objective is None else {
            "run_id": best.meta.run_id, "run_name": best.meta.run_name, "value": best.objective[0],
            "timestamp": best.objective[1], "step": best.objective[2], "params": best.params},
        "search_space": found.search_space,
    }}


def build_router() -> APIRouter:
    router = APIRouter()
    router.add_api_route("/hpo/{study_id}", study, methods=["GET"])
    return router
