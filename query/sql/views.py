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


def _ts(column: str) -> str:
    return f"make_timestamp({column} * 1000)"


def definitions(latest_table: str) -> dict[str, str]:
    """View name -> SELECT over the internal tables. `latest_table` is the internal view of the
    server's latest-metric rule (RUNLEDGER_LATEST_METRIC), so `latest_metrics` agrees with the
    MLflow endpoints."""
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
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    for name, select in definitions(latest_table).items():
        con.execute(f"CREATE OR REPLACE VIEW {SCHEMA}.{name} AS {select}")


PUBLIC_VIEWS: frozenset[str] = frozenset(definitions("latest_metrics"))
