"""PAI's GetHpoExperiment, ListHpoTrials and GetHpoTrial over a study read by query.hpo.

PAI names: an HPO experiment is the study (a parent run or an MLflow experiment), a trial is one
run; ids are Runledger's run / experiment ids. Statuses map as docs/pai.md tables them."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from runledger.dialects import services
from runledger.dialects.openapi import documented
from runledger.dialects.pai import schemas as S
from runledger.dialects.studies import readable_study
from runledger.ingest.errors import InvalidParameterValue, ResourceDoesNotExist
from runledger.query import hpo

# Runledger/MLflow state -> PAI trial status.
TRIAL_STATUS = {"RUNNING": "RUNNING", "FINISHED": "FINISHED", "FAILED": "FAILED", "KILLED": "USER_CANCELED",
                "SCHEDULED": "WAITING", "PRUNED": "EARLY_STOPPED"}
# -> PAI experiment status (a parent run's status, or the experiment's derived one).
EXPERIMENT_STATUS = {"RUNNING": "RUNNING", "FINISHED": "FINISHED", "FAILED": "FAILED", "KILLED": "USER_CANCELED",
                     "SCHEDULED": "WAITING", "CREATED": "CREATED"}


def _json(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


def _time(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", None) or uuid.uuid4().hex)


def _load(request: Request, experiment_id: str) -> hpo.Study:
    return readable_study(request, experiment_id,
                          f"No HPO experiment '{experiment_id}': give a parent run id or an experiment id.")


def _trial_status(t: hpo.Trial) -> str:
    return TRIAL_STATUS.get(t.state, "UNKNOWN")


def _metric_entries(points: list[tuple[float, int, int]], final: tuple[float, int, int] | None) -> list[dict[str, Any]]:
    """PAI's trial Metric array: the intermediate values, then one entry of type FINAL (the latest point)."""
    out: list[dict[str, Any]] = [{"default": v, "step": s, "timestamp": t} for v, t, s in points]
    if final is not None:
        out.append({"default": final[0], "step": final[2], "timestamp": final[1], "type": "FINAL"})
    return out


def _trial(study: hpo.Study, t: hpo.Trial, series: list[tuple[float, int, int]] | None) -> dict[str, Any]:
    metric = _metric_entries(series or [], t.objective)
    return {
        "TrialId": t.meta.run_id, "ExperimentId": study.study_id, "Name": t.meta.run_name,
        "Status": _trial_status(t), "Hyperparam": orjson.dumps(t.params).decode(), "ParameterId": 0,
        "Model": "", "MetricName": study.objective or "", "Metric": orjson.dumps(metric).decode(),
        "JobMeta": orjson.dumps({"run_id": t.meta.run_id, "experiment_id": t.meta.experiment_id,
                                 "mlflow_status": t.meta.status}).decode(),
        "GmtCreateTime": _time(t.meta.start_time), "GmtModifiedTime": _time(t.meta.end_time or t.meta.start_time),
    }


def get_experiment(request: Request, experiment_id: str) -> Response:
    study = _load(request, experiment_id)
    best = study.best()
    config = {
        "SearchSpace": study.search_space,
        "Objective": {"MetricName": study.objective, "Direction": study.direction.upper()},
        "Source": study.kind,
        "BestTrialId": best.meta.run_id if best else None,
        "BestMetric": best.objective[0] if best and best.objective else None,
    }
    return _json({
        "RequestId": _request_id(request), "ExperimentId": study.study_id, "Name": study.name,
        "Description": "", "Creator": study.creator, "WorkspaceId": study.experiment_id,
        "Accessibility": "PRIVATE", "JobType": "MLflow", "Status": EXPERIMENT_STATUS.get(study.status, "UNKNOWN"),
        "GmtCreateTime": _time(study.created), "GmtModifiedTime": _time(study.modified),
        "SearchSpace": orjson.dumps(study.search_space).decode(), "ConfigIni": "", "ConfigYml": "",
        "HpoExperimentConfiguration": config, "Deleted": False,
        "Detail": orjson.dumps({"best_trial": best.meta.run_id if best else None}).decode(),
        "TrialCount": len(study.trials),
        "TrialStatus": {TRIAL_STATUS.get(k, "UNKNOWN"): str(n) for k, n in sorted(study.counts().items())},
    })


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParameterValue(f"{name} must be a positive integer, got {raw!r}.") from None
    if value < 1:
        raise InvalidParameterValue(f"{name} must be a positive integer, got {raw!r}.")
    return value


def list_trials(request: Request, experiment_id: str) -> Response:
    study = _load(request, experiment_id)
    page, size = _int_param(request, "PageNumber", 1), _int_param(request, "PageSize", 100)
    sort_by = request.query_params.get("SortBy") or "CREATE_TIME"
    order = (request.query_params.get("Order") or "ASC").upper()
    if sort_by not in ("CREATE_TIME", "FINAL_METRIC") or order not in ("ASC", "DESC"):
        raise InvalidParameterValue("SortBy is CREATE_TIME or FINAL_METRIC; Order is ASC or DESC.")
    trials = list(study.trials)
    if sort_by == "FINAL_METRIC":
        # Trials without a final value go last in either order.
        scored = sorted((t for t in trials if t.objective is not None), key=lambda t: t.objective[0],  # type: ignore[index]
                        reverse=order == "DESC")
        trials = scored + [t for t in trials if t.objective is None]
    else:
        trials.sort(key=lambda t: (t.meta.start_time or 0, t.meta.run_id), reverse=order == "DESC")
    chosen = trials[(page - 1) * size:page * size]
    # The list carries each trial's FINAL value only; GetHpoTrial has the whole series.
    return _json({"RequestId": _request_id(request), "TotalCount": len(study.trials),
                  "Trials": [_trial(study, t, None) for t in chosen]})


def get_trial(request: Request, experiment_id: str, trial_id: str) -> Response:
    study = _load(request, experiment_id)
    trial = next((t for t in study.trials if t.meta.run_id == trial_id), None)
    if trial is None:
        raise ResourceDoesNotExist(f"No trial '{trial_id}' in HPO experiment '{experiment_id}'.")
    series: list[tuple[float, int, int]] = []
    if study.objective:
        reader = services.reader(request)
        with reader.cursor() as cur:
            series = hpo.series(cur, trial_id, study.objective)
    body = _trial(study, trial, series)
    body["RequestId"] = _request_id(request)
    return _json(body)


def build_router() -> APIRouter:
    router = APIRouter()
    common: dict[str, Any] = {"errors": (401, 403, 404), "tags": ["pai"], "error_model": S.PaiErrorBody}
    router.add_api_route("/experiment/{experiment_id}", get_experiment, methods=["GET"], **documented(
        summary="GetHpoExperiment: a study (a parent run's or an experiment's)", response=S.PaiHpoExperiment,
        **common))
    router.add_api_route("/experiment/{experiment_id}/trials", list_trials, methods=["GET"], **documented(
        summary="ListHpoTrials: a study's trials, each with its final value", query=S.PaiTrialsQuery,
        response=S.PaiHpoTrials, **common))
    router.add_api_route("/experiment/{experiment_id}/trial/{trial_id}", get_trial, methods=["GET"], **documented(
        summary="GetHpoTrial: one trial with its objective's whole series", response=S.PaiHpoTrial, **common))
    return router
