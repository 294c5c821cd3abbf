"""Read-model queries shaped as MLflow JSON. Each function takes its own DuckDB cursor.

MLflow's JSON conventions: unset fields and empty lists are omitted, int64 are numbers,
NaN is the string "NaN".
"""

from __future__ import annotations

import math
import operator
import warnings
from typing import Any, Iterator, Protocol

import duckdb
import orjson
import pyarrow as pa

from runledger.ingest.errors import InvalidParameterValue
from runledger.ingest.limits import shown_value
from runledger.projector.pending import BatchKeys, HotRun, Uncommitted
from runledger.query import page_token as tokens
from runledger.query import search_filter, search_sql, search_tree
from runledger.query.run_cache import RunCache
from runledger.query.search_cache import CachedSearch, SearchCache
from runledger.query.run_info import info_json
from runledger.query.search_cursors import SearchCursors
from runledger.query.search_filter import SearchFilterError

VIEW_TYPES = {"ACTIVE_ONLY": 1, "DELETED_ONLY": 2, "ALL": 3, 1: 1, 2: 2, 3: 3}
MAX_RESULTS_LIMIT = 50000

# A run is deleted if it was deleted itself or its experiment is (resolved here, at read
# time, rather than by rewriting the runs of another partition: docs/design.md, invariant 2). Pages of
# runs resolve it in `runs_json`, searches in `search_sql.compile_runs_search`.


def metric_value(v: float) -> float | str:
    return "NaN" if math.isnan(v) else v


def _compact(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != [] and v != {}}


# ----- experiments

def _experiments(cur: duckdb.DuckDBPyConnection, where: str, params: list[Any],
                 order: str = "e.experiment_id") -> list[dict[str, Any]]:
    rows = cur.execute(
        "SELECT e.experiment_id, e.name, e.artifact_location, e.lifecycle_stage, e.last_update_time, "
        f"e.creation_time FROM experiments e WHERE {where} ORDER BY {order}", params).fetchall()
    if not rows:
        return []
    ids = [r[0] for r in rows]
    tags: dict[str, list[dict[str, str]]] = {}
    for exp_id, k, v in cur.execute(
            "SELECT experiment_id, key, value FROM experiment_tags WHERE experiment_id IN "
            "(SELECT unnest(?::VARCHAR[])) ORDER BY experiment_id, key", [ids]).fetchall():
        tags.setdefault(exp_id, []).append({"key": k, "value": v})
    return [_compact({
        "experiment_id": r[0], "name": r[1], "artifact_location": r[2], "lifecycle_stage": r[3],
        "last_update_time": r[4], "creation_time": r[5], "tags": tags.get(r[0]),
    }) for r in rows]


def get_experiment(cur: duckdb.DuckDBPyConnection, experiment_id: str) -> dict[str, Any] | None:
    found = _experiments(cur, "e.experiment_id = ?", [experiment_id])
    return found[0] if found else None


def get_experiment_by_name(cur: duckdb.DuckDBPyConnection, name: str) -> dict[str, Any] | None:
    found = _experiments(cur, "e.name = ?", [name],
                         order="CASE WHEN e.lifecycle_stage = 'active' THEN 0 ELSE 1 END, e.experiment_id")
    return found[0] if found else None


def search_experiments(cur: duckdb.DuckDBPyConnection, *, filter_string: str | None, order_by: list[str],
                       view_type: Any, max_results: int | None, page_token: str | None) -> dict[str, Any]:
    limit = _max_results(max_results, default=1000)
    offset = decode_page_token(page_token)
    try:
        where, where_params = search_sql.compile_experiments_where(search_filter.parse_experiments_filter(filter_string))
        order, order_params = search_sql.compile_experiments_order_by(
            search_filter.parse_experiments_order_by(order_by))
    except SearchFilterError as e:
        raise InvalidParameterValue(str(e)) from e
    stage = _stage_clause("e.lifecycle_stage", view_type)
    ids = [r[0] for r in cur.execute(
        f"SELECT e.experiment_id FROM experiments e WHERE {stage} AND ({where}) ORDER BY {order} "
        "LIMIT ? OFFSET ?", [*where_params, *order_params, limit + 1, offset]).fetchall()]
    page = ids[:limit]
    by_id = {e["experiment_id"]: e for e in _experiments(cur, "e.experiment_id IN (SELECT unnest(?::VARCHAR[]))", [page])}
    out: dict[str, Any] = {"experiments": [by_id[i] for i in page]}
    if len(ids) > limit:
        out["next_page_token"] = encode_page_token(offset + limit)
    return _compact(out)


# ----- parsed statements

# DuckDB parses SQL text on every execute; for the small statements of runs/get and runs/search
# that is a fifth of their cost. Their texts are parsed once (`extract_statements`) and executed
# from the parsed form, which any cursor and thread can execute (tests/test_reader_pages.py).
# Parsing needs no catalog, so a parsed statement never goes stale; binding still happens per run.
_statements: dict[str, duckdb.Statement] = {}
_STATEMENTS_MAX = 512


def _parsed(cur: duckdb.DuckDBPyConnection, sql: str) -> duckdb.Statement | str:
    statement = _statements.get(sql)
    if statement is None:
        if len(_statements) >= _STATEMENTS_MAX:
            return sql
        (statement,) = cur.extract_statements(sql)
        _statements[sql] = statement
    return statement


# ----- runs

# One statement returns everything a page of runs shows, as rows of one shape
# (kind, run_id, c1..c7, value, n1, n2): kind 0 = the run row, 1 = latest metrics, 2 = params,
# 3 = tags, 4 = dataset inputs, 5 = experiment stages, 6 = model inputs, 7 = model outputs. Few statements, and few joins in them, is
# what makes runs/get and a runs/search page fast: DuckDB spends most of a small query's time
# planning it (and a hash join has a fixed cost of its own), so the dataset and experiment parts
# ride along in the same statement instead of costing a round trip each.
_RUN_DATA = (
    "SELECT 0, run_id, run_name, experiment_id, user_id, status, artifact_uri, lifecycle_stage, {stage}, NULL, "
    "start_time, end_time FROM runs r{where}",
    "SELECT 1, run_id, key, NULL, NULL, NULL, NULL, NULL, NULL, value, timestamp, step FROM {latest}{where}",
    "SELECT 2, run_id, key, value, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM params{where}",
    "SELECT 3, run_id, key, value, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM tags{where}",
    "SELECT 4, run_id, name, digest, source_type, source, schema, profile, tags::VARCHAR, NULL, logged_time, NULL "
    "FROM run_datasets{where}",
    "SELECT 6, run_id, model_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, logged_time, NULL "
    "FROM run_model_inputs{where}",
    "SELECT 7, run_id, model_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, logged_time, step "
    "FROM run_model_outputs{where}",
)
_EXPERIMENT_STAGES = ("SELECT 5, experiment_id, lifecycle_stage, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL "
                      "FROM experiments WHERE experiment_id IN ({ids})")
_page_sql_cache: dict[tuple[str, int, bool], str] = {}
# The parts of _RUN_DATA that read a run's dataset and model inputs/outputs: a page leaves them
# out while no run has any (`RunCache.may_have_inputs`); three empty-table scans in the
# statement cost about a fifth of a 100-run page.
_INPUT_PARTS = frozenset({4, 6, 7})


def _page_sql(latest_table: str, experiments: int, inputs: bool = True) -> str:
    """The statement for a page of runs, cached per (latest table, shape).

    ``experiments == 0``: one run (``$1``), each part filtered on ``run_id = $1`` (the runs
    part is a primary-key lookup) and the experiment's stage read by a scalar subquery.
    ``experiments == -1``: the runs ``$1`` (a list), their experiments looked up through them.
    ``experiments == n > 0``: the runs ``$1`` (a list) of the experiments ``$2..$(n+1)``, which
    the experiment part reads directly. A list of runs is matched with ONE semi-join over the
    union of the parts; DuckDB pushes the join's key filter down into every part's scan.
    In every shape the experiment's stage is NULL, or its row absent, when the experiment row
    is missing: such a run is skipped (not readable), as an inner join with experiments does.
    """
    key = (latest_table, experiments, inputs)
    sql = _page_sql_cache.get(key)
    if sql is None:
        if not latest_table.replace("_", "").isalpha():
            raise ValueError(f"untrusted latest-metrics table name: {latest_table!r}")
        run_data = [b for i, b in enumerate(_RUN_DATA) if inputs or (i + (i >= 5)) not in _INPUT_PARTS]
        if experiments == 0:
            stage = "(SELECT e.lifecycle_stage FROM experiments e WHERE e.experiment_id = r.experiment_id)"
            sql = "\nUNION ALL ".join(b.format(stage=stage, where=" WHERE run_id = $1", latest=latest_table)
                                      for b in run_data)
        else:
            parts = "\nUNION ALL ".join(b.format(stage="NULL", where="", latest=latest_table) for b in run_data)
            ids = ("SELECT experiment_id FROM runs WHERE run_id IN (SELECT unnest($1::VARCHAR[]))" if experiments < 0
                   else ", ".join(f"${i + 2}" for i in range(experiments)))
            sql = (f"SELECT u.* FROM ({parts}) u(kind, run_id, c1, c2, c3, c4, c5, c6, c7, value, n1, n2) "
                   f"SEMI JOIN (SELECT unnest($1::VARCHAR[]) AS id) page ON u.run_id = page.id"
                   f"\nUNION ALL {_EXPERIMENT_STAGES.format(ids=ids)}")
        if len(_page_sql_cache) < 512:
            _page_sql_cache[key] = sql
    return sql


_by_key = operator.itemgetter("key")


def _dataset_order(row: tuple[Any, ...]) -> Any:
    # ORDER BY logged_time, name, digest (NULLS LAST, DuckDB's default)
    return (row[0] is None, row[0] or 0, row[1], row[2])


def runs_json(cur: duckdb.DuckDBPyConnection, run_ids: list[str], latest_table: str,
              experiment_ids: list[str] | None = None, inputs: bool = True) -> list[dict[str, Any]]:
    """Full MLflow Run objects for `run_ids`, in that order (unknown ids are skipped).

    `experiment_ids`, when given, must include the experiment of every run in `run_ids`
    (a search's experiments): their stages are then read directly, which is cheaper.
    `inputs` False: no run has dataset or model inputs/outputs (not read, shown empty)."""
    if not run_ids:
        return []
    if len(run_ids) == 1 and experiment_ids is None:
        rows = cur.execute(_parsed(cur, _page_sql(latest_table, 0)), [run_ids[0]]).fetchall()
    elif experiment_ids is None:
        rows = cur.execute(_parsed(cur, _page_sql(latest_table, -1, inputs)), [list(run_ids)]).fetchall()
    else:
        experiment_ids = list(dict.fromkeys(experiment_ids))
        rows = cur.execute(_parsed(cur, _page_sql(latest_table, len(experiment_ids), inputs)),
                           [list(run_ids), *experiment_ids]).fetchall()
    infos: dict[str, tuple[Any, ...]] = {}
    stages: dict[str, str] = {}
    metrics: dict[str, list[dict[str, Any]]] = {}
    params: dict[str, list[dict[str, Any]]] = {}
    tags: dict[str, list[dict[str, Any]]] = {}
    datasets: dict[str, list[tuple[Any, ...]]] = {}
    model_inputs: dict[str, list[tuple[int, str]]] = {}
    model_outputs: dict[str, list[tuple[int, str, int]]] = {}
    for kind, run_id, a, b, c, d, e, f, g, value, n1, n2 in rows:
        if kind == 1:
            # value != value: NaN, which MLflow's JSON spells "NaN"
            item = {"key": a, "value": "NaN" if value != value else value, "timestamp": n1, "step": n2}
            if run_id in metrics:
                metrics[run_id].append(item)
            else:
                metrics[run_id] = [item]
        elif kind == 2 or kind == 3:
            target = params if kind == 2 else tags
            item = {"key": a, "value": b}
            if run_id in target:
                target[run_id].append(item)
            else:
                target[run_id] = [item]
        elif kind == 0:
            infos[run_id] = (a, b, c, d, e, f, g, n1, n2)
        elif kind == 4:
            datasets.setdefault(run_id, []).append((n1, a, b, c, d, e, f, g))
        elif kind == 6:
            model_inputs.setdefault(run_id, []).append((n1 or 0, a))
        elif kind == 7:
            model_outputs.setdefault(run_id, []).append((n1 or 0, a, n2))
        else:  # 5: an experiment's stage (run_id holds the experiment id)
            stages[run_id] = a
    out = []
    for run_id in run_ids:
        r = infos.get(run_id)
        if r is None:
            continue
        run_name, experiment_id, user_id, status, artifact_uri, run_stage, experiment_stage, start_time, end_time = r
        if experiment_stage is None:
            experiment_stage = stages.get(experiment_id)
        if experiment_stage is None:
            continue  # the experiment row is missing (not yet applied): not readable, as before
        stage = "deleted" if run_stage == "deleted" or experiment_stage == "deleted" else "active"
        info = info_json(run_id, run_name, experiment_id, user_id, status, start_time, end_time, artifact_uri,
                         stage)
        data = _run_data(metrics.get(run_id), params.get(run_id), tags.get(run_id))
        run_inputs: dict[str, Any] = {}
        ds = datasets.get(run_id)
        if ds:
            ds.sort(key=_dataset_order)
            run_inputs["dataset_inputs"] = [_dataset_input(*row) for row in ds]
        if run_id in model_inputs:
            run_inputs["model_inputs"] = [{"model_id": m} for _, m in sorted(model_inputs[run_id])]
        run_outputs: dict[str, Any] = {}
        if run_id in model_outputs:
            run_outputs["model_outputs"] = [{"model_id": m, "step": step}
                                            for _, m, step in sorted(model_outputs[run_id])]
        out.append({"info": info, "data": data, "inputs": run_inputs, "outputs": run_outputs})
    return out


def _run_data(metrics: list[dict[str, Any]] | None, params: list[dict[str, Any]] | None,
              tags: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A Run's `data`: each non-empty list, sorted by key (the one place both `runs_json` and
    `hot_run_json` build it, so the two answers cannot drift apart)."""
    data: dict[str, Any] = {}
    for name, items in (("metrics", metrics), ("params", params), ("tags", tags)):
        if items:
            items.sort(key=_by_key)
            data[name] = items
    return data


def hot_run_json(hot: HotRun, inputs: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    """The run as `runs_json` renders it, from the projector's folded state of the run (which
    is what the pending commit writes to DuckDB) and its inputs/outputs parts as last rendered.
    Types are coerced as DuckDB's columns would (DOUBLE values, BIGINT timestamps and steps)."""
    row = hot.row
    stage = "deleted" if row.lifecycle_stage == "deleted" or hot.experiment_stage == "deleted" else "active"
    metrics = []
    for key, p in hot.latest.items():
        value = float(p.value)
        metrics.append({"key": key, "value": "NaN" if value != value else value, "timestamp": int(p.timestamp),
                        "step": int(p.step)})
    data = _run_data(metrics, [{"key": k, "value": v} for k, v in hot.params.items()],
                     [{"key": k, "value": v} for k, v in hot.tags.items()])
    info = info_json(row.run_id, row.run_name, row.experiment_id, row.user_id, row.status, row.start_time,
                     row.end_time, row.artifact_uri, stage)
    return {"info": info, "data": data, "inputs": inputs, "outputs": outputs}


def _dataset_input(logged_time: Any, name: Any, digest: Any, source_type: Any, source: Any, schema: Any,
                   profile: Any, tags: str) -> dict[str, Any]:
    dataset = _compact({"name": name, "digest": digest, "source_type": source_type, "source": source,
                        "schema": schema, "profile": profile})
    entry = {"tags": [{"key": k, "value": v} for k, v in orjson.loads(tags)], "dataset": dataset}
    return _compact(entry)


def _rendered(cur: duckdb.DuckDBPyConnection, run_ids: list[str], latest_table: str,
              experiment_ids: list[str] | None, cache: RunCache) -> dict[str, bytes]:
    """run id -> the run's JSON, reading and rendering only the runs `cache` does not hold, and
    keeping those for the next read."""
    token = cache.token()  # before reading: see RunCache
    found = cache.get(latest_table, run_ids)
    missing = [r for r in run_ids if r not in found]
    if missing and cache.folded is not None and len(missing) > 1:
        # Runs the projector's fold cache holds render from there (not kept: the fold cache is
        # the copy); one run alone is a cheap primary-key read, and keeps its inputs known.
        found.update(cache.folded(latest_table, missing))
        missing = [r for r in missing if r not in found]
    if missing:
        inputs = len(missing) == 1 or cache.may_have_inputs(lambda: _any_inputs(cur))
        runs = runs_json(cur, missing, latest_table, experiment_ids, inputs)
        rendered = [(run["info"]["run_id"], run["info"]["experiment_id"], orjson.dumps(run)) for run in runs]
        cache.put(latest_table, rendered, token)
        cache.put_inputs([(run["info"]["run_id"], run["inputs"], run["outputs"]) for run in runs], token)
        found.update((run_id, body) for run_id, _, body in rendered)
    return found


class MustWait(Exception):
    """A read on a cursor that did not wait for the commits (`memory` given) found that its
    answer depends on writes not committed yet: read again after waiting."""


class MemoryReads(Protocol):
    """What a read that does not wait for pending commits knows (query.read_service)."""

    uncommitted: Uncommitted

    def run_json(self, run_id: str) -> bytes | None:
        """The run's JSON from memory; b"" if DuckDB already has all of it; None: wait."""


def _depends_on(where: list[search_filter.Comparison] | search_tree.Node, terms: list[search_filter.OrderTerm],
                keys: BatchKeys) -> bool:
    """Whether uncommitted changes (`keys`) could change which runs a search matches or their
    order: a changed run row (created, renamed, ended, deleted, a rewind) or experiment always
    could; otherwise only a changed key that the filter or the order names."""
    if keys.rows:
        return True
    leaves: list[search_filter.Comparison] = []
    stack: list[Any] = [where] if isinstance(where, (search_tree.Leaf, search_tree.AllOf, search_tree.AnyOf,
                                                       search_tree.Not)) else list(where)
    while stack:
        node = stack.pop()
        if isinstance(node, search_tree.Leaf):
            leaves.append(node.comparison)
        elif isinstance(node, (search_tree.AllOf, search_tree.AnyOf)):
            stack.extend(node.children)
        elif isinstance(node, search_tree.Not):
            stack.append(node.child)
        else:
            leaves.append(node)
    named = {"metric": keys.metrics, "param": keys.params, "tag": keys.tags}
    for item in [*leaves, *terms]:
        if item.entity in named:
            if item.key in named[item.entity]:
                return True
        elif item.entity == "label":
            if keys.tags:
                return True
        elif item.entity == "dataset":
            if keys.datasets:
                return True
        elif item.entity != "attribute":
            return True  # something this check does not know: be safe
    return False


def _any_inputs(cur: duckdb.DuckDBPyConnection) -> bool:
    """Whether any run has a dataset or model input or output."""
    return bool(cur.execute(_parsed(cur, "SELECT EXISTS (FROM run_datasets) OR EXISTS (FROM run_model_inputs) "
                                         "OR EXISTS (FROM run_model_outputs)")).fetchone()[0])


def rendered_runs(cur: duckdb.DuckDBPyConnection, run_ids: list[str], latest_table: str,
                  experiment_ids: list[str] | None, cache: RunCache,
                  memory: MemoryReads | None = None) -> list[orjson.Fragment]:
    """`runs_json` as ready JSON (embedded as is by `orjson.dumps`), through `cache`. With
    `memory` (a cursor that did not wait for pending commits), the runs that uncommitted
    batches changed come from the projector's folded state (MustWait if one cannot)."""
    return [orjson.Fragment(b) for b in _rendered_bodies(cur, run_ids, latest_table, experiment_ids, cache, memory)]


def _rendered_bodies(cur: duckdb.DuckDBPyConnection, run_ids: list[str], latest_table: str,
                     experiment_ids: list[str] | None, cache: RunCache,
                     memory: MemoryReads | None = None) -> list[bytes]:
    """`rendered_runs`' JSON bytes, one per run found, in `run_ids` order."""
    found: dict[str, bytes] = {}
    if memory is not None:
        for run_id in run_ids:
            if run_id in memory.uncommitted.runs:
                body = memory.run_json(run_id)
                if body is None:
                    raise MustWait(run_id)
                if body:   # else committed since `memory` was taken: DuckDB (and the cache) have it
                    found[run_id] = body
        if found:
            run_ids_left = [r for r in run_ids if r not in found]
            found.update(_rendered(cur, run_ids_left, latest_table, experiment_ids, cache))
            return [found[r] for r in run_ids if r in found]
    found = _rendered(cur, run_ids, latest_table, experiment_ids, cache)
    return [found[r] for r in run_ids if r in found]


def cached_runs(cur: duckdb.DuckDBPyConnection, run_ids: list[str], latest_table: str,
                experiment_ids: list[str] | None, cache: RunCache) -> list[dict[str, Any]]:
    """`runs_json` through `cache` (for dialects that reshape the runs): parsing the kept JSON
    back costs a fraction of reading the runs again."""
    found = _rendered(cur, run_ids, latest_table, experiment_ids, cache)
    return [orjson.loads(found[r]) for r in run_ids if r in found]


def get_run(cur: duckdb.DuckDBPyConnection, run_id: str, latest_table: str,
            cache: RunCache | None = None) -> dict[str, Any] | orjson.Fragment | None:
    """The run as a dict, or with `cache` as ready JSON (an `orjson.Fragment`)."""
    found: list[Any] = (runs_json(cur, [run_id], latest_table) if cache is None
                        else rendered_runs(cur, [run_id], latest_table, None, cache))
    return found[0] if found else None


def run_ref(cur: duckdb.DuckDBPyConnection, run_id: str) -> tuple[str, str, str] | None:
    """(experiment_id, run lifecycle_stage, experiment lifecycle_stage) of a run, or None."""
    row = cur.execute("SELECT r.experiment_id, r.lifecycle_stage, e.lifecycle_stage FROM runs r "
                      "JOIN experiments e USING (experiment_id) WHERE r.run_id = ?", [run_id]).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def search_runs(cur: duckdb.DuckDBPyConnection, *, experiment_ids: list[str], filter_string: str | None,
                run_view_type: Any, max_results: int | None, order_by: list[str], page_token: str | None,
                latest_table: str, cursors: SearchCursors, cache: RunCache | None = None,
                filter_tree: search_tree.Node | None = None, memory: MemoryReads | None = None,
                results: SearchCache | None = None) -> dict[str, Any]:
    """One page of runs. `filter_tree` (a boolean filter, query.search_tree) replaces
    `filter_string` when given. The first page computes the full ordered id list and, when more pages
    follow, keeps it under a cursor named in the page token; later pages read that snapshot.
    With `cache`, the runs are ready JSON (`rendered_runs`) rather than dicts. With `memory`,
    `cur` did not wait for pending commits: MustWait if the answer depends on them beyond the
    runs `memory` can render. With `results` (and `cache`, and no `memory`: `cur` waited for
    every answered write), a first page is answered from, or kept in, the search cache, which
    serves it only while nothing was committed since (query.search_cache)."""
    if memory is not None and cache is None:
        raise MustWait("no rendered-run cache")
    limit = _max_results(max_results, default=1000)
    if (results is not None and cache is not None and memory is None and not page_token and experiment_ids
            and filter_tree is None and results.enabled):
        return _search_runs_cached(cur, results, cache, cursors, experiment_ids, filter_string, run_view_type,
                                   limit, order_by, latest_table)
    if page_token:
        cursor, offset = _decode_cursor_token(page_token)
        snapshot = cursors.get(cursor)
        if snapshot is None:
            raise InvalidParameterValue("This page token has expired (or was issued by another replica); "
                                        "start the search again without a page token.")
        ids, experiment_ids = snapshot
    else:
        if not experiment_ids:
            return {}
        offset, ids = 0, _matching_run_ids(cur, experiment_ids, filter_string, run_view_type, order_by, latest_table,
                                           filter_tree, memory)
        cursor = cursors.put((ids, list(experiment_ids))) if len(ids) > limit else ""
    page = ids[offset:offset + limit]
    if not isinstance(page, list):
        page = page.to_pylist()
    runs = (runs_json(cur, page, latest_table, experiment_ids) if cache is None
            else rendered_runs(cur, page, latest_table, experiment_ids, cache, memory))
    out: dict[str, Any] = {"runs": runs}
    if len(ids) > offset + limit:
        out["next_page_token"] = tokens.encode({"cursor": cursor, "offset": offset + limit})
    return _compact(out)


def _search_key(experiment_ids: list[str], filter_string: str | None, run_view_type: Any, limit: int,
                order_by: list[str], latest_table: str) -> tuple[Any, ...]:
    return (tuple(experiment_ids), filter_string, _view_code(run_view_type), limit, tuple(order_by), latest_table)


def _kept_page(hit: CachedSearch, limit: int, cursors: SearchCursors) -> dict[str, Any]:
    """The answer a kept search gives: its runs, and a fresh snapshot for the next pages (as a
    fresh search makes)."""
    out: dict[str, Any] = {"runs": [orjson.Fragment(b) for b in hit.page]}
    if len(hit.ids) > limit:
        cursor = cursors.put((hit.ids, hit.experiment_ids))
        out["next_page_token"] = tokens.encode({"cursor": cursor, "offset": limit})
    return _compact(out)


def kept_search_runs(results: SearchCache, cursors: SearchCursors, *, experiment_ids: list[str],
                     filter_string: str | None, run_view_type: Any, max_results: int | None, order_by: list[str],
                     page_token: str | None, latest_table: str) -> dict[str, Any] | None:
    """`search_runs`' answer when the search cache holds it, without a cursor; None otherwise.
    Only for a caller that knows every write already answered is committed (the cache is then
    current: query.search_cache)."""
    if page_token or not experiment_ids or not results.enabled:
        return None
    limit = _max_results(max_results, default=1000)
    hit = results.get(_search_key(experiment_ids, filter_string, run_view_type, limit, order_by, latest_table))
    return None if hit is None else _kept_page(hit, limit, cursors)


def _search_runs_cached(cur: duckdb.DuckDBPyConnection, results: SearchCache, cache: RunCache,
                        cursors: SearchCursors, experiment_ids: list[str], filter_string: str | None,
                        run_view_type: Any, limit: int, order_by: list[str], latest_table: str) -> dict[str, Any]:
    """`search_runs`' first page through the search cache: the same answer as without it."""
    key = _search_key(experiment_ids, filter_string, run_view_type, limit, order_by, latest_table)
    hit = results.get(key)
    if hit is None:
        token = results.token()   # before reading: a commit after it makes the entry unusable
        ids = _matching_run_ids(cur, experiment_ids, filter_string, run_view_type, order_by, latest_table)
        page = ids[:limit]
        if not isinstance(page, list):
            page = page.to_pylist()
        bodies = _rendered_bodies(cur, page, latest_table, experiment_ids, cache)
        hit = CachedSearch(ids, list(experiment_ids), bodies, 0)
        results.put(key, token, ids, hit.experiment_ids, bodies)
    return _kept_page(hit, limit, cursors)


def _matching_run_ids(cur: duckdb.DuckDBPyConnection, experiment_ids: list[str], filter_string: str | None,
                      run_view_type: Any, order_by: list[str] | list[search_filter.OrderTerm], latest_table: str,
                      filter_tree: search_tree.Node | None = None, memory: MemoryReads | None = None) -> Any:
    """The ordered ids of every matching run: a list, or past `_ARROW_FROM` ids an Arrow array
    (20,000 ids arrive several times faster as one Arrow column than as Python tuples, while
    converting a few hundred costs more than it saves). Either one slices into pages."""
    try:
        terms = (order_by if all(isinstance(t, search_filter.OrderTerm) for t in order_by)
                 else search_filter.parse_runs_order_by(order_by))
        where = search_filter.parse_runs_filter(filter_string) if filter_tree is None else filter_tree
        sql, params = search_sql.compile_runs_search(where, terms, latest_table, experiment_ids,
                                                     _view_code(run_view_type))
    except SearchFilterError as e:
        raise InvalidParameterValue(str(e)) from e
    if memory is not None and _depends_on(where, list(terms), memory.uncommitted.keys):
        raise MustWait("the search names what uncommitted writes changed")
    result = cur.execute(_parsed(cur, sql), params)
    first = result.fetchmany(_ARROW_FROM)
    if len(first) < _ARROW_FROM:
        return [row[0] for row in first]
    rest = result.to_arrow_table().column(0)
    return pa.chunked_array([pa.array([row[0] for row in first], rest.type), *rest.chunks])


def search_run_ids(cur: duckdb.DuckDBPyConnection, experiment_ids: list[str], filter_tree: search_tree.Node,
                   order: list[search_filter.OrderTerm], latest_table: str, run_view_type: Any = None) -> Any:
    """The ordered ids of every run of `experiment_ids` matching a filter tree (a list, or an
    Arrow array for many), as runs/search computes them; for dialects that page on their own."""
    return _matching_run_ids(cur, experiment_ids, None, run_view_type, order, latest_table, filter_tree)


_ARROW_FROM = 2048
# DuckDB warns that Arrow output of an execute() result copies the rows; the mixed list/Arrow
# fetch above pays for that copy knowingly (a relation, `cur.sql(...)`, measured slower here).
warnings.filterwarnings("ignore", message="Arrow output on a DB-API result", category=UserWarning,
                        module=__name__.replace(".", r"\."))


def _decode_cursor_token(token: str) -> tuple[str, int]:
    try:
        doc = tokens.decode(token)
    except tokens.BadPageToken:
        doc = {}
    cursor, offset = doc.get("cursor"), doc.get("offset")
    if not isinstance(cursor, str) or not tokens.non_negative_int(offset):
        raise InvalidParameterValue(f"Invalid page token, could not decode: {shown_value(token)}")
    return cursor, offset


# ----- metric history

def history_page_bounds(max_results: int | None, page_token: str | None) -> tuple[int | None, int]:
    """(limit, offset) of a get-history request, checked before any byte of the answer is sent."""
    offset = decode_page_token(page_token)
    if max_results is not None and max_results <= 0:
        raise InvalidParameterValue(
            f"Invalid value {max_results} for parameter 'max_results' supplied. It must be a positive integer")
    # Any larger page is the whole rest of the history; clamped so LIMIT n + 1 stays a BIGINT.
    return (None if max_results is None else min(max_results, tokens.MAX_OFFSET)), offset


def metric_history(cur: duckdb.DuckDBPyConnection, run_id: str, key: str, *, max_results: int | None,
                   page_token: str | None) -> dict[str, Any]:
    """One page of a history as a dict (the streamed `iter_metric_history_json` is what the API sends)."""
    return orjson.loads(b"".join(iter_metric_history_json(cur, run_id, key, *history_page_bounds(max_results, page_token))))


def iter_metric_history_json(cur: duckdb.DuckDBPyConnection, run_id: str, key: str, limit: int | None = None,
                             offset: int = 0, chunk: int = 100000) -> Iterator[bytes]:
    """A history (or with `limit`, one page from `offset`) as JSON bytes, produced in chunks so
    no giant list is built: `{"metrics": [...], "next_page_token": ...}` in MLflow's shape.

    Formatting is vectorised: DuckDB hands over Arrow batches; values are formatted by one
    orjson call per batch (so floats print exactly as orjson prints them, NaN fixed up to
    "NaN"), integers by Arrow, and each row is assembled by an Arrow string kernel. A page reads
    one row past its end to know whether another follows; batches go out one behind the
    reader so that row can be dropped from the last."""
    sql = ("SELECT value, timestamp, step FROM metrics WHERE run_id = $1 AND key = $2 "
           "ORDER BY timestamp, step, value")
    params: list[Any] = [run_id, key]
    if limit is not None:
        sql, params = sql + " LIMIT $3 OFFSET $4", [*params, limit + 1, offset]
    elif offset:
        sql, params = sql + " OFFSET $3", [*params, offset]
    batches = cur.sql(sql, params=params).to_arrow_reader(chunk)
    prefix = pa.scalar('{"key":' + orjson.dumps(key).decode() + ',"value":', pa.large_string())
    emitted = 0
    pending: pa.RecordBatch | None = None
    first = True
    for batch in batches:
        if not batch.num_rows:
            continue
        if pending is not None:
            yield (b'{"metrics":[' if first else b",") + _history_rows_json(pending, prefix)
            first, emitted = False, emitted + pending.num_rows
        pending = batch
    more = False
    if pending is not None and limit is not None and emitted + pending.num_rows > limit:
        pending, more = pending.slice(0, limit - emitted), True
    if pending is not None and pending.num_rows:
        yield (b'{"metrics":[' if first else b",") + _history_rows_json(pending, prefix)
        first = False
    if first:
        yield b"{}"
        return
    token = b',"next_page_token":' + orjson.dumps(encode_page_token(offset + limit)) if more and limit else b""
    yield b"]" + token + b"}"


def _history_rows_json(batch: pa.RecordBatch, prefix: pa.Scalar) -> bytes:
    """Rows (value, timestamp, step) of `batch` as comma-separated JSON metric objects."""
    from array import array

    import pyarrow.compute as pc

    lit = lambda s: pa.scalar(s, pa.large_string())  # noqa: E731
    n = batch.num_rows
    values, timestamps, steps = (batch.column(i) for i in range(3))
    floats = array("d")
    floats.frombytes(values.buffers()[1][values.offset * 8:(values.offset + n) * 8])
    text = orjson.dumps(floats.tolist())[1:-1].decode()  # NaN and ±inf print as null
    formatted = pc.list_flatten(pc.split_pattern(pa.array([text], pa.large_string()), ","))
    formatted = pc.if_else(pc.is_nan(values), lit('"NaN"'), formatted)
    rows = pc.binary_join_element_wise(prefix, formatted, lit(',"timestamp":'), pc.cast(timestamps, pa.large_string()),
                                       lit(',"step":'), pc.cast(steps, pa.large_string()), lit("},"), lit(""))
    offsets = rows.buffers()[1]
    lo = int.from_bytes(offsets[rows.offset * 8:rows.offset * 8 + 8], "little")
    hi = int.from_bytes(offsets[(rows.offset + n) * 8:(rows.offset + n) * 8 + 8], "little")
    return rows.buffers()[2][lo:hi - 1].to_pybytes()  # drop the last row's trailing comma


# ----- shared request pieces

def _max_results(value: int | None, default: int) -> int:
    if value is None:
        return default
    if value <= 0 or value > MAX_RESULTS_LIMIT:
        raise InvalidParameterValue(
            f"Invalid value {value} for parameter 'max_results' supplied. It must be at most "
            f"{MAX_RESULTS_LIMIT} and a positive integer.")
    return value


def _view_code(view_type: Any) -> int:
    if view_type is None:
        return 1
    if view_type in ("1", "2", "3"):  # a query string's "3"
        view_type = int(view_type)
    # only a str or an int can be a view type; a list or an object is not even a dict key
    code = VIEW_TYPES.get(view_type) if type(view_type) in (str, int) else None
    if code is None:
        raise InvalidParameterValue(
            f"Invalid view type {shown_value(view_type)}; use ACTIVE_ONLY, DELETED_ONLY or ALL.")
    return code


def _stage_clause(column: str, view_type: Any) -> str:
    return {1: f"{column} = 'active'", 2: f"{column} = 'deleted'", 3: "TRUE"}[_view_code(view_type)]


def encode_page_token(offset: int) -> str:
    return tokens.encode({"offset": offset})


def decode_page_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = tokens.decode(token).get("offset")
    except tokens.BadPageToken:
        offset = None
    if not tokens.non_negative_int(offset):
        raise InvalidParameterValue(f"Invalid page token, could not decode: {shown_value(token)}")
    return offset
