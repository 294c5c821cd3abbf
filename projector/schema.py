"""The DuckDB read model. Every table is derived from the log and can be rebuilt from it.

Designed to grow without a rewrite: `event_log` keeps one row per event with its log
position, ingest time, acting user, verdict and (for non-metric events) payload, which is what
a per-run audit trail and as-of reads will fold again; query-side SQL views can be layered on
these tables. `consumer_offsets` is written in the same transaction as the rows (invariant 3).
"""

from __future__ import annotations

import duckdb

SCHEMA_VERSION = 6

# Latest metric per (run, key) under each rule (see projector.rules.newer), both always
# maintained so that RUNLEDGER_LATEST_METRIC can be switched without rebuilding. They are
# stored as one table, `latest_points` (one upsert per batch instead of two), and read through
# one view per rule with the plain (run_id, key, value, timestamp, step) shape.
LATEST_TABLES = {"timestamp": "latest_metrics", "step": "latest_metrics_by_step"}
LATEST_COLUMNS = {"timestamp": ("ts_value", "ts_timestamp", "ts_step"),
                  "step": ("step_value", "step_timestamp", "step_step")}

DDL = [
    "CREATE TABLE IF NOT EXISTS schema_info (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS experiments (
        experiment_id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, artifact_location VARCHAR,
        lifecycle_stage VARCHAR NOT NULL, creation_time BIGINT, last_update_time BIGINT,
        deleted_time BIGINT)""",
    """CREATE TABLE IF NOT EXISTS experiment_tags (
        experiment_id VARCHAR, key VARCHAR, value VARCHAR, PRIMARY KEY (experiment_id, key))""",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id VARCHAR PRIMARY KEY, experiment_id VARCHAR NOT NULL, run_name VARCHAR,
        user_id VARCHAR, status VARCHAR NOT NULL, start_time BIGINT, end_time BIGINT,
        lifecycle_stage VARCHAR NOT NULL, deleted_time BIGINT, artifact_uri VARCHAR)""",
    "CREATE TABLE IF NOT EXISTS params (run_id VARCHAR, key VARCHAR, value VARCHAR, PRIMARY KEY (run_id, key))",
    "CREATE TABLE IF NOT EXISTS tags (run_id VARCHAR, key VARCHAR, value VARCHAR, PRIMARY KEY (run_id, key))",
    # Full history, append-only; an exact duplicate point is stored once (see store.apply).
    """CREATE TABLE IF NOT EXISTS metrics (
        run_id VARCHAR NOT NULL, key VARCHAR NOT NULL, value DOUBLE NOT NULL,
        timestamp BIGINT NOT NULL, step BIGINT NOT NULL)""",
    # Points hidden by a rewind (RunRewound), moved here from `metrics` with the rewind's event id.
    """CREATE TABLE IF NOT EXISTS rewound_metrics (
        run_id VARCHAR NOT NULL, key VARCHAR NOT NULL, value DOUBLE NOT NULL,
        timestamp BIGINT NOT NULL, step BIGINT NOT NULL, rewind_event_id VARCHAR NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS latest_points (
        run_id VARCHAR, key VARCHAR, ts_value DOUBLE NOT NULL, ts_timestamp BIGINT NOT NULL,
        ts_step BIGINT NOT NULL, step_value DOUBLE NOT NULL, step_timestamp BIGINT NOT NULL,
        step_step BIGINT NOT NULL, PRIMARY KEY (run_id, key))""",
    *[f"""CREATE VIEW IF NOT EXISTS {LATEST_TABLES[rule]} AS SELECT run_id, key, {v} AS value,
        {t} AS timestamp, {st} AS step FROM latest_points""" for rule, (v, t, st) in LATEST_COLUMNS.items()],
    # One row per dataset input of a run (MLflow's dataset + input edge + input tags);
    # `context` is the input tag mlflow.data.context, kept as a column for search filters.
    """CREATE TABLE IF NOT EXISTS run_datasets (
        run_id VARCHAR, name VARCHAR, digest VARCHAR, context VARCHAR, source_type VARCHAR,
        source VARCHAR, schema VARCHAR, profile VARCHAR, tags JSON, experiment_id VARCHAR,
        logged_time BIGINT, PRIMARY KEY (run_id, name, digest))""",
    # MLflow 3.x logged models (their own partition key: the model id), their params and tags,
    # and the metric points runs logged against them (from the run's partition, linked by
    # model_id at query time; first point per (model, key, timestamp, step, run) wins).
    """CREATE TABLE IF NOT EXISTS logged_models (
        model_id VARCHAR PRIMARY KEY, experiment_id VARCHAR NOT NULL, name VARCHAR NOT NULL,
        artifact_uri VARCHAR, creation_timestamp_ms BIGINT, last_updated_timestamp_ms BIGINT,
        status VARCHAR NOT NULL, lifecycle_stage VARCHAR NOT NULL, model_type VARCHAR,
        source_run_id VARCHAR, status_message VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS logged_model_params (
        model_id VARCHAR, key VARCHAR, value VARCHAR, PRIMARY KEY (model_id, key))""",
    """CREATE TABLE IF NOT EXISTS logged_model_tags (
        model_id VARCHAR, key VARCHAR, value VARCHAR, PRIMARY KEY (model_id, key))""",
    """CREATE TABLE IF NOT EXISTS logged_model_metrics (
        model_id VARCHAR, key VARCHAR, timestamp BIGINT, step BIGINT, run_id VARCHAR,
        value DOUBLE NOT NULL, dataset_name VARCHAR, dataset_digest VARCHAR, experiment_id VARCHAR,
        PRIMARY KEY (model_id, key, timestamp, step, run_id))""",
    # The files in each run's and logged model's artifact folder, as the log says they were
    # written (ArtifactLogged) and deleted; the bytes are in the artifact store.
    """CREATE TABLE IF NOT EXISTS artifacts (
        owner_id VARCHAR, path VARCHAR, owner_type VARCHAR NOT NULL, experiment_id VARCHAR,
        size BIGINT, sha256 VARCHAR, logged_time BIGINT, actor VARCHAR, event_id VARCHAR,
        PRIMARY KEY (owner_id, path))""",
    # MLflow 3.x run inputs and outputs that are logged models (linked by id at query time).
    """CREATE TABLE IF NOT EXISTS run_model_inputs (
        run_id VARCHAR, model_id VARCHAR, experiment_id VARCHAR, logged_time BIGINT,
        PRIMARY KEY (run_id, model_id))""",
    """CREATE TABLE IF NOT EXISTS run_model_outputs (
        run_id VARCHAR, model_id VARCHAR, step BIGINT, experiment_id VARCHAR, logged_time BIGINT,
        PRIMARY KEY (run_id, model_id, step))""",
    """CREATE TABLE IF NOT EXISTS event_log (
        event_id VARCHAR PRIMARY KEY, "partition" INTEGER NOT NULL, "offset" BIGINT NOT NULL,
        type VARCHAR NOT NULL, experiment_id VARCHAR, run_id VARCHAR, ingest_time BIGINT,
        user_id VARCHAR, error_code VARCHAR, message VARCHAR, payload JSON,
        actor_verified BOOLEAN, request_id VARCHAR, api VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS rejections (
        event_id VARCHAR, "partition" INTEGER, "offset" BIGINT, type VARCHAR, run_id VARCHAR,
        experiment_id VARCHAR, ingest_time BIGINT, error_code VARCHAR, reason VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS consumer_offsets (
        topic VARCHAR, "partition" INTEGER, next_offset BIGINT NOT NULL, PRIMARY KEY (topic, "partition"))""",
]


def stored_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The schema version of an existing file, or None for a new (empty) one."""
    exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_info'").fetchone()
    if not exists or not exists[0]:
        return None
    row = con.execute("SELECT max(version) FROM schema_info").fetchone()
    return None if row is None else row[0]


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    for statement in DDL:
        con.execute(statement)
    if stored_version(con) is None:
        con.execute("INSERT INTO schema_info VALUES (?)", [SCHEMA_VERSION])
