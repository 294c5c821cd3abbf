"""A hyper-parameter search in Runledger's own shape: GET /hpo/{study_id} answers its trial counts
per state and its best trial (docs/pai.md has the rules; PAI's view of the same study is
runledger.dialects.pai)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.requests import Request

from runledger.dialects.openapi import documented
from runledger.dialects.studies import readable_study


class Objective(BaseModel):
    metric: str | None = Field(description="the objective metric's key (None: none could be told)")
    direction: str = Field(description="minimize or maximize")


class BestTrial(BaseModel):
    run_id: str
    run_name: str | None
    value: float = Field(description="the trial's latest value of the objective metric")
    timestamp: int
    step: int
    params: dict[str, str]


class Study(BaseModel):
    id: str = Field(description="the parent run id or experiment id asked for")
    kind: str = Field(description="parent_run or experiment")
    name: str
    experiment_id: str
    status: str = Field(description="the parent run's status; for an experiment RUNNING, FINISHED or CREATED")
    objective: Objective
    trial_count: int
    trial_states: dict[str, int] = Field(description="trials per state (RUNNING, FINISHED, FAILED, PRUNED, ...)")
    best_trial: BestTrial | None
    search_space: dict[str, dict[str, Any]] = Field(description="per param, NNI-style {_type, _value, source}")


class StudyAnswer(BaseModel):
    study: Study


def study(request: Request, study_id: str) -> dict[str, Any]:
    found = readable_study(request, study_id,
                           f"No study '{study_id}': give a parent run id or an experiment id.")
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
    router.add_api_route("/hpo/{study_id}", study, methods=["GET"], **documented(
        summary="A hyper-parameter search: trial counts per state and the best trial (docs/pai.md)",
        response=StudyAnswer, errors=(404,), tags=["hpo"]))
    return router
