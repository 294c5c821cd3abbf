"""The unmodified `wandb.Api` (0.31, with its Go helper) against a real Runledger (real Kafka,
real DuckDB), over runs logged with the unmodified `mlflow` client."""

from __future__ import annotations

import base64
import os
from typing import Any, Iterator

import httpx
import orjson
import mlflow
import pytest
from mlflow import MlflowClient

ENTITY = "runledger"  # the default RUNLEDGER_WANDB_ENTITY
KEY = "local-" + "k" * 40


@pytest.fixture(scope="module")
def wandb_env(server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """W&B's client configured by its environment only, in throwaway folders."""
    home = tmp_path_factory.mktemp("wandb-home")
    env = {"WANDB_API_KEY": KEY, "WANDB_BASE_URL": server.url, "WANDB_DIR": str(home),
           "WANDB_CONFIG_DIR": str(home / "config"), "WANDB_CACHE_DIR": str(home / "cache"),
           "WANDB_DATA_DIR": str(home / "data"), "WANDB_SILENT": "true", "WANDB_MODE": "online"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def project(server: Any, wandb_env: None) -> dict[str, str]:
    """Experiment "wb-proj": five runs (a..e) with params, labels, and a loss history each;
    run c has a spike at step 57."""
    mlflow.set_tracking_uri(server.url)
    client = MlflowClient(server.url)
    exp = client.create_experiment("wb-proj")
    ids = {}
    for i, name in enumerate("abcde"):
        run = client.create_run(exp, run_name=name, start_time=1_700_000_000_000 + i * 1000)
        run_id = run.info.run_id
        ids[name] = run_id
        client.log_param(run_id, "lr", 0.01 * (i + 1))
        client.log_param(run_id, "optimizer", "adam" if i % 2 == 0 else "sgd")
        client.set_tag(run_id, "baseline" if i < 2 else "candidate", "")
        client.set_tag(run_id, "team", "vision")
        from mlflow.entities import Metric

        points = [Metric("loss", 1.0 / (s + 1) + i, 1_700_000_000_000 + i * 1000 + s, s) for s in range(200)]
        if name == "c":
            points[57] = Metric("loss", 99.0, points[57].timestamp, 57)
        for k in range(0, len(points), 100):
            client.log_batch(run_id, metrics=points[k:k + 100])
        if name != "e":
            client.set_terminated(run_id, "FINISHED" if name != "d" else "FAILED")
    return ids


@pytest.fixture(scope="module")
def api(project: dict[str, str]) -> Any:
    import wandb

    return wandb.Api(timeout=60)


def _names(runs: Any) -> list[str]:
    return [r.name for r in runs]


def test_api_logs_in_and_sees_the_entity(api: Any) -> None:
    assert api.default_entity == ENTITY


def test_runs_are_the_experiments_runs_with_config_summary_labels_and_state(api: Any, project: dict) -> None:
    runs = {r.name: r for r in api.runs(f"{ENTITY}/wb-proj")}
    assert set(runs) == set("abcde")
    a = runs["a"]
    assert a.id == project["a"]
    assert a.config == {"lr": 0.01, "optimizer": "adam"}
    assert a.summary["loss"] == pytest.approx(1 / 200)
    assert a.summary["_step"] == 199
    assert a.tags == ["baseline"]
    assert (a.state, runs["d"].state, runs["e"].state) == ("finished", "failed", "running")


def test_default_order_is_oldest_first(api: Any) -> None:
    assert _names(api.runs(f"{ENTITY}/wb-proj")) == list("abcde")


@pytest.mark.parametrize("filters, expected", [
    ({"config.lr": {"$gt": 0.025}}, "cde"),
    ({"config.optimizer": "sgd"}, "bd"),
    ({"$or": [{"config.optimizer": "sgd"}, {"state": "running"}]}, "bde"),
    ({"state": {"$in": ["failed", "running"]}}, "de"),
    ({"tags": {"$in": ["baseline"]}}, "ab"),
    ({"tags": {"$nin": ["baseline"]}}, "cde"),
    ({"displayName": {"$regex": "^[ace]$"}}, "ace"),
    ({"summary_metrics.loss": {"$lt": 2.5}}, "abc"),
    ({"$and": [{"config.lr": {"$gte": 0.02}}, {"$nor": [{"state": "failed"}]}]}, "bce"),
    ({"createdAt": {"$gt": "2023-11-14T22:13:21"}}, "cde"),
    ({"config.missing": {"$exists": False}}, "abcde"),
])
def test_runs_filters(api: Any, filters: dict, expected: str) -> None:
    assert _names(api.runs(f"{ENTITY}/wb-proj", filters=filters)) == list(expected)


def test_runs_order_by_summary_metric_descending(api: Any) -> None:
    assert _names(api.runs(f"{ENTITY}/wb-proj", order="-summary_metrics.loss")) == list("edcba")


def test_runs_pages_return_every_run_once(api: Any) -> None:
    runs = api.runs(f"{ENTITY}/wb-proj", order="+created_at", per_page=2)
    assert len(runs) == 5
    assert _names(runs) == list("abcde")


def test_a_bad_filter_reaches_the_caller_as_an_error(api: Any) -> None:
    with pytest.raises(Exception, match="Unknown operator"):
        list(api.runs(f"{ENTITY}/wb-proj", filters={"config.lr": {"$near": 1}}))


def test_sampled_history_keeps_the_spike(api: Any, project: dict) -> None:
    run = api.run(f"{ENTITY}/wb-proj/{project['c']}")
    rows = run.history(keys=["loss"], samples=20, pandas=False)
    assert len(rows) <= 22
    assert max(r["loss"] for r in rows) == 99.0
    assert [r["_step"] for r in rows] == sorted(r["_step"] for r in rows)
    assert rows[0]["_step"] == 0 and rows[-1]["_step"] == 199


def test_full_history_rows_carry_step_timestamp_and_runtime(api: Any, project: dict) -> None:
    run = api.run(f"{ENTITY}/wb-proj/{project['a']}")
    rows = run.history(samples=1000, pandas=False)
    assert len(rows) == 200
    assert rows[3] == {"_step": 3, "_timestamp": pytest.approx(1_700_000_000.003), "_runtime": pytest.approx(0.003),
                       "loss": pytest.approx(0.25)}


def test_scan_history_returns_every_point_in_order(api: Any, project: dict) -> None:
    run = api.run(f"{ENTITY}/wb-proj/{project['c']}")
    rows = list(run.scan_history(page_size=64))
    assert [r["_step"] for r in rows] == list(range(200))
    assert rows[57]["loss"] == 99.0


def test_scan_history_with_keys_and_a_step_range(api: Any, project: dict) -> None:
    run = api.run(f"{ENTITY}/wb-proj/{project['b']}")
    rows = list(run.scan_history(keys=["loss"], min_step=10, max_step=20))
    assert [r["_step"] for r in rows] == list(range(10, 20))
    assert set(rows[0]) == {"_step", "loss"}


def test_update_writes_labels_config_name_and_notes_as_events(api: Any, server: Any, project: dict) -> None:
    run = api.run(f"{ENTITY}/wb-proj/{project['e']}")
    run.tags = ["candidate", "promoted"]
    run.config["epochs"] = 3
    run.name = "e-renamed"
    run.notes = "best so far"
    run.update()
    got = MlflowClient(server.url).get_run(project["e"])
    assert got.data.params["epochs"] == "3"
    assert got.data.tags["promoted"] == ""
    assert got.data.tags["mlflow.note.content"] == "best so far"
    assert got.info.run_name == "e-renamed"
    again = api.run(f"{ENTITY}/wb-proj/{project['e']}")
    assert (again.tags, again.name, again.config["epochs"]) == (["candidate", "promoted"], "e-renamed", 3)


def test_removing_a_label_deletes_the_tag(api: Any, server: Any, project: dict) -> None:
    run = api.run(f"{ENTITY}/wb-proj/{project['d']}")
    run.tags = []
    run.update()
    assert "candidate" not in MlflowClient(server.url).get_run(project["d"]).data.tags


def test_changing_a_param_through_update_is_refused_and_the_caller_sees_why(api: Any, server: Any,
                                                                           project: dict) -> None:
    run = api.run(f"{ENTITY}/wb-proj/{project['b']}")
    run.config["lr"] = 0.5
    run.tags = ["baseline", "not-applied"]
    with pytest.raises(Exception, match="Changing param values is not allowed"):
        run.update()
    got = MlflowClient(server.url).get_run(project["b"])
    assert got.data.params["lr"] == "0.02"
    assert "not-applied" not in got.data.tags  # one event: nothing half-applied


def test_summary_update_logs_a_new_point(api: Any, server: Any, project: dict) -> None:
    run = api.run(f"{ENTITY}/wb-proj/{project['a']}")
    run.summary["best_acc"] = 0.93
    run.summary.update()
    history = MlflowClient(server.url).get_metric_history(project["a"], "best_acc")
    assert [m.value for m in history] == [0.93]


def test_delete_removes_the_run_from_listings(api: Any, server: Any) -> None:
    client = MlflowClient(server.url)
    exp = client.create_experiment("wb-delete")
    doomed = client.create_run(exp, run_name="doomed").info.run_id
    client.create_run(exp, run_name="kept")
    api.run(f"{ENTITY}/wb-delete/{doomed}").delete()
    assert _names(api.runs(f"{ENTITY}/wb-delete")) == ["kept"]
    assert client.get_run(doomed).info.lifecycle_stage == "deleted"


def test_unknown_project_is_an_error(api: Any) -> None:
    with pytest.raises(Exception):
        list(api.runs(f"{ENTITY}/no-such-project"))


# ----- the wire, without the client

def _post(server: Any, body: dict, key: str = KEY) -> httpx.Response:
    auth = "Basic " + base64.b64encode(f"api:{key}".encode()).decode()
    return httpx.post(f"{server.url}/graphql", json=body, headers={"Authorization": auth}, timeout=30)


def test_a_malformed_key_is_refused_with_401(server: Any) -> None:
    r = _post(server, {"query": "{ viewer { id } }"}, key="short")
    assert r.status_code == 401
    assert "malformed" in r.json()["errors"][0]["message"]


def test_a_missing_key_is_refused_with_401(server: Any) -> None:
    r = httpx.post(f"{server.url}/graphql", json={"query": "{ viewer { id } }"}, timeout=30)
    assert r.status_code == 401


def test_an_empty_operation_name_means_no_name(server: Any) -> None:
    r = _post(server, {"query": "query Viewer { viewer { entity } }", "operationName": "", "variables": {}})
    assert r.json() == {"data": {"viewer": {"entity": ENTITY}}}


def test_an_unknown_field_is_a_graphql_error(server: Any) -> None:
    r = _post(server, {"query": "{ viewer { shoeSize } }"})
    assert r.status_code == 200
    assert "shoeSize" in r.json()["errors"][0]["message"]


def test_projects_are_the_active_experiments(api: Any) -> None:
    names = [p.name for p in api.projects(ENTITY)]
    assert "wb-proj" in names
    assert api.project("wb-proj", entity=ENTITY).name == "wb-proj"


def test_writes_are_events_recorded_as_coming_through_the_wandb_api(server: Any, project: dict) -> None:
    headers = {"Authorization": "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode(),
               "X-WANDB-USERNAME": "ada"}
    doc = ("mutation UpsertBucket($id: String, $summaryMetrics: JSONString) { upsertBucket(input: "
           "{id: $id, summaryMetrics: $summaryMetrics}) { bucket { id } } }")
    summary = {"loss": 0.5, "_step": 1}
    r = httpx.post(f"{server.url}/graphql", headers=headers, timeout=30, json={
        "query": doc, "variables": {"id": project["d"], "summaryMetrics": orjson.dumps(summary).decode()}})
    assert r.json() == {"data": {"upsertBucket": {"bucket": {"id": project["d"]}}}}
    trail = httpx.get(f"{server.url}/api/runledger/v1/runs/{project['d']}/events", timeout=30).json()["events"]
    last = trail[-1]
    assert (last["type"], last["api"], last["actor"]["name"]) == ("RunBatchLogged", "wandb", "ada")
