"""The server keeps rendered runs between reads (query.run_cache); a run read before a write
must show the write on the next read, by runs/get and by runs/search (real Kafka + DuckDB)."""

from __future__ import annotations

import random
from typing import Any, Callable

import duckdb
import httpx
import orjson
import pytest

from runledger.projector.schema import LATEST_TABLES
from runledger.query import reader
from tests.conftest import RunledgerServer


def ok(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 200, f"{resp.status_code} {resp.text[:300]}"
    return resp.json()


def read_both(api: httpx.Client, exp_id: str, run_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The run by runs/get, and as the ALL-view search of its experiment shows it."""
    got = ok(api.get("/runs/get", params={"run_id": run_id}))["run"]
    found = ok(api.post("/runs/search", json={"experiment_ids": [exp_id], "run_view_type": "ALL"})).get("runs", [])
    return got, next((r for r in found if r["info"]["run_id"] == run_id), None)


DATASET = {"dataset": {"name": "train", "digest": "abc", "source_type": "local", "source": "/d"},
           "tags": [{"key": "mlflow.data.context", "value": "training"}]}

# write -> what the next read must show
WRITES: dict[str, tuple[Callable[[httpx.Client, str, str], Any], Callable[[dict[str, Any]], bool]]] = {
    "set-tag": (lambda api, e, r: api.post("/runs/set-tag", json={"run_id": r, "key": "t", "value": "new"}),
                lambda run: {"key": "t", "value": "new"} in run["data"]["tags"]),
    "delete-tag": (lambda api, e, r: api.post("/runs/delete-tag", json={"run_id": r, "key": "old"}),
                   lambda run: all(t["key"] != "old" for t in run["data"].get("tags", []))),
    "log-parameter": (lambda api, e, r: api.post("/runs/log-parameter", json={"run_id": r, "key": "p2", "value": "v"}),
                      lambda run: {"key": "p2", "value": "v"} in run["data"]["params"]),
    "log-metric": (lambda api, e, r: api.post("/runs/log-metric", json={"run_id": r, "key": "m", "value": 9.5,
                                                                         "timestamp": 50, "step": 5}),
                   lambda run: run["data"]["metrics"] == [{"key": "m", "value": 9.5, "timestamp": 50, "step": 5}]),
    "log-batch": (lambda api, e, r: api.post("/runs/log-batch", json={
                      "run_id": r, "metrics": [{"key": "m2", "value": 1, "timestamp": 1, "step": 0}],
                      "params": [{"key": "p3", "value": "x"}], "tags": [{"key": "t3", "value": "y"}]}),
                  lambda run: ({"key": "m2", "value": 1, "timestamp": 1, "step": 0} in run["data"]["metrics"]
                               and {"key": "p3", "value": "x"} in run["data"]["params"]
                               and {"key": "t3", "value": "y"} in run["data"]["tags"])),
    "update": (lambda api, e, r: api.post("/runs/update", json={"run_id": r, "status": "FINISHED", "end_time": 77,
                                                                 "run_name": "renamed"}),
               lambda run: (run["info"]["status"], run["info"]["end_time"], run["info"]["run_name"])
               == ("FINISHED", 77, "renamed")),
    "delete-run": (lambda api, e, r: api.post("/runs/delete", json={"run_id": r}),
                   lambda run: run["info"]["lifecycle_stage"] == "deleted"),
    "delete-experiment": (lambda api, e, r: api.post("/experiments/delete", json={"experiment_id": e}),
                          lambda run: run["info"]["lifecycle_stage"] == "deleted"),
    "log-inputs": (lambda api, e, r: api.post("/runs/log-inputs", json={"run_id": r, "datasets": [DATASET]}),
                   lambda run: [d["dataset"]["name"] for d in run["inputs"].get("dataset_inputs", [])] == ["train"]),
}


@pytest.mark.parametrize("write", sorted(WRITES))
def test_a_run_read_before_a_write_shows_the_write_on_the_next_read(api: httpx.Client, write: str) -> None:
    exp_id = ok(api.post("/experiments/create", json={"name": f"cache-{write}"}))["experiment_id"]
    run_id = ok(api.post("/runs/create", json={"experiment_id": exp_id, "start_time": 1,
                                               "tags": [{"key": "old", "value": "1"}]}))["run"]["info"]["run_id"]
    ok(api.post("/runs/log-metric", json={"run_id": run_id, "key": "m", "value": 1, "timestamp": 10, "step": 1}))
    for _ in range(2):  # the second read is answered from the cache
        got, searched = read_both(api, exp_id, run_id)
        assert got == searched
    do, shows = WRITES[write]
    ok(do(api, exp_id, run_id))
    got, searched = read_both(api, exp_id, run_id)
    assert shows(got), got
    assert searched == got


def test_restoring_a_deleted_experiment_shows_its_runs_active_again(api: httpx.Client) -> None:
    exp_id = ok(api.post("/experiments/create", json={"name": "cache-restore"}))["experiment_id"]
    run_id = ok(api.post("/runs/create", json={"experiment_id": exp_id}))["run"]["info"]["run_id"]
    ok(api.post("/experiments/delete", json={"experiment_id": exp_id}))
    assert read_both(api, exp_id, run_id)[0]["info"]["lifecycle_stage"] == "deleted"
    ok(api.post("/experiments/restore", json={"experiment_id": exp_id}))
    got, searched = read_both(api, exp_id, run_id)
    assert got["info"]["lifecycle_stage"] == "active" and searched == got


def test_a_metric_point_below_the_latest_leaves_the_shown_latest_value(api: httpx.Client) -> None:
    # Below under the default (step) rule: an earlier step, whatever its timestamp.
    run_id = ok(api.post("/runs/create", json={"experiment_id": "0"}))["run"]["info"]["run_id"]
    ok(api.post("/runs/log-metric", json={"run_id": run_id, "key": "m", "value": 3, "timestamp": 10, "step": 2}))
    before = ok(api.get("/runs/get", params={"run_id": run_id}))["run"]
    ok(api.post("/runs/log-metric", json={"run_id": run_id, "key": "m", "value": 7, "timestamp": 50, "step": 1}))
    assert ok(api.get("/runs/get", params={"run_id": run_id}))["run"] == before


def test_interleaved_reads_and_writes_end_as_the_uncached_read_model(make_server: Any) -> None:
    # Many small writes of several shapes, each followed by reads that fill
    # the cache; the last answers must equal a fresh rendering from the DuckDB file.
    server: RunledgerServer = make_server()
    rnd = random.Random(4)
    last: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=30) as api:
        exp_id = ok(api.post("/experiments/create", json={"name": "mixed"}))["experiment_id"]
        runs = [ok(api.post("/runs/create", json={"experiment_id": exp_id, "start_time": i}))["run"]["info"]["run_id"]
                for i in range(6)]
        for i in range(120):
            run_id = rnd.choice(runs)
            shape = rnd.randrange(5)
            if shape == 0:
                ok(api.post("/runs/set-tag", json={"run_id": run_id, "key": f"t{rnd.randrange(3)}", "value": str(i)}))
            elif shape == 1:
                ok(api.post("/runs/log-parameter", json={"run_id": run_id, "key": f"p{i}", "value": str(i)}))
            elif shape == 2:
                ok(api.post("/runs/log-metric", json={"run_id": run_id, "key": f"m{rnd.randrange(2)}",
                                                      "value": rnd.random(), "timestamp": rnd.randrange(100),
                                                      "step": rnd.randrange(10)}))
            elif shape == 3:
                ok(api.post("/runs/log-batch", json={
                    "run_id": run_id, "tags": [{"key": "t0", "value": f"x{i}"}],
                    "metrics": [{"key": "m0", "value": i, "timestamp": 100 + i, "step": 0}]}))
            else:
                ok(api.post("/runs/update", json={"run_id": run_id, "status": rnd.choice(["RUNNING", "FINISHED"])}))
            for run in ok(api.post("/runs/search", json={"experiment_ids": [exp_id]}))["runs"]:
                last[run["info"]["run_id"]] = run
            got = ok(api.get("/runs/get", params={"run_id": run_id}))["run"]
            assert got == last[run_id]
    server.stop()
    with duckdb.connect(str(server.duckdb_path), read_only=True) as con:
        fresh = reader.runs_json(con, runs, LATEST_TABLES["step"])  # the server's default rule
    assert orjson.loads(orjson.dumps(fresh)) == [last[r] for r in runs]


def test_concurrent_readers_never_see_a_run_go_back_in_time(make_server: Any) -> None:
    # One writer raises a tag's value on a few runs; readers poll runs/get and runs/search
    # meanwhile. A reader may see a value late, never older than one it (or the writer, after
    # its write was answered) saw before: a cached run stored after a newer commit would.
    import threading

    server: RunledgerServer = make_server()
    base = f"{server.url}/api/2.0/mlflow"
    with httpx.Client(base_url=base, timeout=30) as api:
        exp_id = ok(api.post("/experiments/create", json={"name": "race"}))["experiment_id"]
        runs = [ok(api.post("/runs/create", json={"experiment_id": exp_id}))["run"]["info"]["run_id"]
                for _ in range(3)]
    answered = {r: -1 for r in runs}  # the last value whose write was answered
    done = threading.Event()
    problems: list[str] = []

    def value_of(run: dict[str, Any]) -> int:
        return max((int(t["value"]) for t in run["data"].get("tags", []) if t["key"] == "v"), default=-1)

    def reader(use_search: bool) -> None:
        seen = {r: -1 for r in runs}
        with httpx.Client(base_url=base, timeout=30) as api:
            while not done.is_set():
                floor = dict(answered)  # read before the request: those writes were answered
                if use_search:
                    got = {r["info"]["run_id"]: value_of(r) for r in
                           ok(api.post("/runs/search", json={"experiment_ids": [exp_id]}))["runs"]}
                else:
                    run_id = random.choice(runs)
                    got = {run_id: value_of(ok(api.get("/runs/get", params={"run_id": run_id}))["run"])}
                for run_id, v in got.items():
                    if v < seen[run_id] or v < floor[run_id]:
                        problems.append(f"{run_id}: saw {v} after {max(seen[run_id], floor[run_id])}")
                    seen[run_id] = max(seen[run_id], v)

    threads = [threading.Thread(target=reader, args=(i % 2 == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        with httpx.Client(base_url=base, timeout=30) as api:
            for i in range(150):
                run_id = runs[i % len(runs)]
                ok(api.post("/runs/set-tag", json={"run_id": run_id, "key": "v", "value": str(i)}))
                answered[run_id] = i
    finally:
        done.set()
        for t in threads:
            t.join()
    assert problems == []
