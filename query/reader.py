"""Read-model queries shaped as MLflow JSON. Each function takes its own DuckDB cursor.

MLflow's JSON conventions: unset fields and empty lists are omitted, int64 are numbers,
NaN is the string "NaN".
"""

from __future__ import annotations

import base64
import math
from typing import Any, Iterator

import duckdb
import orjson

from ingest.errors import InvalidParameterValue
from query import search_filter, search_sql
from query.search_cursors import SearchCursors
from query.search_filter import SearchFilterError

VIEW_TYPES = {"ACTIVE_ONLY": 1, "DELETED_ONLY": 2, "ALL": 3, 1: 1, 2: 2, 3: 3}
MAX_RESULTS_LIMIT = 50000

# A run is deleted if it was deleted itself or its experiment is (resolved here, at read
# time, rather than by rewriting the runs of another partition: DESIGN.md invariant 2).
_RUN_STAGE = ("CASE WHEN r.lifecycle_stage = 'deleted' OR e.lifecycle_stage = 'deleted' "
              "THEN 'deleted' ELSE 'active' END")
_RUN_COLUMNS = (f"r.run_id, r.run_name, r.experiment_id, r.user_id, r.status, r.start_time, r.end_time, "
                f"r.artifact_uri, {_RUN_STAGE} AS lifecycle_stage")


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


# ----- runs

def runs_json(cur: duckdb.DuckDBPyConnection, run_ids: list[str], latest_table: str) -> list[dict[str, Any]]:
    """Full MLflow Run objects for `run_ids`, in that order (unknown ids are skipped)."""
    if not run_ids:
        return []
    ids = [run_ids]
    infos = {r[0]: r for r in cur.execute(
        f"SELECT {_RUN_COLUMNS} FROM runs r JOIN experiments e USING (experiment_id) "
        "WHERE r.run_id IN (SELECT unnest(?::VARCHAR[]))", ids).fetchall()}
    data: dict[str, dict[str, list[dict[str, Any]]]] = {i: {"metrics": [], "params": [], "tags": []} for i in infos}
    # One round trip for the three kinds of run data (each query costs about a millisecond).
    for kind, run_id, k, text, v, ts, step in cur.execute(f"""
            SELECT 'metrics', run_id, key, NULL, value, timestamp, step FROM {latest_table}
             WHERE run_id IN (SELECT unnest($ids::VARCHAR[]))
            UNION ALL SELECT 'params', run_id, key, value, NULL, NULL, NULL FROM params
             WHERE run_id IN (SELECT unnest($ids::VARCHAR[]))
            UNION ALL SELECT 'tags', run_id, key, value, NULL, NULL, NULL FROM tags
             WHERE run_id IN (SELECT unnest($ids::VARCHAR[]))
            ORDER BY 1, 2, 3""", {"ids": run_ids}).fetchall():
        if kind == "metrics":
            data[run_id][kind].append({"key": k, "value": metric_value(v), "timestamp": ts, "step": step})
        else:
            data[run_id][kind].append({"key": k, "value": text})
    inputs: dict[str, list[dict[str, Any]]] = {}
    for run_id, name, digest, stype, source, schema, profile, tags in cur.execute(
            "SELECT run_id, name, digest, source_type, source, schema, profile, tags FROM run_datasets "
            "WHERE run_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY run_id, logged_time, name, digest", ids).fetchall():
        dataset = _compact({"name": name, "digest": digest, "source_type": stype, "source": source,
                            "schema": schema, "profile": profile})
        entry = {"tags": [{"key": k, "value": v} for k, v in orjson.loads(tags)], "dataset": dataset}
        inputs.setdefault(run_id, []).append(_compact(entry))
    out = []
    for run_id in run_ids:
        r = infos.get(run_id)
        if r is None:
            continue
        info = _compact({
            "run_id": r[0], "run_uuid": r[0], "run_name": r[1], "experiment_id": r[2], "user_id": r[3],
            "status": r[4], "start_time": r[5], "end_time": r[6], "artifact_uri": r[7], "lifecycle_stage": r[8],
        })
        info.setdefault("user_id", "")
        run_inputs = {"dataset_inputs": inputs[run_id]} if run_id in inputs else {}
        out.append({"info": info, "data": _compact(data[run_id]), "inputs": run_inputs, "outputs": {}})
    return out


def get_run(cur: duckdb.DuckDBPyConnection, run_id: str, latest_table: str) -> dict[str, Any] | None:
    found = runs_json(cur, [run_id], latest_table)
    return found[0] if found else None


def run_ref(cur: duckdb.DuckDBPyConnection, run_id: str) -> tuple[str, str, str] | None:
    """(experiment_id, run lifecycle_stage, experiment lifecycle_stage) of a run, or None."""
    row = cur.execute("SELECT r.experiment_id, r.lifecycle_stage, e.lifecycle_stage FROM runs r "
                      "JOIN experiments e USING (experiment_id) WHERE r.run_id = ?", [run_id]).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def search_runs(cur: duckdb.DuckDBPyConnection, *, experiment_ids: list[str], filter_string: str | None,
                run_view_type: Any, max_results: int | None, order_by: list[str], page_token: str | None,
                latest_table: str, cursors: SearchCursors) -> dict[str, Any]:
    """One page of runs. The first page computes the full ordered id list and, when more pages
    follow, keeps it under a cursor named in the page token; later pages read that snapshot."""
    limit = _max_results(max_results, default=1000)
    if page_token:
        cursor, offset = _decode_cursor_token(page_token)
        ids = cursors.get(cursor)
        if ids is None:
            raise InvalidParameterValue("This page token has expired (or was issued by another replica); "
                                        "start the search again without a page token.")
    else:
        if not experiment_ids:
            return {}
        offset, ids = 0, _matching_run_ids(cur, experiment_ids, filter_string, run_view_type, order_by, latest_table)
        cursor = cursors.put(ids) if len(ids) > limit else ""
    out: dict[str, Any] = {"runs": runs_json(cur, ids[offset:offset + limit], latest_table)}
    if len(ids) > offset + limit:
        out["next_page_token"] = base64.urlsafe_b64encode(orjson.dumps({"cursor": cursor, "offset": offset + limit})).decode()
    return _compact(out)


def _matching_run_ids(cur: duckdb.DuckDBPyConnection, experiment_ids: list[str], filter_string: str | None,
                      run_view_type: Any, order_by: list[str], latest_table: str) -> list[str]:
    try:
        where, where_params = search_sql.compile_runs_where(search_filter.parse_runs_filter(filter_string), latest_table)
        order, order_params = search_sql.compile_runs_order_by(search_filter.parse_runs_order_by(order_by), latest_table)
    except SearchFilterError as e:
        raise InvalidParameterValue(str(e)) from e
    stage = _stage_clause(_RUN_STAGE, run_view_type)
    return [row[0] for row in cur.execute(
        "SELECT r.run_id FROM runs r JOIN experiments e USING (experiment_id) "
        f"WHERE r.experiment_id IN (SELECT unnest(?::VARCHAR[])) AND {stage} AND ({where}) ORDER BY {order}",
        [experiment_ids, *where_params, *order_params]).fetchall()]


def _decode_cursor_token(token: str) -> tuple[str, int]:
    try:
        doc = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        cursor, offset = doc["cursor"], doc["offset"]
        if not isinstance(cursor, str) or not isinstance(offset, int) or offset < 0:
            raise ValueError
        return cursor, offset
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise InvalidParameterValue(f"Invalid page token, could not decode: {token!r}") from None


# ----- metric history

def metric_history(cur: duckdb.DuckDBPyConnection, run_id: str, key: str, *, max_results: int | None,
                   page_token: str | None) -> dict[str, Any]:
    offset = decode_page_token(page_token)
    if max_results is not None and max_results <= 0:
        raise InvalidParameterValue(
            f"Invalid value {max_results} for parameter 'max_results' supplied. It must be a positive integer")
    sql = ("SELECT key, value, timestamp, step FROM metrics WHERE run_id = ? AND key = ? "
           "ORDER BY timestamp, step, value")
    params: list[Any] = [run_id, key]
    if max_results is not None:
        sql += " LIMIT ? OFFSET ?"
        params += [max_results + 1, offset]
    rows = cur.execute(sql, params).fetchall()
    out: dict[str, Any] = {}
    if max_results is not None and len(rows) > max_results:
        rows = rows[:max_results]
        out["next_page_token"] = encode_page_token(offset + max_results)
    if rows:
        out["metrics"] = [{"key": k, "value": metric_value(v), "timestamp": ts, "step": s} for k, v, ts, s in rows]
    return out


def iter_metric_history_json(cur: duckdb.DuckDBPyConnection, run_id: str, key: str,
                             chunk: int = 100000) -> Iterator[bytes]:
    """The complete history as JSON bytes, produced in chunks so no giant list is built.

    Formatting is vectorised: DuckDB hands over Arrow batches; values are formatted by one
    orjson call per batch (so floats print exactly as orjson prints them, NaN fixed up to
    "NaN"), integers by Arrow, and each row is assembled by an Arrow string kernel."""
    from array import array

    import pyarrow as pa
    import pyarrow.compute as pc

    reader = cur.sql("SELECT value, timestamp, step FROM metrics WHERE run_id = $1 AND key = $2 "
                     "ORDER BY timestamp, step, value", params=[run_id, key]).to_arrow_reader(chunk)
    lit = lambda s: pa.scalar(s, pa.large_string())  # noqa: E731
    prefix = lit('{"key":' + orjson.dumps(key).decode() + ',"value":')
    mid_ts, mid_step, suffix, nan, empty = lit(',"timestamp":'), lit(',"step":'), lit("},"), lit('"NaN"'), lit("")
    first = True
    for batch in reader:
        n = batch.num_rows
        if not n:
            continue
        values, timestamps, steps = (batch.column(i) for i in range(3))
        floats = array("d")
        floats.frombytes(values.buffers()[1][values.offset * 8:(values.offset + n) * 8])
        text = orjson.dumps(floats.tolist())[1:-1].decode()  # NaN and ±inf print as null
        formatted = pc.list_flatten(pc.split_pattern(pa.array([text], pa.large_string()), ","))
        formatted = pc.if_else(pc.is_nan(values), nan, formatted)
        rows = pc.binary_join_element_wise(prefix, formatted, mid_ts, pc.cast(timestamps, pa.large_string()),
                                           mid_step, pc.cast(steps, pa.large_string()), suffix, empty)
        offsets = rows.buffers()[1]
        lo = int.from_bytes(offsets[rows.offset * 8:rows.offset * 8 + 8], "little")
        hi = int.from_bytes(offsets[(rows.offset + n) * 8:(rows.offset + n) * 8 + 8], "little")
        body = rows.buffers()[2][lo:hi - 1].to_pybytes()  # drop the last row's trailing comma
        yield (b'{"metrics":[' if first else b",") + body
        first = False
    yield b"{}" if first else b"]}"


# ----- shared request pieces

def _max_results(value: int | None, default: int) -> int:
    if value is None:
        return default
    if value <= 0 or value > MAX_RESULTS_LIMIT:
        raise InvalidParameterValue(
            f"Invalid value {value} for parameter 'max_results' supplied. It must be at most "
            f"{MAX_RESULTS_LIMIT} and a positive integer.")
    return value


def _stage_clause(column: str, view_type: Any) -> str:
    code = VIEW_TYPES.get(view_type if view_type is not None else 1)
    if code is None:
        raise InvalidParameterValue(f"Invalid view type {view_type!r}; use ACTIVE_ONLY, DELETED_ONLY or ALL.")
    return {1: f"{column} = 'active'", 2: f"{column} = 'deleted'", 3: "TRUE"}[code]


def encode_page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"offset": offset})).decode()


def decode_page_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = orjson.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
        if not isinstance(offset, int) or offset < 0:
            raise ValueError
        return offset
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise InvalidParameterValue(f"Invalid page token, could not decode: {token!r}") from None
