"""W&B's run filters and order, in Runledger's search machinery (docs/wandb.md).

`api.runs(path, filters={...}, order="-summary_metrics.loss")` sends a Mongo-style document and
an order string. The document is parsed by query.search_tree.parse_mongo with the field names
below; the order becomes the MLflow order terms runs/search uses.

| W&B field | Runledger |
|---|---|
| `config.<k>` / `config.<k>.value` | param `<k>` |
| `summary_metrics.<k>` | latest metric `<k>` |
| `state` | run status (`finished` = FINISHED, ...) |
| `createdAt` / `created_at` | start time (ISO date, or epoch milliseconds) |
| `displayName` / `display_name` | run name |
| `name` / `id` | run id |
| `tags` | labels (tags with an empty value) |
| `username` / `user` | user id |
| `notes` / `description` | tag `mlflow.note.content` |
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable

from runledger.query.search_filter import OrderTerm, SearchFilterError
from runledger.query.search_tree import Node, parse_mongo

# W&B run states and MLflow statuses, both ways (crashed and preempted runs read as failed).
STATE_OF_STATUS = {"RUNNING": "running", "FINISHED": "finished", "FAILED": "failed", "KILLED": "killed",
                   "SCHEDULED": "pending"}
STATUS_OF_STATE = {"running": "RUNNING", "finished": "FINISHED", "failed": "FAILED", "crashed": "FAILED",
                   "killed": "KILLED", "preempted": "FAILED", "pending": "SCHEDULED"}


def _status(value: Any) -> Any:
    if isinstance(value, str):
        return STATUS_OF_STATE.get(value.lower(), value.upper())
    return value


def epoch_ms(value: Any) -> float:
    """An ISO 8601 date (UTC when it has no zone, as W&B's createdAt) or epoch milliseconds."""
    if isinstance(value, (int, float)):
        return float(value)
    parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp() * 1000.0


def _suffix(name: str, prefix: str) -> str | None:
    if not name.startswith(prefix):
        return None
    key = name[len(prefix):]
    if not key:
        raise SearchFilterError(f"Empty key in field {name!r}")
    return key


_ATTRIBUTES: dict[str, tuple[str, str, Callable[[Any], Any] | None]] = {
    "state": ("attribute", "status", _status),
    "createdAt": ("attribute", "start_time", epoch_ms), "created_at": ("attribute", "start_time", epoch_ms),
    "displayName": ("attribute", "run_name", None), "display_name": ("attribute", "run_name", None),
    "name": ("attribute", "run_id", None), "id": ("attribute", "run_id", None),
    "username": ("attribute", "user_id", None), "user": ("attribute", "user_id", None),
    "tags": ("label", "", None),
    "notes": ("tag", "mlflow.note.content", None), "description": ("tag", "mlflow.note.content", None),
}


def field(name: str) -> tuple[str, str, Callable[[Any], Any] | None]:
    """A W&B filter field as (entity, key, value converter)."""
    if name in _ATTRIBUTES:
        return _ATTRIBUTES[name]
    key = _suffix(name, "config.")
    if key is not None:
        return "param", key[:-len(".value")] if key.endswith(".value") else key, None
    key = _suffix(name, "summary_metrics.")
    if key is not None:
        return "metric", key, None
    raise SearchFilterError(
        f"Cannot filter runs on {name!r}: use config.<key>, summary_metrics.<key>, state, createdAt, tags, "
        "displayName, name or username")


def parse_filters(raw: Any) -> Node:
    """The `filters` variable (a JSON string or an object) as a filter tree."""
    import orjson

    if raw is None or raw == "":
        return parse_mongo({}, field)
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise SearchFilterError(f"filters is not valid JSON: {e}") from None
    return parse_mongo(raw, field)


_ORDER_ATTRIBUTES = {"created_at": "start_time", "createdAt": "start_time", "heartbeat_at": "end_time",
                     "heartbeatAt": "end_time", "display_name": "run_name", "displayName": "run_name",
                     "name": "run_id", "state": "status"}


def parse_order(raw: str | None) -> list[OrderTerm]:
    """`[+|-]<field>`; W&B's default (none given) is oldest first. Config values sort as text,
    as MLflow sorts params (docs/wandb.md)."""
    text = (raw or "").strip() or "+created_at"
    ascending = not text.startswith("-")
    name = text.lstrip("+-")
    if name in _ORDER_ATTRIBUTES:
        return [OrderTerm("attribute", _ORDER_ATTRIBUTES[name], ascending)]
    key = _suffix(name, "summary_metrics.")
    if key is not None:
        return [OrderTerm("metric", key, ascending)]
    key = _suffix(name, "config.")
    if key is not None:
        return [OrderTerm("param", key[:-len(".value")] if key.endswith(".value") else key, ascending)]
    raise SearchFilterError(f"Cannot order runs by {name!r}: use created_at, summary_metrics.<key> or "
                            "config.<key>, with + or -")
