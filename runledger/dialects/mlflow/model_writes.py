"""MLflow 3.x logged models: the write endpoints under `logged-models`, one event each.

Paths and bodies as MLflow's REST API (service.proto): POST `logged-models` (create),
PATCH `logged-models/{model_id}` (finalize), DELETE `logged-models/{model_id}`,
PATCH `logged-models/{model_id}/tags`, DELETE `logged-models/{model_id}/tags/{tag_key}`,
POST `logged-models/{model_id}/params`. All are synchronous (docs/design.md, invariant 5).

Model events are keyed by model id (ingest.contract.events.MODEL_EVENTS); the model id is allocated
here, as MLflow's server does (`m-` + 32 hex digits). Reads (get, search) live in
query.models_routes; ingest asks the read model only through `ModelCatalog`.
"""

from __future__ import annotations

import re

import uuid
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request

from runledger.dialects.mlflow import schemas as S
from runledger.dialects.openapi import Empty, documented
from runledger.ingest import limits
from runledger.ingest.catalog import ModelCatalog, ModelRef
from runledger.ingest.errors import InvalidParameterValue, ResourceDoesNotExist
from runledger.dialects.request import Fields, json_body, missing
from runledger.dialects.identity import acting_user
from runledger.dialects.mlflow.writes import _writer
from runledger.ingest.run_names import generate_run_name
from runledger.ingest.writer import new_event
from runledger.dialects import services
from runledger.ingest.contract import entities

MAX_MODEL_NAME_LENGTH = 500       # MLflow's logged_models.name column
MAX_MODEL_TYPE_LENGTH = 500       # logged_models.model_type
MAX_MODEL_KEY_LENGTH = 255        # logged_model_params.param_key / logged_model_tags.tag_key
_NAME_BAD_CHARS = ("/", ":", ".", "%", '"', "'")
FINAL_STATUSES = {2: "LOGGED_MODEL_READY", 3: "LOGGED_MODEL_UPLOAD_FAILED"}


def _catalog(request: Request) -> ModelCatalog:
    return services.models(request)


async def _optional_json_body(request: Request) -> dict[str, Any]:
    """PATCH and DELETE bodies: MLflow checks the content type of POST/PUT only, and the client
    sends DELETE .../tags/{key} without a body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        return await json_body(request)
    raw = await request.body()
    if len(raw) > limits.MAX_REQUEST_BYTES:
        raise limits.request_too_large(len(raw))
    if raw.strip():
        raise InvalidParameterValue(
            f"Bad Request. Content-Type must be 'application/json', got {content_type or 'nothing'!r}.")
    return {}


def check_model_name(name: str) -> str:
    if not name or any(c in name for c in _NAME_BAD_CHARS):
        raise InvalidParameterValue(
            f"Invalid model name ({limits.shown_value(name)}) provided. Model name must be a non-empty string "
            f"and cannot contain the following characters: {_NAME_BAD_CHARS}")
    if len(name) > MAX_MODEL_NAME_LENGTH:
        raise InvalidParameterValue(f"'name' exceeds the maximum length of {MAX_MODEL_NAME_LENGTH} characters")
    return name


def _key(f: Fields) -> str:
    key = f.req_str("key")
    if len(key) > MAX_MODEL_KEY_LENGTH:
        raise InvalidParameterValue(f"'{f.path}key' exceeds the maximum length of {MAX_MODEL_KEY_LENGTH} characters")
    return key


def parse_model_tags(items: list[Fields]) -> list[list[str]]:
    """Tags in request order; a repeated key keeps its last value (as MLflow dedupes)."""
    out: dict[str, str] = {}
    for t in items:
        key = _key(t)
        out.pop(key, None)
        out[key] = t.str("value", default="") or ""
    return [[k, v] for k, v in out.items()]


def parse_model_params(items: list[Fields]) -> list[list[str]]:
    """Params; a key repeated with the same value is sent once, with another value it is an error."""
    out: dict[str, str] = {}
    for p in items:
        key = _key(p)
        value = p.str("value", default="") or ""
        if key in out and out[key] != value:
            raise InvalidParameterValue(f"Duplicate parameter keys have been submitted with different values: "
                                        f"[{key!r}]. Please ensure the request contains only one value per key.")
        out[key] = value
    return [[k, v] for k, v in out.items()]


def parse_final_status(value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,4}\s*", value):  # a number as a string
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value in FINAL_STATUSES:
        return FINAL_STATUSES[value]
    if isinstance(value, str) and value in FINAL_STATUSES.values():
        return value
    raise limits.invalid_value(
        "status", value, f"A logged model is finalized with one of {sorted(FINAL_STATUSES.values())}.")


def _existing(request: Request, model_id: str) -> ModelRef:
    model = _catalog(request).logged_model(model_id)
    if model is None:
        raise ResourceDoesNotExist(entities.model_not_found(model_id))
    return model


async def _commit_model_event(request: Request, type_: str, model: ModelRef, payload: dict[str, Any]) -> None:
    await _writer(request).commit(new_event(type_, {"model_id": model.model_id, **payload},
                                            user=acting_user(request), experiment_id=model.experiment_id))


# ----- endpoints

async def create_logged_model(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    exp_id = limits.check_experiment_id(f.req_str("experiment_id"))
    name = f.str("name") or None
    name = check_model_name(name) if name is not None else generate_run_name()
    model_type = f.str("model_type") or ""
    if len(model_type) > MAX_MODEL_TYPE_LENGTH:
        raise InvalidParameterValue(f"'model_type' exceeds the maximum length of {MAX_MODEL_TYPE_LENGTH} characters")
    source_run_id = f.str("source_run_id") or ""
    params = parse_model_params(f.objects("params"))
    tags = parse_model_tags(f.objects("tags"))
    exp = _writer(request).catalog.experiment(exp_id)
    if exp is None:
        raise ResourceDoesNotExist(entities.experiment_not_found(exp_id))
    if exp.lifecycle_stage != "active":
        raise InvalidParameterValue(
            entities.experiment_not_active(exp_id, exp.lifecycle_stage))
    model_id = f"m-{uuid.uuid4().hex}"
    model = ModelRef(model_id, exp_id, "active")
    await _commit_model_event(request, "LoggedModelCreated", model, {
        "name": name, "model_type": model_type, "source_run_id": source_run_id,
        "artifact_uri": f"{exp.artifact_location.rstrip('/')}/models/{model_id}/artifacts",
        "params": params, "tags": tags,
    })
    return {"model": _catalog(request).logged_model_json(model_id)}


async def finalize_logged_model(request: Request, model_id: str) -> dict[str, Any]:
    f = Fields(await _optional_json_body(request))
    f.req_str("model_id")  # required in the body too, as MLflow's request schema has it; the path names the model
    if not f.has("status"):
        raise missing("status")
    status = parse_final_status(f.data["status"])
    model = _existing(request, model_id)
    await _commit_model_event(request, "LoggedModelFinalized", model, {"status": status})
    return {"model": _catalog(request).logged_model_json(model_id)}


async def delete_logged_model(request: Request, model_id: str) -> dict[str, Any]:
    await _optional_json_body(request)
    model = _existing(request, model_id)
    await _commit_model_event(request, "LoggedModelDeleted", model, {})
    return {}


async def set_logged_model_tags(request: Request, model_id: str) -> dict[str, Any]:
    f = Fields(await _optional_json_body(request))
    tags = parse_model_tags(f.objects("tags"))
    model = _existing(request, model_id)
    if tags:
        await _commit_model_event(request, "LoggedModelTagsSet", model, {"tags": tags})
    return {}


async def delete_logged_model_tag(request: Request, model_id: str, tag_key: str) -> dict[str, Any]:
    await _optional_json_body(request)
    model = _existing(request, model_id)
    await _commit_model_event(request, "LoggedModelTagDeleted", model, {"key": tag_key})
    return {}


async def log_logged_model_params(request: Request, model_id: str) -> dict[str, Any]:
    f = Fields(await json_body(request))
    f.req_str("model_id")  # as finalize
    params = parse_model_params(f.objects("params"))
    model = _existing(request, model_id)
    if params:
        await _commit_model_event(request, "LoggedModelParamsLogged", model, {"params": params})
    return {}


def build_router() -> APIRouter:
    router = APIRouter()
    router.add_api_route("/logged-models", create_logged_model, methods=["POST"], **documented(
        summary="Create a logged model", body=S.CreateLoggedModelBody, response=S.LoggedModelAnswer, errors=(404,)))
    router.add_api_route("/logged-models/{model_id}", finalize_logged_model, methods=["PATCH"], **documented(
        summary="Finalize a logged model (set its status)", body=S.FinalizeLoggedModelBody,
        response=S.LoggedModelAnswer, errors=(404,)))
    router.add_api_route("/logged-models/{model_id}", delete_logged_model, methods=["DELETE"], **documented(
        summary="Delete a logged model", response=Empty, errors=(404,)))
    router.add_api_route("/logged-models/{model_id}/tags", set_logged_model_tags, methods=["PATCH"], **documented(
        summary="Set logged model tags", body=S.LoggedModelTagsBody, response=Empty, errors=(404,)))
    # A tag key may contain '/', which the client does not escape: take the rest of the path.
    router.add_api_route("/logged-models/{model_id}/tags/{tag_key:path}", delete_logged_model_tag,
                         methods=["DELETE"], **documented(summary="Delete a logged model tag", response=Empty,
                                                          errors=(404,)))
    router.add_api_route("/logged-models/{model_id}/params", log_logged_model_params, methods=["POST"],
                         **documented(summary="Log logged model params", body=S.LoggedModelParamsBody,
                                      response=Empty, errors=(404,)))
    return router
