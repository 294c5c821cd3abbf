"""GET /api/runledger/v1/read-paths: how get-run reads were answered (query.read_paths), on a
real server. A get-run right after a write to a run whose JSON was read before is answered
from the projector's folded state (memory, or folded once the commit landed), never by a
DuckDB read or a wait for the commit."""

from __future__ import annotations

import time
import uuid

from tests.test_openapi import MLFLOW, NATIVE, Checked


def test_get_run_right_after_a_write_is_answered_from_the_folded_state_and_counted(server) -> None:  # type: ignore[no-untyped-def]
    check = Checked(server.url)
    exp = check("POST", f"{MLFLOW}/experiments/create", json={"name": f"paths-{uuid.uuid4().hex[:8]}"})["experiment_id"]
    run_id = check("POST", f"{MLFLOW}/runs/create", json={"experiment_id": exp, "start_time": 1})["run"]["info"]["run_id"]
    check("GET", f"{MLFLOW}/runs/get", params={"run_id": run_id})   # renders it once: its inputs are known
    before = check("GET", f"{NATIVE}/read-paths")
    for step in range(10):
        check("POST", f"{MLFLOW}/runs/log-metric", json={"run_id": run_id, "key": "loss", "value": step,
                                                          "timestamp": int(time.time() * 1000), "step": step})
        run = check("GET", f"{MLFLOW}/runs/get", params={"run_id": run_id})["run"]
        assert run["data"]["metrics"][0]["step"] == step
    after = check("GET", f"{NATIVE}/read-paths")
    moved = {way: after["get_run"][way]["count"] - before["get_run"][way]["count"] for way in after["get_run"]}
    assert moved["memory"] + moved["folded"] == 10, moved
    assert after["total"] == before["total"] + 10


def _way_of_one_get_run(check: Checked, run_id: str) -> str:
    before = check("GET", f"{NATIVE}/read-paths")["get_run"]
    check("GET", f"{MLFLOW}/runs/get", params={"run_id": run_id})
    after = check("GET", f"{NATIVE}/read-paths")["get_run"]
    (way,) = [w for w in after if after[w]["count"] != before.get(w, {}).get("count", 0)]
    return way


def test_the_fold_cache_keeps_as_many_runs_as_RUNLEDGER_FOLD_CACHE_RUNS_says(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(RUNLEDGER_FOLD_CACHE_RUNS="1", RUNLEDGER_RUN_CACHE_MB="0")
    check = Checked(server.url)
    exp = check("POST", f"{MLFLOW}/experiments/create", json={"name": "fold-cache-size"})["experiment_id"]
    older, newer = (check("POST", f"{MLFLOW}/runs/create", json={"experiment_id": exp, "start_time": 1})["run"]["info"]["run_id"]
                    for _ in range(2))
    for run_id in (older, newer):
        check("GET", f"{MLFLOW}/runs/get", params={"run_id": run_id})   # renders it once: its inputs are known
    # Only the most recently written run is held: the other one is read from DuckDB.
    assert _way_of_one_get_run(check, newer) in ("memory", "folded")
    assert _way_of_one_get_run(check, older) in ("duckdb", "waited")
