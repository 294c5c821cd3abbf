"""What the W&B schema's fields read: experiments as projects, MLflow runs as W&B runs, metric
points as history rows (docs/wandb.md has the mapping). Reads go through query.reader and
query.step_history on the request's DuckDB cursor; writes are events through the Writer."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import duckdb
import orjson
from graphql import GraphQLResolveInfo, GraphQLSchema

from runledger.auth.access import OPEN, Access
from runledger.auth.permissions import Permission
from runledger.ingest import limits
from runledger.ingest.contract.events import metrics_columns
from runledger.ingest.errors import InvalidParameterValue, ResourceDoesNotExist
from runledger.ingest.contract import entities
from runledger.ingest.writer import Writer, new_event, now_ms
from runledger.query import page_token as tokens
from runledger.query import reader, step_history
from runledger.query.read_service import ReadService
from runledger.query.search_filter import SearchFilterError
from runledger.dialects.wandb import exports as history_exports
from runledger.dialects.wandb import filters

NOTE_TAG = "mlflow.note.content"
COMMIT_TAG = "mlflow.source.git.commit"
MAX_PAGE = 1000
MAX_SAMPLES = 100_000
_FAR = 1 << 62


@dataclass
class Context:
    """Per request: the read model, the entity name and, for reads, one DuckDB cursor."""
    reader: ReadService
    entity: str
    user: str
    writer: Writer | None = None
    cur: duckdb.DuckDBPyConnection | None = None
    searches: dict[Any, Any] = field(default_factory=dict)
    access: Access = OPEN   # the caller's rights (runledger.auth); unrestricted with auth off
    exports: history_exports.Exports | None = None
    base_url: str = ""      # how the caller reached us: export URLs point back here

    def cursor(self) -> duckdb.DuckDBPyConnection:
        assert self.cur is not None, "reads run with the request's cursor"
        return self.cur


def _ctx(info: GraphQLResolveInfo) -> Context:
    found: Context = info.context
    return found


def iso(ms: int | None) -> str | None:
    """W&B's DateTime: UTC, second precision, no zone suffix."""
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def config_value(text: str) -> Any:
    """A param's text as a config value: numbers and Python booleans (how MLflow logs them) are
    read back as such, anything else stays text."""
    if text in ("True", "False"):
        return text == "True"
    if text and (text[0].isdigit() or text[0] in "-."):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        if isinstance(value, (int, float)):
            return value
    return text


def param_text(value: Any) -> str:
    """A config value as the param text MLflow's Python client would log for it."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, float)):
        return repr(value)
    return orjson.dumps(value).decode()


def _finite(v: Any) -> Any:
    if isinstance(v, str):  # MLflow JSON's "NaN"
        return None
    return v if v is None or math.isfinite(v) else None


# ----- projects

def _project(ctx: Context, exp: dict[str, Any]) -> dict[str, Any]:
    return {"id": exp["experiment_id"], "internalId": exp["experiment_id"], "name": exp["name"],
            "entityName": ctx.entity, "entity": {"id": ctx.entity, "name": ctx.entity}, "description": None, "createdAt": iso(exp.get("creation_time")) or iso(0),
            "isBenchmark": False, "readOnly": False, "user": None, "_experiment_id": exp["experiment_id"]}


def resolve_project(_root: Any, info: GraphQLResolveInfo, name: str | None = None,
                    entityName: str | None = None) -> dict[str, Any] | None:  # noqa: N803
    ctx = _ctx(info)
    if not name or (entityName and entityName != ctx.entity):
        return None
    # One small read (not the experiment with its tags): every history page asks this again.
    row = ctx.cursor().execute("SELECT experiment_id, name, creation_time FROM experiments "
                               "WHERE name = ? AND lifecycle_stage = 'active'", [name]).fetchone()
    if row is None or not ctx.access.read_scope().allows(row[0]):
        return None   # an experiment the caller may not read is absent, as in W&B
    return _project(ctx, {"experiment_id": row[0], "name": row[1], "creation_time": row[2]})


def resolve_models(_root: Any, info: GraphQLResolveInfo, entityName: str | None = None,  # noqa: N803
                   after: str | None = None, first: int | None = None, order: str | None = None) -> dict[str, Any]:
    ctx = _ctx(info)
    if entityName and entityName != ctx.entity:
        return {"edges": [], "pageInfo": {"endCursor": None, "hasNextPage": False, "hasPreviousPage": False}}
    offset = _offset(after)
    limit = min(max(first or 50, 1), MAX_PAGE)
    found = reader.search_experiments(ctx.cursor(), filter_string=None, order_by=["creation_time ASC"],
                                      view_type="ACTIVE_ONLY", max_results=limit, page_token=None
                                      if not offset else reader.encode_page_token(offset))
    scope = ctx.access.read_scope()
    exps = [e for e in found.get("experiments", []) if scope.allows(e["experiment_id"])]
    edges = [{"node": _project(ctx, e), "cursor": _cursor_token(None, offset + i + 1)} for i, e in enumerate(exps)]
    return {"edges": edges, "pageInfo": {"endCursor": edges[-1]["cursor"] if edges else None,
                                         "hasNextPage": "next_page_token" in found, "hasPreviousPage": offset > 0}}


# ----- runs

def _cursor_token(snapshot: str | None, offset: int) -> str:
    return tokens.encode({"cursor": snapshot, "offset": offset})


def _offset(after: str | None) -> int:
    if not after:
        return 0
    try:
        offset = tokens.decode(after).get("offset")
    except tokens.BadPageToken:
        offset = None
    if not tokens.non_negative_int(offset):
        raise InvalidParameterValue(f"Invalid cursor: {limits.shown_value(after)}")
    return offset


def _search(ctx: Context, project: dict[str, Any], raw_filters: Any, order: str | None) -> Any:
    key = (project["_experiment_id"], raw_filters if isinstance(raw_filters, str) else orjson.dumps(raw_filters),
           order or "")
    ids = ctx.searches.get(key)
    if ids is None:
        try:
            tree, terms = filters.parse_filters(raw_filters), filters.parse_order(order)
        except SearchFilterError as e:
            raise InvalidParameterValue(str(e)) from e
        ids = reader.search_run_ids(ctx.cursor(), [project["_experiment_id"]], tree, terms,
                                    ctx.reader.latest_table)
        ctx.searches[key] = ids
    return ids


def resolve_run_count(project: dict[str, Any], info: GraphQLResolveInfo, filters: Any = None) -> int:  # noqa: A002
    ctx = _ctx(info)
    # The client asks runCount and runs with the same filters in one document: one search serves
    # both (the count does not depend on the order, so the runs field's order is used).
    order = info.variable_values.get("order") if isinstance(info.variable_values, dict) else None
    return len(_search(ctx, project, filters, order))


def resolve_runs(project: dict[str, Any], info: GraphQLResolveInfo, filters: Any = None,  # noqa: A002
                 after: str | None = None, first: int | None = None, order: str | None = None) -> dict[str, Any]:
    ctx = _ctx(info)
    limit = min(max(first or 50, 1), MAX_PAGE)
    snapshot, offset = None, 0
    ids: Any = None
    if after:
        doc = _decode(after)
        snapshot, offset = doc.get("cursor"), doc["offset"]
        if snapshot:
            ids = ctx.reader.search_cursors.get(snapshot)
            if ids is None:
                raise InvalidParameterValue("This cursor has expired (or was issued by another replica); "
                                            "list the runs again.")
    if ids is None:
        ids = _search(ctx, project, filters, order)
        if len(ids) > offset + limit and snapshot is None:
            snapshot = ctx.reader.search_cursors.put(ids)
    page = ids[offset:offset + limit]
    if not isinstance(page, list):
        page = page.to_pylist()
    runs = reader.cached_runs(ctx.cursor(), page, ctx.reader.latest_table, [project["_experiment_id"]],
                              ctx.reader.run_cache)
    edges = [{"node": RunNode(ctx, r["info"]["run_id"], r), "cursor": _cursor_token(snapshot, offset + i + 1)}
             for i, r in enumerate(runs)]
    return {"edges": edges, "totalCount": len(ids),
            "pageInfo": {"endCursor": edges[-1]["cursor"] if edges else after,
                         "hasNextPage": len(ids) > offset + limit, "hasPreviousPage": offset > 0}}


def _decode(after: str) -> dict[str, Any]:
    try:
        doc = tokens.decode(after)
    except tokens.BadPageToken:
        doc = {}
    if not tokens.non_negative_int(doc.get("offset")) or not isinstance(doc.get("cursor"), (str, type(None))):
        raise InvalidParameterValue(f"Invalid cursor: {limits.shown_value(after)}")
    return doc


def resolve_run(project: dict[str, Any], info: GraphQLResolveInfo, name: str) -> "RunNode | None":
    ctx = _ctx(info)
    row = ctx.cursor().execute(
        "SELECT experiment_id, start_time, lifecycle_stage FROM runs WHERE run_id = ?", [name]).fetchone()
    if row is None or row[0] != project["_experiment_id"] or row[2] != "active":
        return None
    return RunNode(ctx, name, None, start_time=row[1])


class RunNode:
    """A run as W&B's `Run` type. Built from an MLflow run (runs/search's JSON), or from its id
    alone (the history fields need only that), loading the rest on first use."""

    def __init__(self, ctx: Context, run_id: str, mlflow: dict[str, Any] | None, start_time: int | None = None):
        self._ctx = ctx
        self.run_id = run_id
        self._mlflow = mlflow
        self._start_time = start_time if mlflow is None else mlflow["info"].get("start_time")

    @property
    def _run(self) -> dict[str, Any]:
        if self._mlflow is None:
            found = reader.cached_runs(self._ctx.cursor(), [self.run_id], self._ctx.reader.latest_table, None,
                                       self._ctx.reader.run_cache)
            if not found:
                raise ResourceDoesNotExist(entities.run_not_found(self.run_id))
            self._mlflow = found[0]
        return self._mlflow

    def _tags(self) -> dict[str, str]:
        # Read by four fields of every run on a page: built once per node.
        found = self.__dict__.get("_tag_map")
        if found is None:
            found = self.__dict__["_tag_map"] = {t["key"]: t["value"] for t in self._run["data"].get("tags", [])}
        return found

    @property
    def id(self) -> str:
        return self.run_id

    name = id

    @property
    def displayName(self) -> str | None:  # noqa: N802
        return self._run["info"].get("run_name")

    @property
    def projectId(self) -> str:  # noqa: N802
        return self._run["info"]["experiment_id"]

    @property
    def tags(self) -> list[str]:
        return sorted(k for k, v in self._tags().items() if v == "" and not k.startswith("mlflow."))

    @property
    def state(self) -> str:
        status = self._run["info"].get("status", "RUNNING")
        return filters.STATE_OF_STATUS.get(status, status.lower())

    @property
    def config(self) -> str:
        return orjson.dumps({p["key"]: {"value": config_value(p["value"]), "desc": None}
                             for p in self._run["data"].get("params", [])}).decode()

    @property
    def summaryMetrics(self) -> str:  # noqa: N802
        metrics = self._run["data"].get("metrics", [])
        summary: dict[str, Any] = {m["key"]: _finite(m["value"]) for m in metrics}
        if metrics:
            last = max(m["timestamp"] for m in metrics)
            summary["_step"] = max(m["step"] for m in metrics)
            summary["_timestamp"] = last / 1000
            summary["_runtime"] = max(last - (self._start_time or last), 0) / 1000
        return orjson.dumps(summary).decode()

    systemMetrics = "{}"
    sweepName = None
    group = None
    jobType = None
    readOnly = False
    historyLineCount = None

    @property
    def commit(self) -> str | None:
        return self._tags().get(COMMIT_TAG)

    @property
    def createdAt(self) -> str | None:  # noqa: N802
        return iso(self._run["info"].get("start_time"))

    @property
    def heartbeatAt(self) -> str | None:  # noqa: N802
        info = self._run["info"]
        return iso(info.get("end_time") or info.get("start_time"))

    updatedAt = heartbeatAt

    @property
    def notes(self) -> str | None:
        return self._tags().get(NOTE_TAG)

    description = notes

    @property
    def user(self) -> dict[str, Any]:
        user = self._run["info"].get("user_id") or ""
        return {"id": user, "name": user, "username": user}

    # --- history

    def historyKeys(self, info: GraphQLResolveInfo, format: str | None = None) -> Any:  # noqa: N802,A002
        return step_history.history_keys(self._ctx.cursor(), self.run_id)

    def history(self, info: GraphQLResolveInfo, samples: int | None = None, minStep: int | None = None,  # noqa: N803
                maxStep: int | None = None) -> list[str]:  # noqa: N803
        cur = self._ctx.cursor()
        if minStep is None and maxStep is None:
            rows = step_history.sampled_rows(cur, self.run_id, self._start_time, samples=_samples(samples, 500))
        else:
            rows = step_history.history_rows(cur, self.run_id, self._start_time, min_step=minStep or 0,
                                             max_step=_FAR if maxStep is None else maxStep,
                                             limit=_samples(samples, _FAR))
        return [orjson.dumps(r).decode() for r in rows]

    def events(self, info: GraphQLResolveInfo, samples: int | None = None) -> list[str]:
        return []  # no system metrics are recorded

    def sampledHistory(self, info: GraphQLResolveInfo, specs: list[str]) -> list[list[dict[str, Any]]]:  # noqa: N802
        return [self._sampled(spec) for spec in specs]

    def _sampled(self, raw: Any) -> list[dict[str, Any]]:
        try:
            spec = orjson.loads(raw) if isinstance(raw, str) else raw
        except orjson.JSONDecodeError:
            raise InvalidParameterValue("A history spec is not valid JSON") from None
        if not isinstance(spec, dict) or not isinstance(spec.get("keys", []), list):
            raise InvalidParameterValue("A history spec is an object with a list of keys")
        keys = [k for k in spec.get("keys") or [] if isinstance(k, str)]
        metric_keys = [k for k in keys if k not in step_history.SPECIAL_KEYS]
        cur = self._ctx.cursor()
        if "minStep" in spec or "maxStep" in spec:
            rows = step_history.history_rows(
                cur, self.run_id, self._start_time, min_step=int(spec.get("minStep") or 0),
                max_step=int(spec["maxStep"]) + 1 if spec.get("maxStep") is not None else _FAR,
                limit=_FAR, keys=metric_keys or None)
        else:
            rows = step_history.sampled_rows(cur, self.run_id, self._start_time,
                                             samples=_samples(spec.get("samples"), 500), keys=metric_keys or None)
        if not metric_keys:
            return rows
        # A row holds the requested keys, and only rows holding all of them are returned
        # (as W&B's keyed history and scan do).
        wanted = set(keys) | {"_step"}
        return [{k: v for k, v in r.items() if k in wanted} for r in rows if all(k in r for k in metric_keys)]

    def parquetHistory(self, info: GraphQLResolveInfo, liveKeys: list[str]) -> dict[str, list[Any]]:  # noqa: N802,N803
        # A finished run is one exported file (exports.py); a running one has none, and the client
        # then reads every row through history pages (its cache could otherwise go stale).
        ctx = self._ctx
        cur = ctx.cursor()
        found = cur.execute("SELECT status FROM runs WHERE run_id = ?", [self.run_id]).fetchone()
        if ctx.exports is None or found is None or found[0] == "RUNNING":
            return {"parquetUrls": [], "liveData": []}
        version = ctx.exports.version(cur, self.run_id, self._start_time)
        if version is None or not ctx.exports.handed_out(self.run_id, version):
            return {"parquetUrls": [], "liveData": []}
        files = ctx.exports.path(cur, self.run_id, self._start_time, version)   # written now, on this snapshot
        if files is None:
            return {"parquetUrls": [], "liveData": []}
        user = ctx.access.username or ""
        return {"parquetUrls": [ctx.exports.url(ctx.base_url, self.run_id, version, n, user) for n in range(len(files))],
                "liveData": []}


def _samples(value: Any, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or value < 1:
        raise InvalidParameterValue(f"samples must be a positive integer, got {limits.shown_value(value)}")
    return min(value, MAX_SAMPLES) if default != _FAR else value


# ----- viewer and server

def resolve_viewer(_root: Any, info: GraphQLResolveInfo) -> dict[str, Any]:
    ctx = _ctx(info)
    name = ctx.entity
    user = ctx.access.username or name
    return {"id": user, "name": user, "username": user, "email": None, "admin": False, "flags": "{}",
            "entity": name, "deletedAt": None, "apiKeys": {"edges": []},
            "teams": {"edges": [{"node": {"id": name, "name": name}}]}}


def resolve_server_info(_root: Any, info: GraphQLResolveInfo) -> dict[str, Any]:
    return {"features": [], "latestLocalVersionInfo": None, "cliVersionInfo": None}


# ----- writes (run.update(), run.summary.update(), api's update_state, run.delete())

async def resolve_upsert_bucket(_root: Any, info: GraphQLResolveInfo, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002
    ctx = _ctx(info)
    assert ctx.writer is not None
    run_id = input.get("id") or input.get("name")
    if not run_id:
        raise InvalidParameterValue("upsertBucket needs the run's id")
    if ctx.writer.catalog.run(run_id) is None and not input.get("id"):
        raise InvalidParameterValue("Creating runs through W&B's API (api.create_run) is not supported: "
                                    "log runs with MLflow, the stream API or Comet")
    run_ref = ctx.writer.writable_run(run_id)
    ctx.access.require(run_ref.experiment_id, Permission.EDIT)
    with ctx.reader.cursor() as cur:
        found = reader.runs_json(cur, [run_id], ctx.reader.latest_table)
    if not found:
        raise ResourceDoesNotExist(entities.run_not_found(run_id))
    current = RunNode(ctx, run_id, found[0])
    plan = _plan(current, input)
    user, exp = ctx.user, run_ref.experiment_id
    if plan.batch["params"] or plan.batch["tags"] or plan.batch["metrics"]["keys"]:
        # One event: a changed param rejects all of it (params are immutable), nothing half-applied.
        await ctx.writer.commit(new_event("RunBatchLogged", plan.batch, user=user, run_id=run_id, experiment_id=exp))
    if plan.update:
        await ctx.writer.commit(new_event("RunUpdated", plan.update, user=user, run_id=run_id, experiment_id=exp))
    if plan.removed_labels:
        await ctx.writer.commit_many([new_event("TagDeleted", {"key": k}, user=user, run_id=run_id, experiment_id=exp)
                                      for k in plan.removed_labels])
    return {"bucket": _Reloaded(ctx, run_id), "inserted": False}


class _Reloaded:
    """The run after a write, read (once, with a fresh cursor) when the document asks for its
    fields; the history fields open a cursor of their own when called."""

    def __init__(self, ctx: Context, run_id: str) -> None:
        self._ctx, self.run_id = ctx, run_id
        self._node: RunNode | None = None

    def _load(self) -> RunNode:
        if self._node is None:
            with self._ctx.reader.cursor() as cur:
                found = reader.runs_json(cur, [self.run_id], self._ctx.reader.latest_table)
            if not found:
                raise ResourceDoesNotExist(entities.run_not_found(self.run_id))
            self._node = RunNode(self._ctx, self.run_id, found[0])
        return self._node

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attr = getattr(RunNode, name, None)
        if callable(attr) and not isinstance(attr, property):
            def call(info: GraphQLResolveInfo, **kwargs: Any) -> Any:
                with self._ctx.reader.cursor() as cur:
                    ctx = Context(reader=self._ctx.reader, entity=self._ctx.entity, user=self._ctx.user, cur=cur)
                    return getattr(RunNode(ctx, self.run_id, self._load()._mlflow), name)(info, **kwargs)
            return call
        return getattr(self._load(), name)


@dataclass
class _Plan:
    batch: dict[str, Any]
    update: dict[str, Any] | None
    removed_labels: list[str]


def _plan(run: RunNode, input: dict[str, Any]) -> _Plan:  # noqa: A002
    params: list[list[str]] = []
    tags: list[list[str]] = []
    points: list[tuple[str, float | None, int, int]] = []
    removed: list[str] = []
    update: dict[str, Any] = {}
    if input.get("config") is not None:
        params = _config_changes(run, input["config"])
    if input.get("tags") is not None:
        wanted, have = set(input["tags"]), set(run.tags)
        for label in sorted(wanted - have):
            tags.append([limits.check_key(label, "tags"), ""])
        removed = sorted(have - wanted)
    note = input.get("notes") if input.get("notes") != run.notes else None
    if note is None and input.get("description") is not None and input.get("description") != run.notes:
        note = input["description"]
    if note is not None:
        tags.append([NOTE_TAG, limits.truncate(note, limits.MAX_RUN_TAG_VALUE_LENGTH)])
    if input.get("displayName") and input["displayName"] != run.displayName:
        update["run_name"] = limits.check_length(input["displayName"], limits.MAX_RUN_NAME_LENGTH, "displayName")
    if input.get("state"):
        status = filters.STATUS_OF_STATE.get(str(input["state"]).lower())
        if status is None:
            raise InvalidParameterValue(f"Unknown run state {limits.shown_value(input['state'])}")
        if status != run._run["info"].get("status"):
            update["status"] = status
            if status != "RUNNING":
                update["end_time"] = now_ms()
    if input.get("summaryMetrics") is not None:
        points = _summary_changes(run, input["summaryMetrics"])
    if update:
        update = {"status": update.get("status"), "end_time": update.get("end_time"), "run_name": update.get("run_name")}
    return _Plan({"params": params, "tags": tags, "metrics": metrics_columns(points)}, update or None, removed)


def _json_object(raw: Any, what: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw) if isinstance(raw, str) else raw
    except orjson.JSONDecodeError:
        raise InvalidParameterValue(f"{what} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidParameterValue(f"{what} must be a JSON object")
    return doc


def _config_changes(run: RunNode, raw: Any) -> list[list[str]]:
    """New config keys become params. A changed value is sent too, so the fold refuses it with
    its own rule (params are immutable) and the caller gets that error; a removed key is refused
    here, since a param cannot be deleted."""
    doc = _json_object(raw, "config")
    have = {p["key"]: p["value"] for p in run._run["data"].get("params", [])}
    out = []
    for key, entry in doc.items():
        if key in ("_wandb", "wandb_version"):
            continue
        value = entry["value"] if isinstance(entry, dict) and "value" in entry else entry
        if key in have and config_value(have[key]) == value:
            continue
        out.append([limits.check_key(key, "config"), limits.truncate(param_text(value), limits.MAX_PARAM_VALUE_LENGTH)])
    missing = sorted(set(have) - set(doc))
    if missing:
        raise InvalidParameterValue(f"Config keys cannot be removed (they are logged params, which are immutable): "
                                    f"{', '.join(missing[:10])}")
    return out


def _summary_changes(run: RunNode, raw: Any) -> list[tuple[str, float | None, int, int]]:
    """A summary is the latest value of each metric: a changed or new number is logged as a new
    point (at the metric's last step, now). Keys starting with '_' are W&B's own; anything else
    that is not a number is refused, and so is removing a metric."""
    doc = _json_object(raw, "summaryMetrics")
    latest = {m["key"]: m for m in run._run["data"].get("metrics", [])}
    now = now_ms()
    points = []
    for key, value in doc.items():
        if key.startswith("_"):
            continue
        old = latest.get(key)
        if old is not None and _finite(old["value"]) == value:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise InvalidParameterValue(f"Summary value of {key!r} must be a number: Runledger's summary is the "
                                        f"latest value of each metric")
        points.append((limits.check_key(key, "summaryMetrics"), float(value), now, old["step"] if old else 0))
    missing = sorted(k for k in latest if k not in doc)
    if missing:
        raise InvalidParameterValue(f"Summary keys cannot be removed (they are logged metrics): {', '.join(missing[:10])}")
    return points


async def resolve_delete_run(_root: Any, info: GraphQLResolveInfo, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002
    ctx = _ctx(info)
    assert ctx.writer is not None
    run = ctx.writer.catalog.run(input["id"])
    if run is None:
        raise ResourceDoesNotExist(entities.run_not_found(input["id"]))
    ctx.access.require(run.experiment_id, Permission.EDIT)
    await ctx.writer.commit(new_event("RunDeleted", {}, user=ctx.user, run_id=input["id"],
                                      experiment_id=run.experiment_id))
    return {"clientMutationId": input.get("clientMutationId")}


def attach(schema: GraphQLSchema) -> GraphQLSchema:
    """Bind the resolvers to the schema's fields (fields without one read the parent's key or
    attribute, graphql-core's default)."""
    bindings = {
        ("Query", "viewer"): resolve_viewer,
        ("Query", "project"): resolve_project,
        ("Query", "models"): resolve_models,
        ("Query", "serverInfo"): resolve_server_info,
        ("Project", "runCount"): resolve_run_count,
        ("Project", "runs"): resolve_runs,
        ("Project", "run"): resolve_run,
        ("Mutation", "upsertBucket"): resolve_upsert_bucket,
        ("Mutation", "deleteRun"): resolve_delete_run,
    }
    for (type_name, field_name), fn in bindings.items():
        schema.type_map[type_name].fields[field_name].resolve = fn  # type: ignore[attr-defined]
    return schema
