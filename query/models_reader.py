"""Logged models (MLflow 3.x) read from DuckDB, shaped as MLflow's LoggedModel JSON, and
`logged-models/search` with MLflow's filter grammar for models.

The filter grammar (mlflow/utils/search_logged_model_utils.py) is AND-joined comparisons on
`attributes.<key>` (or a bare key), `metrics.<key>`, `params.<key>`, `tags.<key>`:
metrics and the two timestamps take =, !=, <, <=, >, >= with a number; everything else
takes =, !=, LIKE, ILIKE, IN, NOT IN with quoted strings. A metric comparison matches a model
if ANY point linked to it matches (optionally only points on the request's `datasets`).
It is parsed with query.search_filter's tokenizer and parser under a model profile.

order_by is a list of {field_name, ascending, dataset_name, dataset_digest}: an attribute or
`metrics.<key>` (the model's latest point for the key: greatest timestamp, then step, then
smallest run id). Missing values sort last. Tie-breakers, as MLflow: creation time
descending (unless ordered on), then model id ascending (unless ordered on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import duckdb

from runledger.ingest.errors import InvalidParameterValue
from runledger.ingest.limits import shown_value
from runledger.ingest.catalog import ModelRef
from runledger.query import page_token as tokens
from runledger.query.search_filter import (
    _LIST_OPS, _NUMERIC_OPS, _STRING_OPS, Comparison, SearchFilterError, _parse_filter, _Profile,
)
from runledger.query.search_sql import _value_predicate

DEFAULT_MAX_RESULTS = 50  # SearchLoggedModels.max_results' proto default, what MLflow's server applies
MAX_RESULTS_LIMIT = 2 ** 31 - 1  # an int32 field

_COLUMNS = ("model_id, experiment_id, name, artifact_uri, creation_timestamp_ms, last_updated_timestamp_ms, "
            "status, lifecycle_stage, model_type, source_run_id, status_message")

# attribute name -> column of logged_models (alias lm)
_ATTRIBUTE_COLUMNS = {
    "model_id": "lm.model_id", "name": "lm.name", "status": "lm.status", "model_type": "lm.model_type",
    "source_run_id": "lm.source_run_id", "experiment_id": "lm.experiment_id", "artifact_uri": "lm.artifact_uri",
    "status_message": "lm.status_message", "lifecycle_stage": "lm.lifecycle_stage",
    "creation_timestamp_ms": "lm.creation_timestamp_ms", "last_updated_timestamp_ms": "lm.last_updated_timestamp_ms",
}
_ATTRIBUTE_ALIASES = {
    "creation_time": "creation_timestamp_ms", "creation_timestamp": "creation_timestamp_ms",
    "last_updated_timestamp": "last_updated_timestamp_ms", "artifact_location": "artifact_uri",
}
_NUMERIC_ATTRIBUTES = frozenset({"creation_timestamp_ms", "last_updated_timestamp_ms"})
_TEXT_OPS = _STRING_OPS + _LIST_OPS

# MLflow stores the status as its enum number; a filter may name it either way.
_STATUS_NAMES = {
    "LOGGED_MODEL_STATUS_UNSPECIFIED": "LOGGED_MODEL_STATUS_UNSPECIFIED",
    "UNSPECIFIED": "LOGGED_MODEL_STATUS_UNSPECIFIED", "0": "LOGGED_MODEL_STATUS_UNSPECIFIED",
    "LOGGED_MODEL_PENDING": "LOGGED_MODEL_PENDING", "PENDING": "LOGGED_MODEL_PENDING", "1": "LOGGED_MODEL_PENDING",
    "LOGGED_MODEL_READY": "LOGGED_MODEL_READY", "READY": "LOGGED_MODEL_READY", "2": "LOGGED_MODEL_READY",
    "LOGGED_MODEL_UPLOAD_FAILED": "LOGGED_MODEL_UPLOAD_FAILED", "FAILED": "LOGGED_MODEL_UPLOAD_FAILED",
    "3": "LOGGED_MODEL_UPLOAD_FAILED",
}
_STATUS_ORDER = ("CASE lm.status WHEN 'LOGGED_MODEL_STATUS_UNSPECIFIED' THEN 0 WHEN 'LOGGED_MODEL_PENDING' THEN 1 "
                 "WHEN 'LOGGED_MODEL_READY' THEN 2 WHEN 'LOGGED_MODEL_UPLOAD_FAILED' THEN 3 END")


class _ModelProfile(_Profile):
    def allowed_ops(self, entity: str, key: str) -> tuple[str, ...]:
        if entity == "metric":
            return _NUMERIC_OPS
        if entity in ("param", "tag"):
            return _TEXT_OPS
        return self.attribute_ops[key]


_MODELS = _ModelProfile(
    label="logged models",
    # MLflow accepts exactly these prefixes for logged models.
    entity_aliases={"attributes": "attribute", "metrics": "metric", "params": "param", "tags": "tag"},
    attribute_ops={k: (_NUMERIC_OPS if k in _NUMERIC_ATTRIBUTES else _TEXT_OPS) for k in _ATTRIBUTE_COLUMNS},
    attribute_aliases=_ATTRIBUTE_ALIASES,
    unfilterable={},
    orderable_entities=frozenset({"attribute", "metric"}),
    integer_times=False,
)


def parse_models_filter(text: str | None) -> list[Comparison]:
    return _parse_filter(text, _MODELS)


# ----- JSON

def _metric_value(v: float) -> float | str:
    return "NaN" if math.isnan(v) else v


def _compact(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != [] and v != {}}


def models_json(cur: duckdb.DuckDBPyConnection, model_ids: list[str]) -> list[dict[str, Any]]:
    """MLflow LoggedModel objects for `model_ids`, in that order (unknown ids are skipped)."""
    if not model_ids:
        return []
    ids = [model_ids]
    rows = {r[0]: r for r in cur.execute(
        f"SELECT {_COLUMNS} FROM logged_models WHERE model_id IN (SELECT unnest(?::VARCHAR[]))", ids).fetchall()}
    tags: dict[str, list[dict[str, str]]] = {}
    params: dict[str, list[dict[str, str]]] = {}
    for table, target in (("logged_model_tags", tags), ("logged_model_params", params)):
        for model_id, k, v in cur.execute(
                f"SELECT model_id, key, value FROM {table} WHERE model_id IN (SELECT unnest(?::VARCHAR[])) "
                "ORDER BY model_id, key", ids).fetchall():
            target.setdefault(model_id, []).append({"key": k, "value": v})
    metrics: dict[str, list[dict[str, Any]]] = {}
    for model_id, k, v, ts, step, run_id, ds_name, ds_digest in cur.execute(
            "SELECT model_id, key, value, timestamp, step, run_id, dataset_name, dataset_digest "
            "FROM logged_model_metrics WHERE model_id IN (SELECT unnest(?::VARCHAR[])) "
            "ORDER BY model_id, key, timestamp, step, run_id", ids).fetchall():
        metrics.setdefault(model_id, []).append(_compact({
            "key": k, "value": _metric_value(v), "timestamp": ts, "step": step, "dataset_name": ds_name,
            "dataset_digest": ds_digest, "model_id": model_id, "run_id": run_id}))
    out = []
    for model_id in model_ids:
        r = rows.get(model_id)
        if r is None:
            continue
        info = _compact({
            "model_id": r[0], "experiment_id": r[1], "name": r[2], "creation_timestamp_ms": r[4],
            "last_updated_timestamp_ms": r[5], "artifact_uri": r[3], "status": r[6],
            "status_message": r[10], "tags": tags.get(model_id),
        })
        # MLflow's server sets these two even when the request left them out, so they show as "".
        info["model_type"], info["source_run_id"] = r[8] or "", r[9] or ""
        out.append({"info": info, "data": _compact({"params": params.get(model_id),
                                                    "metrics": metrics.get(model_id)})})
    return out


def get_logged_model(cur: duckdb.DuckDBPyConnection, model_id: str, *, allow_deleted: bool = False
                     ) -> dict[str, Any] | None:
    row = cur.execute("SELECT lifecycle_stage FROM logged_models WHERE model_id = ?", [model_id]).fetchone()
    if row is None or (row[0] == "deleted" and not allow_deleted):
        return None
    found = models_json(cur, [model_id])
    return found[0] if found else None


class ReadModelModelCatalog:
    """ingest.catalog.ModelCatalog answered from the read model."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def logged_model(self, model_id: str) -> ModelRef | None:
        with self.store.cursor() as cur:
            row = cur.execute("SELECT model_id, experiment_id, lifecycle_stage FROM logged_models WHERE model_id = ?",
                              [model_id]).fetchone()
        return None if row is None else ModelRef(*row)

    def logged_model_json(self, model_id: str) -> dict[str, Any]:
        with self.store.cursor() as cur:
            model = get_logged_model(cur, model_id, allow_deleted=True)
        assert model is not None, f"logged model {model_id} was applied but is not readable"
        return model


# ----- search

@dataclass(frozen=True)
class DatasetFilter:
    name: str
    digest: str | None


@dataclass(frozen=True)
class ModelOrder:
    field_name: str
    ascending: bool
    dataset_name: str | None
    dataset_digest: str | None

    def as_json(self) -> dict[str, Any]:
        return {"field_name": self.field_name, "ascending": self.ascending, "dataset_name": self.dataset_name,
                "dataset_digest": self.dataset_digest}


def _dataset_clause(datasets: list[DatasetFilter], params: list[Any]) -> str:
    parts = []
    for d in datasets:
        if d.digest is None:
            parts.append("m.dataset_name = ?")
            params.append(d.name)
        else:
            parts.append("(m.dataset_name = ? AND m.dataset_digest = ?)")
            params.extend([d.name, d.digest])
    return "(" + " OR ".join(parts) + ")"


def compile_where(comparisons: list[Comparison], datasets: list[DatasetFilter]) -> tuple[str, list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    has_metric = False
    for c in comparisons:
        if c.entity == "attribute":
            column = _ATTRIBUTE_COLUMNS[c.key]
            value: Any = c.value
            if c.key == "status":
                value = (tuple(_STATUS_NAMES.get(v, v) for v in value) if isinstance(value, tuple)
                         else _STATUS_NAMES.get(value, value) if c.op in ("=", "!=") else value)
            parts.append(_value_predicate(column, c.op, value, params))
        elif c.entity in ("param", "tag"):
            table = "logged_model_params" if c.entity == "param" else "logged_model_tags"
            params.append(c.key)
            pred = _value_predicate("k.value", c.op, c.value, params)
            parts.append(f"EXISTS (SELECT 1 FROM {table} k WHERE k.model_id = lm.model_id AND k.key = ? AND {pred})")
        elif c.entity == "metric":
            has_metric = True
            params.append(c.key)
            cmp = _value_predicate("m.value", c.op, float(c.value), params)  # type: ignore[arg-type]
            # NaN satisfies only "!=" (DuckDB would order NaN above every number).
            guard = f"(isnan(m.value) OR {cmp})" if c.op == "!=" else f"(NOT isnan(m.value) AND {cmp})"
            scope = f" AND {_dataset_clause(datasets, params)}" if datasets else ""
            parts.append("EXISTS (SELECT 1 FROM logged_model_metrics m WHERE m.model_id = lm.model_id "
                         f"AND m.key = ? AND {guard}{scope})")
        else:
            raise ValueError(f"unsupported entity {c.entity!r}")
    if datasets and not has_metric:
        # Datasets alone: models with any metric on one of them.
        parts.append("EXISTS (SELECT 1 FROM logged_model_metrics m WHERE m.model_id = lm.model_id "
                     f"AND {_dataset_clause(datasets, params)})")
    return (" AND ".join(f"({p})" for p in parts) if parts else "TRUE"), params


def compile_order_by(order: list[ModelOrder]) -> tuple[str, list[Any]]:
    items: list[str] = []
    params: list[Any] = []
    has_creation = has_model_id = False
    for o in order:
        direction = "ASC" if o.ascending else "DESC"
        if "." not in o.field_name:
            name = _ATTRIBUTE_ALIASES.get(o.field_name, o.field_name)
            if name not in _ATTRIBUTE_COLUMNS:
                raise InvalidParameterValue(f"Invalid order by field name: {o.field_name}")
            has_creation |= name == "creation_timestamp_ms"
            has_model_id |= name == "model_id"
            column = {"status": _STATUS_ORDER,
                      "experiment_id": "TRY_CAST(lm.experiment_id AS HUGEINT)"}.get(name, _ATTRIBUTE_COLUMNS[name])
            items.append(f"{column} {direction} NULLS LAST")
            continue
        entity, key = o.field_name.split(".", 1)
        if entity != "metrics":
            raise InvalidParameterValue(f"Invalid order by field name: {o.field_name}. Only metrics are supported.")
        where = "m.model_id = lm.model_id AND m.key = ?"
        params.append(key)
        if o.dataset_name is not None:
            where += " AND m.dataset_name = ?"
            params.append(o.dataset_name)
        if o.dataset_digest is not None:
            where += " AND m.dataset_digest = ?"
            params.append(o.dataset_digest)
        items.append(f"(SELECT m.value FROM logged_model_metrics m WHERE {where} "
                     f"ORDER BY m.timestamp DESC, m.step DESC, m.run_id ASC LIMIT 1) {direction} NULLS LAST")
    if not has_creation:
        items.append("lm.creation_timestamp_ms DESC")
    if not has_model_id:
        items.append("lm.model_id ASC")
    return ", ".join(items), params


def _encode_token(experiment_ids: list[str], filter_string: str | None, order: list[ModelOrder], offset: int) -> str:
    # MLflow's own token layout (SearchLoggedModelsPaginationToken): base64 JSON naming the query.
    doc = {"experiment_ids": experiment_ids, "filter_string": filter_string,
           "order_by": [o.as_json() for o in order] or None, "offset": offset}
    return tokens.encode(doc, urlsafe=False)


def _decode_token(token: str, experiment_ids: list[str], filter_string: str | None, order: list[ModelOrder]) -> int:
    try:
        doc = tokens.decode(token, urlsafe=False)
    except tokens.BadPageToken as e:
        raise InvalidParameterValue(f"Invalid page token: {shown_value(token)}. {e}") from None
    if doc.get("experiment_ids") != experiment_ids:
        raise InvalidParameterValue(
            "Experiment IDs in the page token do not match the requested experiment IDs. "
            f"Expected: {experiment_ids}. Found: {doc.get('experiment_ids')}")
    if (doc.get("filter_string") or None) != filter_string:
        raise InvalidParameterValue(
            "Filter string in the page token does not match the requested filter string. "
            f"Expected: {filter_string}. Found: {doc.get('filter_string')}")
    wanted = [o.as_json() for o in order] or None
    if (doc.get("order_by") or None) != wanted:
        raise InvalidParameterValue(
            "Order by in the page token does not match the requested order by. "
            f"Expected: {wanted}. Found: {doc.get('order_by')}")
    offset = doc.get("offset") or 0
    if not tokens.non_negative_int(offset):
        raise InvalidParameterValue(f"Invalid page token: {shown_value(token)}.")
    return offset


def search_logged_models(cur: duckdb.DuckDBPyConnection, *, experiment_ids: list[str], filter_string: str | None,
                         datasets: list[DatasetFilter], max_results: int | None, order_by: list[ModelOrder],
                         page_token: str | None) -> dict[str, Any]:
    """One page of active logged models of `experiment_ids`, as MLflow's search."""
    filter_string = filter_string or None
    for exp_id in experiment_ids:
        if not exp_id.strip().lstrip("-").isdigit():
            raise InvalidParameterValue(f"Invalid experiment ID {shown_value(exp_id)}. Experiment ID must be a valid integer.")
    dataset_filters, order = datasets, order_by
    if max_results is None or max_results == 0:
        max_results = DEFAULT_MAX_RESULTS
    if not 0 < max_results <= MAX_RESULTS_LIMIT:
        raise InvalidParameterValue(
            f"Invalid value {max_results} for parameter 'max_results' supplied. It must be a positive integer.")
    offset = _decode_token(page_token, experiment_ids, filter_string, order) if page_token else 0
    try:
        where, where_params = compile_where(parse_models_filter(filter_string), dataset_filters)
    except SearchFilterError as e:
        raise InvalidParameterValue(f"Invalid filter string: {shown_value(filter_string)}. {e}") from e
    order_sql, order_params = compile_order_by(order)
    ids = [r[0] for r in cur.execute(
        "SELECT lm.model_id FROM logged_models lm WHERE lm.lifecycle_stage != 'deleted' "
        f"AND lm.experiment_id IN (SELECT unnest(?::VARCHAR[])) AND ({where}) ORDER BY {order_sql} LIMIT ? OFFSET ?",
        [experiment_ids, *where_params, *order_params, max_results + 1, offset]).fetchall()]
    out: dict[str, Any] = {"models": models_json(cur, ids[:max_results])}
    if len(ids) > max_results:
        out["next_page_token"] = _encode_token(experiment_ids, filter_string, order, offset + max_results)
    return _compact(out)
