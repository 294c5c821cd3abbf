"""Per-run summaries in Runledger's own shape, for the dialects that present runs one at a time
(Comet's REST API, PAI's HPO view): a run's metadata row, its params and tags, each metric's
min / max / latest point, every point of a metric in log order, and the keys a project uses.

Each function takes its own DuckDB cursor; the dialect rooms shape the rows into their JSON.
Min and max skip NaN (DuckDB orders NaN above every number, so a NaN would always be the max);
"latest" is the configured latest-metric rule's point (the same one runs/get shows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import duckdb
import pyarrow as pa

from runledger.query import search_sql
from runledger.query.search_filter import OrderTerm
from runledger.query.search_tree import Node


@dataclass(frozen=True, slots=True)
class RunMeta:
    run_id: str
    run_name: str | None
    experiment_id: str
    experiment_name: str
    user_id: str | None
    status: str
    start_time: int | None
    end_time: int | None
    deleted: bool   # the run or its experiment is deleted


@dataclass(frozen=True, slots=True)
class MetricSummary:
    key: str
    min_value: float | None
    min_timestamp: int | None
    min_step: int | None
    max_value: float | None
    max_timestamp: int | None
    max_step: int | None
    last_value: float
    last_timestamp: int
    last_step: int


@dataclass(frozen=True, slots=True)
class ExperimentRow:
    experiment_id: str
    name: str
    lifecycle_stage: str
    creation_time: int | None
    last_update_time: int | None
    run_count: int


_RUN_META = ("SELECT r.run_id, r.run_name, r.experiment_id, e.name, r.user_id, r.status, r.start_time, r.end_time, "
             "(r.lifecycle_stage = 'deleted' OR e.lifecycle_stage = 'deleted') "
             "FROM runs r JOIN experiments e USING (experiment_id) ")


def _metas(rows: list[tuple[Any, ...]]) -> list[RunMeta]:
    return [RunMeta(*row) for row in rows]


def run_meta(cur: duckdb.DuckDBPyConnection, run_id: str) -> RunMeta | None:
    found = _metas(cur.execute(_RUN_META + "WHERE r.run_id = ?", [run_id]).fetchall())
    return found[0] if found else None


def runs_of_experiment(cur: duckdb.DuckDBPyConnection, experiment_id: str, *, deleted: bool | None = False
                       ) -> list[RunMeta]:
    """The experiment's runs, oldest first; `deleted` None means all of them."""
    where = "WHERE r.experiment_id = ? "
    if deleted is not None:
        where += ("AND (r.lifecycle_stage = 'deleted' OR e.lifecycle_stage = 'deleted') " if deleted
                  else "AND r.lifecycle_stage <> 'deleted' AND e.lifecycle_stage <> 'deleted' ")
    return _metas(cur.execute(_RUN_META + where + "ORDER BY r.start_time, r.run_id", [experiment_id]).fetchall())


def runs_by_ids(cur: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> list[RunMeta]:
    """Metadata of `run_ids`, in that order (unknown ids skipped)."""
    rows = {m.run_id: m for m in _metas(cur.execute(
        _RUN_META + "WHERE r.run_id IN (SELECT unnest(?::VARCHAR[]))", [list(run_ids)]).fetchall())}
    return [rows[r] for r in run_ids if r in rows]


def child_runs(cur: duckdb.DuckDBPyConnection, parent_run_id: str) -> list[RunMeta]:
    """Active runs whose `mlflow.parentRunId` tag names `parent_run_id`, oldest first."""
    return _metas(cur.execute(
        _RUN_META + "WHERE r.run_id IN (SELECT run_id FROM tags WHERE key = 'mlflow.parentRunId' AND value = ?) "
        "AND r.lifecycle_stage <> 'deleted' AND e.lifecycle_stage <> 'deleted' ORDER BY r.start_time, r.run_id",
        [parent_run_id]).fetchall())


def parent_run_ids(cur: duckdb.DuckDBPyConnection, experiment_id: str) -> set[str]:
    """Runs of the experiment that some other run names as its parent."""
    return {r[0] for r in cur.execute(
        "SELECT DISTINCT t.value FROM tags t JOIN runs r USING (run_id) "
        "WHERE t.key = 'mlflow.parentRunId' AND r.experiment_id = ?", [experiment_id]).fetchall()}


def experiments(cur: duckdb.DuckDBPyConnection, *, name: str | None = None, experiment_id: str | None = None,
                include_deleted: bool = False) -> list[ExperimentRow]:
    """Experiments with their count of active runs, by name (active first) or id, or all."""
    where, params = ["TRUE"], []
    if not include_deleted:
        where.append("e.lifecycle_stage = 'active'")
    if name is not None:
        where.append("e.name = ?")
        params.append(name)
    if experiment_id is not None:
        where.append("e.experiment_id = ?")
        params.append(experiment_id)
    rows = cur.execute(
        "SELECT e.experiment_id, e.name, e.lifecycle_stage, e.creation_time, e.last_update_time, "
        "(SELECT count(*) FROM runs r WHERE r.experiment_id = e.experiment_id AND r.lifecycle_stage = 'active') "
        f"FROM experiments e WHERE {' AND '.join(where)} "
        "ORDER BY CASE WHEN e.lifecycle_stage = 'active' THEN 0 ELSE 1 END, e.name", params).fetchall()
    return [ExperimentRow(*r) for r in rows]


def params(cur: duckdb.DuckDBPyConnection, run_id: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in cur.execute("SELECT key, value FROM params WHERE run_id = ? ORDER BY key",
                                           [run_id]).fetchall()]


def tags(cur: duckdb.DuckDBPyConnection, run_id: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in cur.execute("SELECT key, value FROM tags WHERE run_id = ? ORDER BY key",
                                           [run_id]).fetchall()]


def params_of_runs(cur: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for run_id, k, v in cur.execute("SELECT run_id, key, value FROM params WHERE run_id IN "
                                    "(SELECT unnest(?::VARCHAR[])) ORDER BY run_id, key", [list(run_ids)]).fetchall():
        out.setdefault(run_id, {})[k] = v
    return out


def tags_of_runs(cur: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for run_id, k, v in cur.execute("SELECT run_id, key, value FROM tags WHERE run_id IN "
                                    "(SELECT unnest(?::VARCHAR[])) ORDER BY run_id, key", [list(run_ids)]).fetchall():
        out.setdefault(run_id, {})[k] = v
    return out


def experiment_tags(cur: duckdb.DuckDBPyConnection, experiment_id: str) -> dict[str, str]:
    return dict(cur.execute("SELECT key, value FROM experiment_tags WHERE experiment_id = ?",
                            [experiment_id]).fetchall())


def _check_table(latest_table: str) -> None:
    if not latest_table.replace("_", "").isalpha():
        raise ValueError(f"untrusted latest-metrics table name: {latest_table!r}")


def metric_summaries(cur: duckdb.DuckDBPyConnection, run_id: str, latest_table: str,
                     keys: Sequence[str] | None = None) -> list[MetricSummary]:
    """Per metric key of the run: min and max (NaN skipped; the first point reaching them, by
    timestamp then step) and the latest point. Two plain statements (the extremes, the latest
    points) joined here: one statement joining them costs several times more to plan."""
    _check_table(latest_table)
    key_filter, params_ = "", [run_id]
    if keys is not None:
        key_filter = " AND key IN (SELECT unnest($2::VARCHAR[]))"
        params_.append(list(keys))
    extremes = {r[0]: r[1:] for r in cur.execute(
        "SELECT key, min(value), arg_min(timestamp, (value, timestamp, step)), arg_min(step, (value, timestamp, step)), "
        "max(value), arg_min(timestamp, (-value, timestamp, step)), arg_min(step, (-value, timestamp, step)) "
        f"FROM metrics WHERE run_id = $1 AND NOT isnan(value){key_filter} GROUP BY key", params_).fetchall()}
    latest = cur.execute(f"SELECT key, value, timestamp, step FROM {latest_table} WHERE run_id = $1{key_filter} "
                         "ORDER BY key", params_).fetchall()
    return [MetricSummary(key, *extremes.get(key, (None,) * 6), value, timestamp, step)
            for key, value, timestamp, step in latest]


def last_points(cur: duckdb.DuckDBPyConnection, run_ids: Sequence[str], key: str, latest_table: str
                ) -> dict[str, tuple[float, int, int]]:
    """The latest (value, timestamp, step) of `key` for each of `run_ids` that has it."""
    _check_table(latest_table)
    return {r[0]: (r[1], r[2], r[3]) for r in cur.execute(
        f"SELECT run_id, value, timestamp, step FROM {latest_table} WHERE key = ? AND run_id IN "
        "(SELECT unnest(?::VARCHAR[]))", [key, list(run_ids)]).fetchall()}


def metric_keys_of_runs(cur: duckdb.DuckDBPyConnection, run_ids: Sequence[str], latest_table: str) -> dict[str, list[str]]:
    _check_table(latest_table)
    out: dict[str, list[str]] = {}
    for run_id, key in cur.execute(f"SELECT run_id, key FROM {latest_table} WHERE run_id IN "
                                   "(SELECT unnest(?::VARCHAR[])) ORDER BY run_id, key", [list(run_ids)]).fetchall():
        out.setdefault(run_id, []).append(key)
    return out


EPOCH_KEY = "epoch"


def point_batches(cur: duckdb.DuckDBPyConnection, run_id: str, key: str | None,
                  chunk: int = 100_000) -> pa.RecordBatchReader:
    """Every point of one metric (or, `key` None, of every metric) of the run, in log order
    (timestamp, step, key, value), as Arrow batches of (key, value, timestamp, step, epoch):
    `epoch` is the value of the run's `epoch` metric at the same step, or NULL. Arrow batches,
    so a dialect formats a million points without a Python object per point."""
    where, params_ = "p.run_id = $1", [run_id]
    if key is not None:
        where += " AND p.key = $2"
        params_.append(key)
    has_epoch = bool(cur.execute("SELECT 1 FROM latest_points WHERE run_id = ? AND key = ?",
                                 [run_id, EPOCH_KEY]).fetchall())
    if has_epoch:
        params_.append(EPOCH_KEY)
        epochs = (f"LEFT JOIN (SELECT step, max(value) AS epoch FROM metrics WHERE run_id = $1 "
                  f"AND key = ${len(params_)} GROUP BY step) e ON e.step = p.step")
        epoch = "e.epoch"
    else:
        epochs, epoch = "", "NULL::DOUBLE"
    sql = (f"SELECT p.key, p.value, p.timestamp, p.step, {epoch} AS epoch FROM metrics p {epochs} WHERE {where} "
           "ORDER BY p.timestamp, p.step, p.key, p.value")
    return cur.sql(sql, params=params_).to_arrow_reader(chunk)


def project_keys(cur: duckdb.DuckDBPyConnection, experiment_id: str, latest_table: str
                 ) -> dict[str, list[tuple[str, bool]]]:
    """The metric, param and tag keys the experiment's active runs use, each with whether every
    value is numeric: {"metrics": [...], "params": [...], "tags": [...]}. Labels (tags with an
    empty value) are not among the tags: see `project_labels`."""
    _check_table(latest_table)
    runs = "SELECT run_id FROM runs WHERE experiment_id = ? AND lifecycle_stage = 'active'"
    out: dict[str, list[tuple[str, bool]]] = {}
    for name, sql in (
            ("metrics", f"SELECT key, TRUE FROM {latest_table} WHERE run_id IN ({runs}) GROUP BY key ORDER BY key"),
            ("params", f"SELECT key, bool_and(TRY_CAST(value AS DOUBLE) IS NOT NULL) FROM params WHERE run_id IN "
                       f"({runs}) GROUP BY key ORDER BY key"),
            ("tags", f"SELECT key, bool_and(TRY_CAST(value AS DOUBLE) IS NOT NULL) FROM tags WHERE run_id IN "
                     f"({runs}) AND ({_NOT_LABEL}) GROUP BY key ORDER BY key")):
        out[name] = [(k, bool(n)) for k, n in cur.execute(sql, [experiment_id]).fetchall()]
    return out


# A label is a tag with an empty value; MLflow's own mlflow.* tags never are (docs/search.md).
_NOT_LABEL = "value <> '' OR starts_with(key, 'mlflow.')"


def project_labels(cur: duckdb.DuckDBPyConnection, experiment_id: str) -> list[str]:
    return [r[0] for r in cur.execute(
        f"SELECT DISTINCT key FROM tags WHERE NOT ({_NOT_LABEL}) AND run_id IN "
        "(SELECT run_id FROM runs WHERE experiment_id = ? AND lifecycle_stage = 'active') ORDER BY key",
        [experiment_id]).fetchall()]


def search_run_ids(cur: duckdb.DuckDBPyConnection, experiment_id: str, tree: Node,
                   latest_table: str, *, deleted: bool = False) -> list[str]:
    """Runs of the experiment matching a filter tree (query.search_tree), through runs/search's
    own compiler (query.search_sql), oldest first."""
    sql, params_ = search_sql.compile_runs_search(
        tree, [OrderTerm("attribute", "start_time", True)], latest_table, [experiment_id], 2 if deleted else 1)
    return [r[0] for r in cur.execute(sql, params_).fetchall()]
