"""Compile filters / order_by with query.search_sql and run them on a real in-memory DuckDB."""

from __future__ import annotations

import duckdb
import pytest

from runledger.query.search_filter import (
    parse_experiments_filter,
    parse_experiments_order_by,
    parse_runs_filter,
    parse_runs_order_by,
)
from runledger.query.search_sql import (
    compile_experiments_order_by,
    compile_experiments_where,
    compile_runs_order_by,
    compile_runs_where,
)

NAN = float("nan")

SCHEMA = """
CREATE TABLE runs(run_id VARCHAR PRIMARY KEY, experiment_id VARCHAR, run_name VARCHAR, user_id VARCHAR,
                  status VARCHAR, start_time BIGINT, end_time BIGINT, lifecycle_stage VARCHAR,
                  deleted_time BIGINT, artifact_uri VARCHAR);
CREATE TABLE params(run_id VARCHAR, key VARCHAR, value VARCHAR, PRIMARY KEY(run_id, key));
CREATE TABLE tags(run_id VARCHAR, key VARCHAR, value VARCHAR, PRIMARY KEY(run_id, key));
CREATE TABLE latest_metrics(run_id VARCHAR, key VARCHAR, value DOUBLE, timestamp BIGINT, step BIGINT,
                            PRIMARY KEY(run_id, key));
CREATE TABLE latest_metrics_by_step(run_id VARCHAR, key VARCHAR, value DOUBLE, timestamp BIGINT, step BIGINT,
                                    PRIMARY KEY(run_id, key));
CREATE TABLE run_datasets(run_id VARCHAR, name VARCHAR, digest VARCHAR, context VARCHAR);
CREATE TABLE experiments(experiment_id VARCHAR PRIMARY KEY, name VARCHAR, artifact_location VARCHAR,
                         lifecycle_stage VARCHAR, creation_time BIGINT, last_update_time BIGINT);
CREATE TABLE experiment_tags(experiment_id VARCHAR, key VARCHAR, value VARCHAR);
"""

INJECTION = "'; DROP TABLE runs; --"

RUNS = [
    # run_id, run_name, user_id, status, start_time, end_time, artifact_uri
    ("r1", "alpha", "alice", "FINISHED", 1000, 2000, "s3://b/r1"),
    ("r2", "beta", "bob", "RUNNING", 3000, None, "s3://b/r2"),
    ("r3", "Gamma", "alice", "FAILED", 2000, 2500, "file:///r3"),
    ("r4", "delta", "carol", "FINISHED", 2000, 4000, "s3://b/r4"),
]
# acc: r2 is NaN and r4 has none, for NaN / missing semantics.
LATEST = [("r1", "acc", 0.9), ("r2", "acc", NAN), ("r3", "acc", 0.5),
          ("r1", "loss", 0.1), ("r2", "loss", 0.2), ("r3", "loss", 0.2), ("r4", "loss", 0.3)]
LATEST_BY_STEP = [("r1", "acc", 0.1), ("r3", "acc", 0.7)]
PARAMS = [("r1", "lr", "0.01"), ("r2", "lr", "0.1"), ("r3", "lr", "0.001"), ("r4", "lr", "it's"),
          ("r1", "opt", "Adam"), ("r2", "opt", "adam"), ("r4", "opt", INJECTION)]
TAGS = [("r1", "t", "a"), ("r2", "t", "b"), ("r4", "t", "a"),
        ("r1", "team", "Vision"), ("r3", "team", "vision"), ("r2", "mlflow.runName", "beta")]
DATASETS = [("r1", "train_ds", "d1", "training"), ("r1", "eval_ds", "d2", "eval"), ("r2", "train_ds", "d3", None)]

EXPERIMENTS = [("0", "Default", 100, 100), ("1", "Vision", 300, 400), ("2", "nlp", 300, 300),
               ("10", "Vision-2", 200, None)]
EXPERIMENT_TAGS = [("1", "team", "vision"), ("2", "team", "nlp"), ("0", "note", INJECTION)]


@pytest.fixture()
def db():
    con = duckdb.connect()
    con.execute(SCHEMA)
    con.executemany("INSERT INTO runs VALUES (?, 'e1', ?, ?, ?, ?, ?, 'active', NULL, ?)", RUNS)
    con.executemany("INSERT INTO latest_metrics VALUES (?, ?, ?, 0, 0)", LATEST)
    con.executemany("INSERT INTO latest_metrics_by_step VALUES (?, ?, ?, 0, 0)", LATEST_BY_STEP)
    con.executemany("INSERT INTO params VALUES (?, ?, ?)", PARAMS)
    con.executemany("INSERT INTO tags VALUES (?, ?, ?)", TAGS)
    con.executemany("INSERT INTO run_datasets VALUES (?, ?, ?, ?)", DATASETS)
    con.executemany("INSERT INTO experiments VALUES (?, ?, 'loc', 'active', ?, ?)", EXPERIMENTS)
    con.executemany("INSERT INTO experiment_tags VALUES (?, ?, ?)", EXPERIMENT_TAGS)
    yield con
    con.close()


def search_runs(con, filter_text=None, order_by=None, table="latest_metrics", limit=None):
    where, where_params = compile_runs_where(parse_runs_filter(filter_text), table)
    order, order_params = compile_runs_order_by(parse_runs_order_by(order_by), table)
    sql = f"SELECT r.run_id FROM runs r WHERE {where} ORDER BY {order}"
    params = where_params + order_params
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [row[0] for row in con.execute(sql, params).fetchall()]


def matching(con, filter_text, table="latest_metrics"):
    return sorted(search_runs(con, filter_text, table=table))


def search_experiments(con, filter_text=None, order_by=None):
    where, where_params = compile_experiments_where(parse_experiments_filter(filter_text))
    order, order_params = compile_experiments_order_by(parse_experiments_order_by(order_by))
    sql = f"SELECT e.experiment_id FROM experiments e WHERE {where} ORDER BY {order}"
    return [row[0] for row in con.execute(sql, where_params + order_params).fetchall()]


# --- runs filters ----------------------------------------------------------


@pytest.mark.parametrize(
    "filter_text, expected",
    [
        (None, ["r1", "r2", "r3", "r4"]),
        ("metrics.acc > 0.6", ["r1"]),
        ("metrics.acc >= 0.5", ["r1", "r3"]),
        ("metrics.acc < 1e308", ["r1", "r3"]),
        ("metrics.acc <= 0.5", ["r3"]),
        ("metrics.acc = 0.9", ["r1"]),
        ("metrics.loss = 0.2", ["r2", "r3"]),
    ],
)
def test_metric_comparison_uses_latest_value_and_excludes_nan(db, filter_text, expected):
    assert matching(db, filter_text) == expected


def test_metric_not_equal_matches_nan_but_not_missing(db):
    assert matching(db, "metrics.acc != 0.9") == ["r2", "r3"]


def test_metric_filter_reads_the_requested_latest_table(db):
    assert matching(db, "metrics.acc > 0.5", table="latest_metrics_by_step") == ["r3"]


def test_untrusted_latest_table_name_is_refused():
    with pytest.raises(ValueError):
        compile_runs_where([], "latest_metrics; DROP TABLE runs")
    with pytest.raises(ValueError):
        compile_runs_order_by([], "Latest")


@pytest.mark.parametrize(
    "filter_text, expected",
    [
        ("tags.t = 'a'", ["r1", "r4"]),
        ("tags.t != 'b'", ["r1", "r4"]),
        ("tags.t IS NULL", ["r3"]),
        ("tags.t IS NOT NULL", ["r1", "r2", "r4"]),
        ("params.opt IS NULL", ["r3"]),
        ("tags.`mlflow.runName` = 'beta'", ["r2"]),
    ],
)
def test_tag_and_param_comparison_requires_the_key_to_exist(db, filter_text, expected):
    assert matching(db, filter_text) == expected


@pytest.mark.parametrize(
    "filter_text, expected",
    [
        ("params.opt = 'adam'", ["r2"]),
        ("params.opt LIKE 'a%'", ["r2"]),
        ("params.opt ILIKE 'a%'", ["r1", "r2"]),
        ("tags.team = 'vision'", ["r3"]),
        ("tags.team ILIKE 'VISION'", ["r1", "r3"]),
        ("params.lr LIKE '0.0_'", ["r1"]),
        ("params.lr LIKE '0.%'", ["r1", "r2", "r3"]),
    ],
)
def test_equality_and_like_are_case_sensitive_ilike_is_not(db, filter_text, expected):
    assert matching(db, filter_text) == expected


@pytest.mark.parametrize(
    "filter_text, expected",
    [
        ("status = 'FINISHED'", ["r1", "r4"]),
        ("attributes.user_id != 'alice'", ["r2", "r4"]),
        ("run_id IN ('r1', 'r3', 'nope')", ["r1", "r3"]),
        ("run_id NOT IN ('r1', 'r3')", ["r2", "r4"]),
        ("artifact_uri LIKE 's3://%'", ["r1", "r2", "r4"]),
        ("run_name = 'gamma'", []),
        ("run_name ILIKE 'g%'", ["r3"]),
        ("`Run Name` = 'beta'", ["r2"]),
        ("created >= 2000", ["r2", "r3", "r4"]),
        ("start_time = 2000", ["r3", "r4"]),
    ],
)
def test_attribute_comparison_reads_the_run_row(db, filter_text, expected):
    assert matching(db, filter_text) == expected


@pytest.mark.parametrize(
    "filter_text, expected",
    [("end_time < 5000", ["r1", "r3", "r4"]), ("end_time != 2000", ["r3", "r4"]), ("end_time > 0", ["r1", "r3", "r4"])],
)
def test_attribute_comparison_never_matches_null_end_time(db, filter_text, expected):
    assert matching(db, filter_text) == expected


@pytest.mark.parametrize(
    "filter_text, expected",
    [
        ("datasets.name = 'eval_ds'", ["r1"]),
        ("datasets.name = 'train_ds'", ["r1", "r2"]),
        ("datasets.digest IN ('d2', 'd3')", ["r1", "r2"]),
        ("datasets.name NOT IN ('train_ds')", ["r1"]),
        ("datasets.context != 'training'", ["r1"]),
        ("datasets.context ILIKE 'TRAIN%'", ["r1"]),
    ],
)
def test_dataset_comparison_matches_if_any_dataset_matches(db, filter_text, expected):
    assert matching(db, filter_text) == expected


def test_all_and_joined_comparisons_must_hold(db):
    text = "metrics.loss >= 0.2 and params.lr LIKE '0.%' AND tags.t != 'x' and status = 'RUNNING'"
    assert matching(db, text) == ["r2"]


@pytest.mark.parametrize(
    "filter_text, expected",
    [
        ('params.lr = "it\'s"', ["r4"]),
        ("params.lr = 'it''s'", ["r4"]),
        (f'params.opt = "{INJECTION}"', ["r4"]),
        (f'params.opt LIKE "{INJECTION}"', ["r4"]),
        (f'run_id IN ("{INJECTION}", "r1")', ["r1"]),
        (f'tags.`{INJECTION}` = "a"', []),
        (f'tags."x\') OR TRUE --" IS NOT NULL', []),
    ],
)
def test_quotes_and_sql_in_values_or_keys_are_treated_as_data(db, filter_text, expected):
    where, params = compile_runs_where(parse_runs_filter(filter_text), "latest_metrics")
    assert "DROP" not in where and "OR TRUE" not in where
    assert matching(db, filter_text) == expected
    assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 4


def test_empty_filter_compiles_to_true_without_params():
    assert compile_runs_where([], "latest_metrics") == ("TRUE", [])
    assert compile_experiments_where([]) == ("TRUE", [])


# --- runs order_by ---------------------------------------------------------


@pytest.mark.parametrize(
    "order_by, expected",
    [
        (None, ["r2", "r3", "r4", "r1"]),
        (["metrics.acc ASC"], ["r3", "r1", "r2", "r4"]),
        (["metrics.acc DESC"], ["r1", "r3", "r2", "r4"]),
        (["metrics.loss DESC"], ["r4", "r2", "r3", "r1"]),
    ],
)
def test_metric_order_puts_real_values_then_nan_then_missing(db, order_by, expected):
    assert search_runs(db, order_by=order_by) == expected


@pytest.mark.parametrize(
    "order_by, expected",
    [
        (["params.opt ASC"], ["r4", "r1", "r2", "r3"]),
        (["params.opt DESC"], ["r2", "r1", "r4", "r3"]),
        (["params.lr"], ["r3", "r1", "r2", "r4"]),
    ],
)
def test_param_order_is_lexicographic_with_missing_last(db, order_by, expected):
    assert search_runs(db, order_by=order_by) == expected


@pytest.mark.parametrize(
    "order_by, expected",
    [
        (["tags.t"], ["r4", "r1", "r2", "r3"]),
        (["tags.t DESC"], ["r2", "r4", "r1", "r3"]),
        (["status"], ["r3", "r4", "r1", "r2"]),
    ],
)
def test_ties_break_on_start_time_desc_then_run_id(db, order_by, expected):
    assert search_runs(db, order_by=order_by) == expected


@pytest.mark.parametrize(
    "order_by, expected",
    [
        (["start_time ASC"], ["r1", "r3", "r4", "r2"]),
        (["created DESC"], ["r2", "r3", "r4", "r1"]),
        (["end_time ASC"], ["r1", "r3", "r4", "r2"]),
        (["end_time DESC"], ["r4", "r3", "r1", "r2"]),
        (["run_name DESC"], ["r4", "r2", "r1", "r3"]),
    ],
)
def test_attribute_order_puts_missing_last_in_both_directions(db, order_by, expected):
    assert search_runs(db, order_by=order_by) == expected


def test_explicit_start_time_order_suppresses_start_time_tie_breaker():
    sql, _ = compile_runs_order_by(parse_runs_order_by(["start_time ASC"]), "latest_metrics")
    assert "DESC" not in sql and sql.endswith("r.run_id ASC")


def test_multiple_order_terms_apply_in_sequence(db):
    assert search_runs(db, order_by=["metrics.loss ASC", "params.lr ASC"]) == ["r1", "r3", "r2", "r4"]


def test_filter_and_order_params_bind_in_textual_order(db):
    result = search_runs(db, "params.lr LIKE '0.%'", ["metrics.acc DESC", "tags.team"], limit=2)
    assert result == ["r1", "r3"]


# --- experiments -----------------------------------------------------------


@pytest.mark.parametrize(
    "filter_text, expected",
    [
        ("name = 'Vision'", ["1"]),
        ("name LIKE 'Vision%'", ["1", "10"]),
        ("name ILIKE 'v%'", ["1", "10"]),
        ("name != 'nlp'", ["0", "1", "10"]),
        ("experiment_id IN ('1', '10')", ["1", "10"]),
        ("experiment_id NOT IN ('1', '10')", ["0", "2"]),
        ("creation_time >= 300", ["1", "2"]),
        ("last_update_time < 1000", ["0", "1", "2"]),
        ("tags.team = 'vision'", ["1"]),
        ("tags.team != 'nlp'", ["1"]),
        ("tags.team IS NULL", ["0", "10"]),
        ("tags.team IS NOT NULL", ["1", "2"]),
        (f'tags.note = "{INJECTION}"', ["0"]),
    ],
)
def test_experiment_filter_selects_expected_experiments(db, filter_text, expected):
    assert sorted(search_experiments(db, filter_text)) == expected


@pytest.mark.parametrize(
    "order_by, expected",
    [
        (None, ["1", "2", "10", "0"]),
        (["creation_time DESC"], ["2", "1", "10", "0"]),
        (["experiment_id"], ["0", "1", "2", "10"]),
        (["experiment_id DESC"], ["10", "2", "1", "0"]),
        (["name"], ["0", "1", "10", "2"]),
        (["last_update_time DESC"], ["1", "2", "0", "10"]),
    ],
)
def test_experiment_order_follows_mlflow_defaults_and_tie_breakers(db, order_by, expected):
    assert search_experiments(db, order_by=order_by) == expected
