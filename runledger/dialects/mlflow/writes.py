"""MLflow's write endpoints for experiments and runs. Each turns a request into one event.

All of them are synchronous (docs/design.md, invariant 5): they answer after the projector has
applied the event, with MLflow's error when it was rejected.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter
from starlette.requests import Request

from runledger.dialects.mlflow import schemas as S
from runledger.dialects.openapi import Empty, documented
from runledger.ingest import limits
from runledger.ingest.contract import codec, metric_table
from runledger.ingest.artifact_policy import check_artifact_location_policy, resolve_relative_location
from runledger.ingest.errors import BadRequest, InvalidParameterValue, ResourceDoesNotExist
from runledger.ingest.contract.events import Envelope, metrics_columns
from runledger.dialects.mlflow.model_metrics import model_metric_columns
from runledger.dialects.request import SEE_API_DOCS, Fields, json_body, missing
from runledger.ingest.run_names import generate_run_name
from runledger.ingest.writer import Writer, new_event
from runledger.dialects import services
from runledger.auth.access import access
from runledger.dialects.identity import acting_user
from runledger.ingest.contract import entities

RUN_NAME_TAG = entities.RUN_NAME_TAG


def _writer(request: Request) -> Writer:
    return services.writer(request)


def _run_id(f: Fields) -> str:
    return limits.check_run_id(f.run_id())


def _experiment_id(f: Fields, name: str = "experiment_id") -> str:
    return limits.check_experiment_id(f.req_str(name))


def parse_status(value: Any) -> str | None:
    """A run status by name or number. An unknown name is None (the status stays as it is), as
    mlflow server answers it: its protobuf parser drops enum names it does not know."""
    if isinstance(value, int) and not isinstance(value, bool) and value in entities.RUN_STATUS_NUMBERS:
        return entities.RUN_STATUS_NUMBERS[value]
    if isinstance(value, str):
        return value if value in entities.RUN_STATUSES else None
    raise limits.invalid_value("status", value, f"Run status must be one of {sorted(entities.RUN_STATUSES)}.")


def _tags(items: list[Fields], value_limit: int, *, truncate: bool) -> list[list[str]]:
    """Run tags (`truncate`: long values cut, as MLflow does) or experiment tags (long values refused)."""
    out = []
    for t in items:
        key = limits.check_key(t.req_str("key"), f"{t.path}key")
        value = t.str("value", default="") or ""
        if truncate and key == RUN_NAME_TAG:  # this tag is the run's name: the name's limit applies
            limits.check_length(value, limits.MAX_RUN_NAME_LENGTH, f"{t.path}value")
        if len(value) > value_limit:
            if not truncate:
                raise InvalidParameterValue(f"'{t.path}value' exceeds the maximum length of {value_limit} characters")
            value = value[:value_limit]
        out.append([key, value])
    return out


def _metric(f: Fields) -> tuple[str, float, int, int]:
    key = limits.check_key(f.req_str("key"), f"{f.path}key")
    value = f.double("value", required=True)
    assert value is not None
    timestamp = f.int64("timestamp", required=True)
    assert timestamp is not None
    if timestamp < 0:
        raise limits.invalid_value(f"{f.path}timestamp", timestamp, "Metric timestamp must be non-negative.")
    step = f.int64("step", default=0)
    assert step is not None
    return key, limits.clamp_metric_value(value), timestamp, step


_PLAIN_METRIC_FIELDS = frozenset({"key", "value", "timestamp", "step"})
_INT64_MAX = 2**63 - 1


def _plain_metric_columns(raw: Any) -> dict[str, list[Any]] | None:
    """The columnar metrics of a log-batch whose points are all plain and valid (a JSON number
    value, integer timestamp >= 0 and step, a valid key, no model fields), without the per-field
    wrappers `_metric` goes through: this loop is the request's hot path. None means "not
    all plain": the caller takes the general path, which gives the exact error or conversion."""
    if not isinstance(raw, list):
        return None
    keys, values, timestamps, steps = [], [], [], []
    good_keys: set[str] = set()
    for m in raw:
        if type(m) is not dict or not _PLAIN_METRIC_FIELDS.issuperset(m):
            return None
        key, value, ts, step = m.get("key"), m.get("value"), m.get("timestamp"), m.get("step", 0)
        if step is None:
            step = 0
        if type(key) is not str or type(ts) is not int or type(step) is not int:
            return None
        if not (0 <= ts <= _INT64_MAX and -_INT64_MAX - 1 <= step <= _INT64_MAX):
            return None
        if type(value) is int:
            value = float(value)
        elif type(value) is not float:
            return None
        if key not in good_keys:
            try:
                limits.check_key(key)
            except InvalidParameterValue:
                return None
            good_keys.add(key)
        keys.append(key)
        values.append(limits.clamp_metric_value(value))
        timestamps.append(ts)
        steps.append(step)
    return {"keys": keys, "values": values, "timestamps": timestamps, "steps": steps}


_PLAIN_TABLE_FIELDS = frozenset({"key", "value", "timestamp"})
_VALUE = operator.itemgetter("value")


def _plain_metric_table(raw: list[Any]) -> pa.Table | None:
    """`_plain_metric_columns` for a large batch, straight to the Arrow table its event carries
    (ingest.contract.codec): Arrow converts the metric objects in one call and the checks run on whole
    columns, where the loop costs a few Python operations per point and the lists are then
    converted again. Accepts exactly what that loop accepts, except infinities (which JSON
    cannot spell); None sends the batch down the loop or the general path."""
    try:
        points = pa.array(raw)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None
    if not pa.types.is_struct(points.type) or points.null_count:
        return None
    names = {field.name for field in points.type}
    if not (_PLAIN_METRIC_FIELDS.issuperset(names) and _PLAIN_TABLE_FIELDS <= names):
        return None
    key, value, ts = points.field("key"), points.field("value"), points.field("timestamp")
    if key.type != pa.string() or ts.type != pa.int64() or value.type not in (pa.int64(), pa.float64()) \
            or key.null_count or ts.null_count or value.null_count or pc.min(ts).as_py() < 0:
        return None
    if "step" not in names or points.field("step").type == pa.null():
        step = pa.nulls(len(points), pa.int64())
    elif points.field("step").type == pa.int64():
        step = points.field("step")
    else:
        return None
    values = value.cast(pa.float64(), safe=False)  # the nearest double, as float(int) is
    if value.type == pa.float64():
        # Arrow takes true/false for 1.0/0.0 in a column it infers as doubles; MLflow refuses them
        if pc.any(pc.is_inf(values)).as_py() or any(v is True or v is False for v in map(_VALUE, raw)):
            return None
    if not all(limits.key_ok(k) for k in pc.unique(key).to_pylist()):
        return None
    return pa.Table.from_arrays([key, values, ts, pc.fill_null(step, 0)], schema=metric_table.SCHEMA)


def _params(items: list[Fields]) -> list[list[str]]:
    out, seen = [], set()
    for p in items:
        key = limits.check_key(p.req_str("key"), f"{p.path}key")
        value = p.str("value", required=True)
        assert value is not None
        if key in seen:
            raise InvalidParameterValue(f"Duplicate parameter keys have been submitted: [{key!r}]. "
                                        "Please ensure the request contains only one param value per param key.")
        seen.add(key)
        out.append([key, limits.truncate(value, limits.MAX_PARAM_VALUE_LENGTH)])
    return out


async def _commit_run_event(request: Request, type_: str, f: Fields, payload: dict[str, Any]) -> None:
    writer = _writer(request)
    run = writer.writable_run(_run_id(f))
    await writer.commit(new_event(type_, payload, user=acting_user(request),
                                  run_id=run.run_id, experiment_id=run.experiment_id))


# ----- experiments

async def create_experiment(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    name = limits.check_experiment_name(f.req_str("name"))
    tags = _tags(f.objects("tags"), limits.MAX_EXPERIMENT_TAG_VALUE_LENGTH, truncate=False)
    artifact_location = f.str("artifact_location") or None
    if artifact_location is not None:
        limits.check_artifact_location(artifact_location)
        artifact_location = resolve_relative_location(artifact_location)
        check_artifact_location_policy(artifact_location, services.settings(request).artifact_root)
    writer = _writer(request)
    event = new_event("ExperimentCreated", {
        "name": name, "artifact_location": artifact_location,
        "artifact_root": services.settings(request).artifact_root, "tags": tags,
    }, user=acting_user(request))
    verdict = await writer.commit(event)
    exp_id = verdict.result["experiment_id"]
    await grant_creator(request, exp_id)
    return {"experiment_id": exp_id}


async def grant_creator(request: Request, experiment_id: str) -> None:
    """With authentication on, the creator of an experiment gets MANAGE on it, as in MLflow's auth
    app: one more fact in the log (docs/auth.md)."""
    auth = getattr(request.app.state, "auth", None)
    user = access(request).username
    if auth is not None and user is not None:
        await auth.grant(user, experiment_id, "MANAGE")


async def _experiment_event(request: Request, type_: str, payload_fields: tuple[str, ...] = ()) -> dict[str, Any]:
    f = Fields(await json_body(request))
    exp_id = _experiment_id(f)
    payload: dict[str, Any] = {}
    for name in payload_fields:
        payload[name] = f.req_str(name, allow_empty=name == "value")
    writer = _writer(request)
    if writer.catalog.experiment(exp_id) is None:
        raise ResourceDoesNotExist(entities.experiment_not_found(exp_id))
    await writer.commit(new_event(type_, payload, user=acting_user(request), experiment_id=exp_id))
    return {}


async def update_experiment(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    limits.check_experiment_name(f.req_str("new_name"))
    return await _experiment_event(request, "ExperimentRenamed", ("new_name",))


async def delete_experiment(request: Request) -> dict[str, Any]:
    return await _experiment_event(request, "ExperimentDeleted")


async def restore_experiment(request: Request) -> dict[str, Any]:
    await _experiment_event(request, "ExperimentRestored")
    # MLflow restores every deleted run of the experiment, including runs deleted one by one
    # before the experiment was. Each run's restore is its own event in that run's partition.
    f = Fields(await json_body(request))
    exp_id = _experiment_id(f)
    writer = _writer(request)
    user = acting_user(request)
    await writer.commit_many([new_event("RunRestored", {"cause": "ExperimentRestored"}, user=user,
                                        run_id=run_id, experiment_id=exp_id)
                              for run_id in writer.catalog.run_ids(exp_id, lifecycle_stage="deleted")])
    return {}


async def set_experiment_tag(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    limits.check_key(f.req_str("key"))
    value = f.str("value", required=True) or ""
    if len(value) > limits.MAX_EXPERIMENT_TAG_VALUE_LENGTH:
        raise InvalidParameterValue(
            f"'value' exceeds the maximum length of {limits.MAX_EXPERIMENT_TAG_VALUE_LENGTH} characters")
    return await _experiment_event(request, "ExperimentTagSet", ("key", "value"))


async def delete_experiment_tag(request: Request) -> dict[str, Any]:
    return await _experiment_event(request, "ExperimentTagDeleted", ("key",))


# ----- runs

async def create_run(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    writer = _writer(request)
    if not f.str("experiment_id"):
        # MLflow's server has no default here either: its store fails to insert the run and
        # answers 400 BAD_REQUEST with the SQL error (MLflow's client always sends an id).
        raise BadRequest(f"Missing value for required parameter 'experiment_id'. {SEE_API_DOCS}")
    exp_id = limits.check_experiment_id(f.req_str("experiment_id"))
    tags = _tags(f.objects("tags"), limits.MAX_RUN_TAG_VALUE_LENGTH, truncate=True)
    tag_name = next((v for k, v in reversed(tags) if k == RUN_NAME_TAG), None)
    run_name = f.str("run_name")
    if run_name is not None:
        limits.check_length(run_name, limits.MAX_RUN_NAME_LENGTH, "run_name")
    user_id = limits.check_length(f.str("user_id") or "", limits.MAX_USER_ID_LENGTH, "user_id")
    if run_name and tag_name is not None and tag_name != run_name:
        raise InvalidParameterValue(
            f"Both 'run_name' argument and 'mlflow.runName' tag are specified, but with different values "
            f"(run_name={limits.shown_value(run_name)}, mlflow.runName={limits.shown_value(tag_name)}).")
    run_name = run_name or tag_name or generate_run_name()
    exp = writer.catalog.experiment(exp_id)
    if exp is None:
        raise ResourceDoesNotExist(entities.experiment_not_found(exp_id))
    if exp.lifecycle_stage != "active":
        raise InvalidParameterValue(entities.experiment_not_active(exp_id, exp.lifecycle_stage))
    user_id = f.str("user_id") or ""
    # The MLflow client claims its user only here (user_id, and the mlflow.user tag); an explicit
    # claim (basic auth, X-Runledger-User) comes first. Unverified either way (ingest.provenance).
    claimed = acting_user(request) or user_id or next((v for k, v in reversed(tags) if k == "mlflow.user"), "")
    event = new_event("RunCreated", {}, user=claimed, experiment_id=exp_id)
    run_id = event.event_id  # a fresh uuid4 hex, as MLflow's run ids are
    event = dataclasses.replace(
        event, run_id=run_id,
        payload={"run_name": run_name, "start_time": f.int64("start_time", default=0),
                 "user_id": user_id, "tags": tags,
                 "artifact_uri": f"{exp.artifact_location.rstrip('/')}/{run_id}/artifacts"})
    await writer.commit(event)
    return {"run": _new_run_json(event)}


def _new_run_json(event: Envelope) -> dict[str, Any]:
    """The Run a RunCreated event makes (what runs/get returns right after), built without a read."""
    p = event.payload
    tags = dict(p["tags"])
    tags[RUN_NAME_TAG] = p["run_name"]
    info = {"run_id": event.run_id, "run_uuid": event.run_id, "run_name": p["run_name"],
            "experiment_id": event.experiment_id, "user_id": p["user_id"], "status": "RUNNING",
            "start_time": p["start_time"], "artifact_uri": p["artifact_uri"], "lifecycle_stage": "active"}
    return {"info": info, "data": {"tags": [{"key": k, "value": tags[k]} for k in sorted(tags)]},
            "inputs": {}, "outputs": {}}


async def update_run(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    status = parse_status(f.data["status"]) if f.has("status") else None
    end_time = f.int64("end_time")
    run_name = f.str("run_name") or None
    if run_name is not None:
        limits.check_length(run_name, limits.MAX_RUN_NAME_LENGTH, "run_name")
    await _commit_run_event(request, "RunUpdated", f,
                            {"status": status, "end_time": end_time, "run_name": run_name})
    return {"run_info": _writer(request).catalog.run_info(_run_id(f))}


async def _run_lifecycle(request: Request, type_: str) -> dict[str, Any]:
    f = Fields(await json_body(request))
    writer = _writer(request)
    run_id = _run_id(f)
    run = writer.catalog.run(run_id)
    if run is None:
        raise ResourceDoesNotExist(entities.run_not_found(run_id))
    await writer.commit(new_event(type_, {}, user=acting_user(request), run_id=run_id,
                                  experiment_id=run.experiment_id))
    return {}


async def delete_run(request: Request) -> dict[str, Any]:
    return await _run_lifecycle(request, "RunDeleted")


async def restore_run(request: Request) -> dict[str, Any]:
    return await _run_lifecycle(request, "RunRestored")


async def log_metric(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    point = _metric(f)
    payload = {**metrics_columns([point]), **model_metric_columns([f], request)}
    await _commit_run_event(request, "MetricsLogged", f, payload)
    return {}


def _run_id_type_first(f: Fields) -> None:
    """MLflow checks a request's fields in its schema's order, run_id first: with run_id and value
    both of the wrong type, the error names run_id."""
    f.str("run_id")
    f.str("run_uuid")


async def log_param(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    _run_id_type_first(f)
    params = _params([f])
    await _commit_run_event(request, "ParamsLogged", f, {"params": params})
    return {}


async def set_tag(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    _run_id_type_first(f)
    tags = _tags([f], limits.MAX_RUN_TAG_VALUE_LENGTH, truncate=True)
    if not f.has("value"):
        raise missing("value")
    await _commit_run_event(request, "TagsSet", f, {"tags": tags})
    return {}


async def delete_tag(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    key = f.req_str("key")
    await _commit_run_event(request, "TagDeleted", f, {"key": key})
    return {}


async def log_batch(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    run_id = _run_id(f)
    raw = f.data.get("metrics")
    table = _plain_metric_table(raw) if isinstance(raw, list) and len(raw) >= codec.POINTS_MIN else None
    plain: dict[str, Any] | None = {"points_table": table} if table is not None else _plain_metric_columns(raw)
    metrics = f.objects("metrics") if plain is None else []
    params, tags = f.objects("params"), f.objects("tags")
    n_points = table.num_rows if table is not None else len(plain["keys"]) if plain is not None else len(metrics)
    limits.check_batch_sizes(n_points, len(params), len(tags))
    payload = {
        "params": _params(params),
        "metrics": plain if plain is not None else {
            **metrics_columns([_metric(m) for m in metrics]), **model_metric_columns(metrics, request)},
        "tags": _tags(tags, limits.MAX_RUN_TAG_VALUE_LENGTH, truncate=True),
    }
    writer = _writer(request)
    run = writer.writable_run(run_id)
    if payload["params"] or payload["tags"] or n_points:
        await writer.commit(new_event("RunBatchLogged", payload, user=acting_user(request),
                                      run_id=run.run_id, experiment_id=run.experiment_id))
    return {}


MAX_BULK_RUNS = 10000


async def _bulk_lifecycle(request: Request, type_: str, stage: str, bound: str) -> int:
    f = Fields(await json_body(request))
    exp_id = _experiment_id(f)
    limit_ms = f.int64(bound, required=True)
    max_runs = f.int64("max_runs", default=MAX_BULK_RUNS)
    assert max_runs is not None
    if not 1 <= max_runs <= MAX_BULK_RUNS:
        raise limits.invalid_value("max_runs", max_runs, f"It must be between 1 and {MAX_BULK_RUNS}.")
    writer = _writer(request)
    if writer.catalog.experiment(exp_id) is None:
        raise ResourceDoesNotExist(entities.experiment_not_found(exp_id))
    if type_ == "RunDeleted":
        ids = writer.catalog.run_ids(exp_id, lifecycle_stage=stage, started_at_or_before=limit_ms, limit=max_runs)
    else:
        ids = writer.catalog.run_ids(exp_id, lifecycle_stage=stage, deleted_at_or_after=limit_ms, limit=max_runs)
    user = acting_user(request)
    await writer.commit_many([new_event(type_, {}, user=user, run_id=i, experiment_id=exp_id) for i in ids])
    return len(ids)


async def delete_runs(request: Request) -> dict[str, Any]:
    """Databricks bulk delete: active runs created at or before max_timestamp_millis, oldest first."""
    return {"runs_deleted": await _bulk_lifecycle(request, "RunDeleted", "active", "max_timestamp_millis")}


async def restore_runs(request: Request) -> dict[str, Any]:
    """Databricks bulk restore: runs deleted at or after min_timestamp_millis."""
    return {"runs_restored": await _bulk_lifecycle(request, "RunRestored", "deleted", "min_timestamp_millis")}


def build_router() -> APIRouter:
    router = APIRouter()
    for path, handler, summary, body, answer, errors in (
        ("/experiments/create", create_experiment, "Create an experiment", S.CreateExperimentBody,
         S.ExperimentIdAnswer, ()),
        ("/experiments/update", update_experiment, "Rename an experiment", S.UpdateExperimentBody, Empty, (404,)),
        ("/experiments/delete", delete_experiment, "Delete an experiment (restorable)", S.ExperimentIdBody, Empty,
         (404,)),
        ("/experiments/restore", restore_experiment, "Restore a deleted experiment", S.ExperimentIdBody, Empty,
         (404,)),
        ("/experiments/set-experiment-tag", set_experiment_tag, "Set an experiment tag", S.ExperimentTagBody,
         Empty, (404,)),
        ("/experiments/delete-experiment-tag", delete_experiment_tag, "Delete an experiment tag",
         S.DeleteExperimentTagBody, Empty, (404,)),
        ("/runs/create", create_run, "Create a run", S.CreateRunBody, S.RunAnswer, (404,)),
        ("/runs/update", update_run, "Update a run's status, end time or name", S.UpdateRunBody, S.RunInfoAnswer,
         (404,)),
        ("/runs/delete", delete_run, "Delete a run (restorable)", S.RunIdBody, Empty, (404,)),
        ("/runs/restore", restore_run, "Restore a deleted run", S.RunIdBody, Empty, (404,)),
        ("/runs/log-metric", log_metric, "Log one metric point", S.LogMetricBody, Empty, (404, 504)),
        ("/runs/log-parameter", log_param, "Log a parameter (immutable once set)", S.LogParamBody, Empty,
         (404, 504)),
        ("/runs/set-tag", set_tag, "Set a run tag (overwrites)", S.SetTagBody, Empty, (404, 504)),
        ("/runs/delete-tag", delete_tag, "Delete a run tag", S.DeleteTagBody, Empty, (404,)),
        ("/runs/log-batch", log_batch, "Log metrics, params and tags together", S.LogBatchBody, Empty, (404, 504)),
        ("/databricks/runs/delete-runs", delete_runs, "Delete an experiment's runs created up to a time",
         S.BulkRunsBody, S.RunsDeletedAnswer, (404,)),
        ("/databricks/runs/restore-runs", restore_runs, "Restore an experiment's runs deleted from a time",
         S.BulkRunsBody, S.RunsRestoredAnswer, (404,)),
    ):
        router.add_api_route(path, handler, methods=["POST"],
                             **documented(summary=summary, body=body, response=answer, errors=errors))
    return router

