"""The rest of MLflow's ExperimentsService for runs and models:

- POST runs/log-model (MLflow 1.x): appends the model's summary to the run's
  `mlflow.log-model.history` tag (one ModelHistoryLogged event; the fold appends, so two
  concurrent calls both land, in log order);
- POST runs/outputs (MLflow 3.x log-outputs): the run produced these logged models at these steps;
- GET experiments/list (MLflow 1.x clients): every experiment of a view type, unpaged.

Model inputs of runs/log-inputs are in runledger.dialects.mlflow.inputs.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request

from runledger.dialects.identity import acting_user
from runledger.dialects.mlflow.writes import _run_id, _writer
from runledger.dialects import services
from runledger.dialects.request import Fields, json_body, missing, query_fields
from runledger.ingest.errors import InvalidParameterValue
from runledger.ingest.writer import new_event
from runledger.query import reader

# The fields of a model's JSON that MLflow keeps in the history tag (Model.get_tags_dict).
_HISTORY_FIELDS = ("run_id", "utc_time_created", "artifact_path", "model_uuid")
_REQUIRED_FIELDS = {"artifact_path", "flavors", "utc_time_created", "run_id"}


def model_history_entry(model_json: str) -> dict[str, Any]:
    """What mlflow server appends to the history tag for `model_json`, or its 400."""
    try:
        model = json.loads(model_json)
    except ValueError:
        model = None
    if not isinstance(model, dict):
        raise InvalidParameterValue(f"Malformed model info. \n {model_json} \n is not a valid JSON.")
    missing_fields = _REQUIRED_FIELDS - set(model)
    if missing_fields:
        raise InvalidParameterValue(f"Model json is missing mandatory fields: {missing_fields}")
    entry = {k: model[k] for k in _HISTORY_FIELDS if k in model}
    flavors = model.get("flavors") or {}
    if not isinstance(flavors, dict):
        raise InvalidParameterValue("Model json field 'flavors' must be an object.")
    entry["flavors"] = {name: ({k: v for k, v in conf.items() if k != "config"} if isinstance(conf, dict) else conf)
                        for name, conf in flavors.items()}
    return entry


async def log_model(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    run_id = _run_id(f)
    entry = model_history_entry(f.req_str("model_json"))
    writer = _writer(request)
    run = writer.writable_run(run_id)
    await writer.commit(new_event("ModelHistoryLogged", {"model": entry}, user=acting_user(request),
                                  run_id=run.run_id, experiment_id=run.experiment_id))
    return {}


async def log_outputs(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    run_id = _run_id(f)
    if not isinstance(f.data.get("models"), list):
        raise missing("models")
    models = []
    for m in f.objects("models"):
        step = m.int64("step", required=True)
        assert step is not None
        models.append([m.req_str("model_id"), step])
    writer = _writer(request)
    run = writer.writable_run(run_id)
    if models:
        await writer.commit(new_event("OutputsLogged", {"models": models}, user=acting_user(request),
                                      run_id=run.run_id, experiment_id=run.experiment_id))
    return {}


# No page size: experiments/list answered every experiment at once; pages are walked internally.
_LIST_PAGE = 1000


def list_experiments(request: Request) -> dict[str, Any]:
    f = query_fields(request)
    experiments: list[dict[str, Any]] = []
    token = None
    with services.reader(request).cursor() as cur:
        while True:
            page = reader.search_experiments(cur, filter_string=None, order_by=[], view_type=f.data.get("view_type"),
                                             max_results=_LIST_PAGE, page_token=token)
            experiments.extend(page.get("experiments", []))
            token = page.get("next_page_token")
            if not token:
                break
    return {"experiments": experiments} if experiments else {}


def build_router() -> APIRouter:
    from runledger.dialects.mlflow.artifacts import _doc, _ListExperimentsQuery, _LogModel, _LogOutputs

    router = APIRouter()
    router.add_api_route("/runs/log-model", log_model, methods=["POST"],
                         **_doc("Append a model to the run's mlflow.log-model.history tag", body=_LogModel,
                                tags=["mlflow"]))
    router.add_api_route("/runs/outputs", log_outputs, methods=["POST"],
                         **_doc("Link the run to logged models it produced, at steps", body=_LogOutputs,
                                tags=["mlflow"]))
    router.add_api_route("/experiments/list", list_experiments, methods=["GET"],
                         **_doc("Every experiment of a view type (MLflow 1.x)", query=_ListExperimentsQuery,
                                tags=["mlflow"]))
    return router
