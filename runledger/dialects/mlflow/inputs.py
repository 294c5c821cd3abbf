"""POST runs/log-inputs: dataset inputs (MLflow 2.4+) and model inputs (3.x) of a run, one InputsLogged event."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request

from runledger.dialects.mlflow import schemas as S
from runledger.dialects.openapi import Empty, documented
from runledger.ingest.errors import InvalidParameterValue
from runledger.dialects.request import Fields, json_body, missing
from runledger.dialects.identity import acting_user
from runledger.dialects.mlflow.writes import _run_id, _writer
from runledger.ingest.writer import new_event

# MLflow's limits (mlflow/utils/validation.py); over-long values are errors, not truncated.
_DATASET_LIMITS = {"name": 500, "digest": 36, "source": 65535, "schema": 1048575, "profile": 16777215}
_INPUT_TAG_KEY, _INPUT_TAG_VALUE = 255, 500


def _check_length(path: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise InvalidParameterValue(f"'{path}' exceeds the maximum length of {limit} characters")


def parse_dataset_input(item: Fields) -> dict[str, Any]:
    ds_raw = item.data.get("dataset")
    if not isinstance(ds_raw, dict):
        raise missing(f"{item.path}dataset")
    ds = Fields(ds_raw, f"{item.path}dataset.")
    out: dict[str, Any] = {name: ds.req_str(name) for name in ("name", "digest", "source_type", "source")}
    out["schema"], out["profile"] = ds.str("schema"), ds.str("profile")
    for name, limit in _DATASET_LIMITS.items():
        _check_length(f"{ds.path}{name}", out[name], limit)
    tags = []
    for t in item.objects("tags"):
        key, value = t.req_str("key"), t.str("value", required=True) or ""
        _check_length(f"{t.path}key", key, _INPUT_TAG_KEY)
        _check_length(f"{t.path}value", value, _INPUT_TAG_VALUE)
        tags.append([key, value])
    out["tags"] = tags
    return out


async def log_inputs(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    run_id = _run_id(f)
    datasets = [parse_dataset_input(d) for d in f.objects("datasets")]
    # MLflow 3.x model inputs: [{model_id}] (mlflow server keeps them; runs/get shows inputs.model_inputs)
    models = list(dict.fromkeys(m.req_str("model_id") for m in f.objects("models")))
    writer = _writer(request)
    run = writer.writable_run(run_id)
    if datasets or models:
        payload: dict[str, Any] = {"datasets": datasets, **({"models": models} if models else {})}
        await writer.commit(new_event("InputsLogged", payload, user=acting_user(request),
                                      run_id=run.run_id, experiment_id=run.experiment_id))
    return {}


def build_router() -> APIRouter:
    router = APIRouter()
    router.add_api_route("/runs/log-inputs", log_inputs, methods=["POST"], **documented(
        summary="Log a run's input datasets and models", body=S.LogInputsBody, response=Empty, errors=(404,)))
    return router
