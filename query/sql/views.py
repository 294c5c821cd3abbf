"""The public SQL schema: stable views over the projector's internal tables.

Analysts' queries name only these views (query.sql.sandbox enforces it), so the internal
tables in projector/schema.py can change under them. The views live in their own schema,
`analytics`, because several share a name with an internal table (`runs`, `metrics`, ...);
SQL cursors put `analytics` first on their search path. docs/sql.md documents every column;
tests/test_sql_views.py checks that the documentation and these definitions agree.

Times an analyst filters by (run start, event ingest, ...) are TIMESTAMP (UTC); a metric
point's `timestamp` stays the client's epoch milliseconds, as MLflow logs it.
"""

from __future__ import annotations

import duckdb

SCHEMA = "analytics"
# The same views without the per-caller filter, for callers who may read everything
# (authentication off, admins): the cursor of such a caller resolves unqualified names here.
# DuckDB plans the filter's `run_id IN (SELECT ...)` as a join before it folds the "all" case
# to true, so the scoped views cost unrestricted callers a join over every metric point (about
# a fifth of a 10M-point aggregate). Queries cannot name this schema (query.sql.sandbox allows
# only `analytics`), so a restricted caller never reaches it.
UNSCOPED_SCHEMA = "analytics_unrestricted"


def _ts(column: str) -> str:
    return f"make_timestamp({column} * 1000)"


# Which experiments the querying cursor may read (docs/auth.md): the SQL engine sets these two
# variables on each query's own cursor (DuckDB variables belong to one connection, and a SELECT
# cannot set them); "all", "allow" (only the ids) or "deny" (all but the ids). A cursor that set
# nothing reads nothing. getvariable() is folded to a constant when the query is planned.
SCOPE_MODE, SCOPE_IDS = "runledger_scope_mode", "runledger_scope_ids"
_READABLE = (f"(CASE getvariable('{SCOPE_MODE}') WHEN 'all' THEN true "
             f"WHEN 'allow' THEN list_contains(getvariable('{SCOPE_IDS}'), {{col}}) "
             f"WHEN 'deny' THEN {{col}} IS NOT NULL AND NOT list_contains(getvariable('{SCOPE_IDS}'), {{col}}) "
             "ELSE false END)")


def readable(column: str) -> str:
    """A condition true for rows of an experiment the cursor may read."""
    return _READABLE.format(col=column)


# "all" first: the planner folds the condition to true (an unrestricted cursor that names
# `analytics.<view>` explicitly still reads everything; unqualified names go to UNSCOPED_SCHEMA).
_ALL = f"getvariable('{SCOPE_MODE}') = 'all'"


def _by_run(select: str) -> str:
    return (f"{select} WHERE {_ALL} OR run_id IN (SELECT r.run_id FROM main.runs r "
            f"WHERE {readable('r.experiment_id')})")


def _by_model(select: str) -> str:
    return (f"{select} WHERE {_ALL} OR model_id IN (SELECT m.model_id FROM main.logged_models m "
            f"WHERE {readable('m.experiment_id')})")


def definitions(latest_table: str) -> dict[str, str]:
    """View name -> SELECT over the internal tables, each answering only rows of experiments
    the cursor may read (`readable`). `latest_table` is the internal view of the server's
    latest-metric rule (RUNLEDGER_LATEST_METRIC), so `latest_metrics` agrees with the MLflow
    endpoints."""
    return _scoped(_unscoped(latest_table))


_EXPERIMENT_COLUMN = {"experiments": "experiment_id", "experiment_tags": "experiment_id", "runs": "r.experiment_id",
                      "datasets": "experiment_id", "logged_models": "experiment_id", "events": "experiment_id",
                      "artifacts": "experiment_id",
                      "rejections": "experiment_id"}
_RUN_VIEWS = ("params", "tags", "metrics", "latest_metrics", "run_activity")
_MODEL_VIEWS = ("logged_model_params", "logged_model_metrics")


def _scoped(views: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, select in views.items():
        if name in _EXPERIMENT_COLUMN:
            out[name] = f"{select}\n            WHERE {readable(_EXPERIMENT_COLUMN[name])}"
        elif name in _RUN_VIEWS:
            out[name] = _by_run(select)
        elif name in _MODEL_VIEWS:
            out[name] = _by_model(select)
        else:
            raise AssertionError(f"view {name} has no scope: every public view must name its experiment")
    return out


def _unscoped(latest_table: str) -> dict[str, str]:
    return {
        "experiments": f"""
            SELECT experiment_id, name, artifact_location, lifecycle_stage,
                   {_ts('creation_time')} AS creation_time, {_ts('last_update_time')} AS last_update_time,
                   {_ts('deleted_time')} AS deleted_time
            FROM main.experiments""",
        "experiment_tags": "SELECT experiment_id, key, value FROM main.experiment_tags",
        # A run of a deleted experiment reads as deleted: resolved here at query time, as the
        # MLflow reader does, because run rows are never rewritten by another partition's events.
        "runs": f"""
            SELECT r.run_id, r.run_name, r.experiment_id, e.name AS experiment_name, r.status, r.user_id,
                   {_ts('r.start_time')} AS start_time, {_ts('r.end_time')} AS end_time,
                   CASE WHEN r.lifecycle_stage = 'deleted' OR e.lifecycle_stage = 'deleted'
                        THEN 'deleted' ELSE 'active' END AS lifecycle_stage,
                   {_ts('r.deleted_time')} AS deleted_time, r.artifact_uri
            FROM main.runs r LEFT JOIN main.experiments e USING (experiment_id)""",
        "params": "SELECT run_id, key, value FROM main.params",
        "tags": "SELECT run_id, key, value FROM main.tags",
        "metrics": "SELECT run_id, key, value, timestamp, step FROM main.metrics",
        "latest_metrics": f"SELECT run_id, key, value, timestamp, step FROM main.{latest_table}",
        # One row per run that has metric points: when it last logged one. Read from the
        # projector's latest point per (run, key) under the timestamp rule (its greatest
        # timestamp, kept by the fold and recomputed after a rewind), so "which runs went
        # quiet" reads one row per key instead of every point.
        "run_activity": f"""
            SELECT run_id, last_metric_time, metric_keys FROM (
                SELECT run_id, {_ts('max(ts_timestamp)')} AS last_metric_time, count(*) AS metric_keys
                FROM main.latest_points GROUP BY run_id)""",
        "datasets": f"""
            SELECT run_id, experiment_id, name, digest, context, source_type, source, schema, profile, tags,
                   {_ts('logged_time')} AS logged_time
            FROM main.run_datasets""",
        "logged_models": f"""
            SELECT model_id, experiment_id, name, status, lifecycle_stage, model_type, source_run_id,
                   {_ts('creation_timestamp_ms')} AS creation_time,
                   {_ts('last_updated_timestamp_ms')} AS last_updated_time, artifact_uri, status_message
            FROM main.logged_models""",
        "logged_model_params": "SELECT model_id, key, value FROM main.logged_model_params",
        "logged_model_metrics": """
            SELECT model_id, run_id, key, value, timestamp, step, dataset_name, dataset_digest
            FROM main.logged_model_metrics""",
        # The files in artifact folders now (the bytes are in the artifact store; the events
        # view has every write and deletion).
        "artifacts": f"""
            SELECT CASE WHEN owner_type = 'run' THEN owner_id END AS run_id,
                   CASE WHEN owner_type = 'model' THEN owner_id END AS model_id,
                   experiment_id, path, size, sha256, {_ts('logged_time')} AS logged_time, actor, event_id
            FROM main.artifacts""",
        # The log itself: every event the projector has applied, accepted or not.
        "events": f"""
            SELECT "partition", "offset", {_ts('ingest_time')} AS ingest_time, user_id AS actor, type,
                   run_id, experiment_id,
                   CASE WHEN error_code IS NULL THEN 'accepted' ELSE 'rejected' END AS verdict,
                   error_code, message AS reason, event_id, payload,
                   actor_verified, api, request_id
            FROM main.event_log""",
        "rejections": f"""
            SELECT "partition", "offset", {_ts('ingest_time')} AS ingest_time, type, run_id, experiment_id,
                   error_code, reason, event_id
            FROM main.rejections""",
    }


def install(con: duckdb.DuckDBPyConnection, latest_table: str) -> None:
    """(Re)create the views, so their definitions always match this build. Views are cheap
    catalog entries; run at start-up before the projector writes."""
    for schema, views in ((SCHEMA, definitions(latest_table)), (UNSCOPED_SCHEMA, _unscoped(latest_table))):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for name, select in views.items():
            con.execute(f"CREATE OR REPLACE VIEW {schema}.{name} AS {select}")


PUBLIC_VIEWS: frozenset[str] = frozenset(definitions("latest_metrics"))
