"""MLflow 3.x logged models over a real server and a real Kafka broker: create, get, finalize,
delete, tags, params, search (filters, ordering, pages), metrics linked by model_id, errors,
and a rebuild of the read model from the log."""

from __future__ import annotations

import random
import re
import time
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus, Metric
from mlflow.exceptions import MlflowException

from runledger.ingest.contract.events import Envelope, metrics_columns
from runledger.projector.fold import FoldState, LogRecord, fold_batch
from tests.conftest import RunledgerServer
from tests.log_tools import dump_tables, fold_into, interleaved_batches, read_topic, without_offsets

MODEL_ID = re.compile(r"^m-[0-9a-f]{32}$")


@pytest.fixture
def client(server: RunledgerServer) -> MlflowClient:
    return MlflowClient(server.url)


def _exp(api: httpx.Client, name: str) -> str:
    r = api.post("experiments/create", json={"name": name})
    assert r.status_code == 200, r.text
    return r.json()["experiment_id"]


def _create(api: httpx.Client, **body: Any) -> dict[str, Any]:
    r = api.post("logged-models", json=body)
    assert r.status_code == 200, r.text
    return r.json()["model"]


def _error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    assert r.json()["error_code"] == code, r.text
    return r.json()["message"]


# ----- the fold itself (pure)

def _ev(i: int, type_: str, payload: dict[str, Any], run_id: str | None = None) -> LogRecord:
    return LogRecord(0, i, Envelope(f"e{i}", type_, "1", run_id, 1000 + i, "u", payload))


def test_fold_rules_for_models_are_pure_and_batch_independent() -> None:
    mid = "m-" + "0" * 32
    records = [
        _ev(0, "LoggedModelCreated", {"model_id": mid, "name": "n", "model_type": "", "source_run_id": "",
                                      "artifact_uri": "a", "params": [["p", "1"]], "tags": [["t", "1"]]}),
        _ev(1, "LoggedModelParamsLogged", {"model_id": mid, "params": [["q", "2"], ["p", "changed"]]}),
        _ev(2, "LoggedModelTagDeleted", {"model_id": mid, "key": "nope"}),
        _ev(3, "LoggedModelFinalized", {"model_id": mid, "status": "LOGGED_MODEL_PENDING"}),
        _ev(4, "LoggedModelTagsSet", {"model_id": mid, "tags": [["t", "2"], ["t", "3"]]}),
        _ev(5, "LoggedModelFinalized", {"model_id": mid, "status": "LOGGED_MODEL_READY"}),
        _ev(6, "LoggedModelParamsLogged", {"model_id": "m-unknown", "params": [["p", "1"]]}),
        _ev(7, "LoggedModelCreated", {"model_id": mid, "name": "again", "artifact_uri": "a"}),
        _ev(8, "LoggedModelCreated", {"model_id": 5, "name": "bad", "artifact_uri": "a"}),
    ]
    result = fold_batch(FoldState(), records)
    codes = [result.verdicts[f"e{i}"].error_code for i in range(len(records))]
    assert codes == [None, "INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", None,
                     None, "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "MALFORMED_EVENT"]
    ch = result.changes
    assert ch.model_params == {(mid, "p"): "1"}  # the rejected request changed nothing, q included
    assert ch.model_tags == {(mid, "t"): "3"}
    model = ch.models[mid]
    assert (model.status, model.creation_timestamp_ms, model.last_updated_timestamp_ms) == ("LOGGED_MODEL_READY",
                                                                                          1000, 1005)
    # Redelivered, the same events keep their first verdicts and change nothing.
    again = fold_batch(FoldState(seen=dict(result.verdicts), models=dict(ch.models)), records)
    assert again.verdicts == result.verdicts and not again.changes.models and not again.changes.log


def test_fold_links_metric_points_to_models_first_point_wins() -> None:
    run = Envelope("r", "RunCreated", "1", "run1", 1, "u",
                   {"run_name": "r", "start_time": 1, "user_id": "", "artifact_uri": "a", "tags": []})
    cols = {**metrics_columns([("acc", 0.5, 10, 1), ("acc", 0.9, 10, 1), ("loss", 1.0, 10, 1)]),
            "model_ids": ["m-a", "m-a", None], "dataset_names": ["ds", None, None], "dataset_digests": [None] * 3}
    result = fold_batch(FoldState(), [LogRecord(0, 0, run), _ev(1, "MetricsLogged", cols, run_id="run1")])
    assert result.verdicts["e1"].applied
    assert result.changes.model_metrics == {("m-a", "acc", 10, 1, "run1"): (0.5, "ds", None, "1")}
    assert len(result.changes.metrics) == 3  # the run keeps every point as usual


# ----- create / get

def test_create_and_get_through_the_client(client: MlflowClient) -> None:
    exp = client.create_experiment("lm-create")
    run = client.create_run(exp).info.run_id
    model = client.create_logged_model(exp, name="clf", source_run_id=run, tags={"team": "a", "stage": "dev"},
                                       params={"alpha": "0.5", "depth": "3"}, model_type="agent")
    assert MODEL_ID.match(model.model_id)
    assert (model.name, model.experiment_id, model.source_run_id, model.model_type) == ("clf", exp, run, "agent")
    assert model.status == LoggedModelStatus.PENDING
    artifact_location = client.get_experiment(exp).artifact_location
    assert model.artifact_location == f"{artifact_location}/models/{model.model_id}/artifacts"
    assert model.creation_timestamp == model.last_updated_timestamp > 0
    assert model.tags == {"team": "a", "stage": "dev"} and model.params == {"alpha": "0.5", "depth": "3"}
    got = client.get_logged_model(model.model_id)
    assert got.to_dictionary() == model.to_dictionary()


def test_raw_create_generates_a_name_and_answers_mlflow_json(api: httpx.Client, server: RunledgerServer) -> None:
    exp = _exp(api, "lm-raw")
    model = _create(api, experiment_id=exp)
    info = model["info"]
    assert re.fullmatch(r"[a-z]+-[a-z]+-\d+", info["name"])
    assert info["status"] == "LOGGED_MODEL_PENDING" and MODEL_ID.match(info["model_id"])
    # MLflow's server stores the unset strings as "", so they are shown; empty lists are omitted.
    assert info["model_type"] == "" and info["source_run_id"] == ""
    assert "tags" not in info and model["data"] == {}
    assert set(info) == {"model_id", "experiment_id", "name", "creation_timestamp_ms", "last_updated_timestamp_ms",
                         "artifact_uri", "status", "model_type", "source_run_id"}
    for prefix in ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow"):
        r = httpx.get(f"{server.url}{prefix}/logged-models/{info['model_id']}")
        assert r.status_code == 200 and r.json() == {"model": model}


# ----- finalize / delete

def test_finalize_sets_the_status_and_the_update_time(client: MlflowClient, api: httpx.Client) -> None:
    exp = client.create_experiment("lm-finalize")
    model = client.create_logged_model(exp, name="m")
    time.sleep(0.01)
    ready = client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    assert ready.status == LoggedModelStatus.READY
    assert ready.last_updated_timestamp > ready.creation_timestamp == model.creation_timestamp
    assert client.get_logged_model(model.model_id).status == LoggedModelStatus.READY
    # Raw: the enum by name or by number.
    r = api.patch(f"logged-models/{model.model_id}", json={"model_id": model.model_id,
                                                            "status": "LOGGED_MODEL_UPLOAD_FAILED"})
    assert r.status_code == 200 and r.json()["model"]["info"]["status"] == "LOGGED_MODEL_UPLOAD_FAILED"
    body = {"model_id": model.model_id}
    r = api.patch(f"logged-models/{model.model_id}", json={**body, "status": 2})
    assert r.json()["model"]["info"]["status"] == "LOGGED_MODEL_READY"
    for bad in ("READY", "LOGGED_MODEL_PENDING", 1, "BOGUS"):
        _error(api.patch(f"logged-models/{model.model_id}", json={**body, "status": bad}), 400,
               "INVALID_PARAMETER_VALUE")
    assert "status" in _error(api.patch(f"logged-models/{model.model_id}", json=body), 400, "INVALID_PARAMETER_VALUE")
    # MLflow's request schema wants the model id in the body as well.
    assert "model_id" in _error(api.patch(f"logged-models/{model.model_id}", json={"status": 2}), 400,
                                "INVALID_PARAMETER_VALUE")
    _error(api.patch("logged-models/m-nope", json={"model_id": "m-nope", "status": 2}), 404, "RESOURCE_DOES_NOT_EXIST")


def test_a_deleted_model_is_gone_from_get_and_search(client: MlflowClient, api: httpx.Client) -> None:
    exp = client.create_experiment("lm-delete")
    kept = client.create_logged_model(exp, name="kept")
    gone = client.create_logged_model(exp, name="gone")
    client.delete_logged_model(gone.model_id)
    with pytest.raises(MlflowException) as e:
        client.get_logged_model(gone.model_id)
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    msg = _error(api.get(f"logged-models/{gone.model_id}"), 404, "RESOURCE_DOES_NOT_EXIST")
    assert gone.model_id in msg
    deleted = api.get(f"logged-models/{gone.model_id}", params={"allow_deleted": "true"}).json()["model"]
    assert deleted["info"]["name"] == "gone" and deleted["info"]["last_updated_timestamp_ms"] >= gone.creation_timestamp
    assert [m.model_id for m in client.search_logged_models([exp])] == [kept.model_id]
    _error(api.delete("logged-models/m-nope"), 404, "RESOURCE_DOES_NOT_EXIST")


# ----- tags and params

def test_tags_overwrite_and_delete(client: MlflowClient, api: httpx.Client) -> None:
    exp = client.create_experiment("lm-tags")
    model = client.create_logged_model(exp, tags={"a": "1"})
    client.set_logged_model_tags(model.model_id, {"a": "2", "b": "x", "dir/key": "slash"})
    assert client.get_logged_model(model.model_id).tags == {"a": "2", "b": "x", "dir/key": "slash"}
    # Raw: a repeated key in one request keeps its last value; the answer is {}.
    r = api.patch(f"logged-models/{model.model_id}/tags",
                  json={"tags": [{"key": "c", "value": "first"}, {"key": "c", "value": "last"}]})
    assert r.status_code == 200 and r.json() == {}
    client.delete_logged_model_tag(model.model_id, "b")
    client.delete_logged_model_tag(model.model_id, "dir/key")  # sent unescaped by the client
    assert client.get_logged_model(model.model_id).tags == {"a": "2", "c": "last"}
    msg = _error(api.delete(f"logged-models/{model.model_id}/tags/b"), 404, "RESOURCE_DOES_NOT_EXIST")
    assert "b" in msg
    _error(api.patch("logged-models/m-nope/tags", json={"tags": [{"key": "a", "value": "1"}]}),
           404, "RESOURCE_DOES_NOT_EXIST")
    _error(api.patch(f"logged-models/{model.model_id}/tags", json={"tags": [{"value": "1"}]}),
           400, "INVALID_PARAMETER_VALUE")


def test_params_are_write_once(client: MlflowClient, api: httpx.Client) -> None:
    exp = client.create_experiment("lm-params")
    model = client.create_logged_model(exp, params={"lr": "0.1"})
    client.log_model_params(model.model_id, {"lr": "0.1", "epochs": "5"})  # the same value again is fine
    assert client.get_logged_model(model.model_id).params == {"lr": "0.1", "epochs": "5"}
    r = api.post(f"logged-models/{model.model_id}/params",
                 json={"model_id": model.model_id, "params": [{"key": "lr", "value": "0.2"}]})
    assert "lr" in _error(r, 400, "INVALID_PARAMETER_VALUE")
    assert client.get_logged_model(model.model_id).params["lr"] == "0.1"
    _error(api.post("logged-models/m-nope/params", json={"model_id": "m-nope", "params": [{"key": "a", "value": "1"}]}),
           404, "RESOURCE_DOES_NOT_EXIST")
    _error(api.post(f"logged-models/{model.model_id}/params", json={"params": [{"key": "z", "value": "1"}]}),
           400, "INVALID_PARAMETER_VALUE")
    _error(api.post(f"logged-models/{model.model_id}/params", content=b'{"params": []}',
                    headers={"content-type": "text/plain"}), 400, "INVALID_PARAMETER_VALUE")


# ----- create errors

def test_create_rejects_bad_input_as_mlflow_does(api: httpx.Client) -> None:
    exp = _exp(api, "lm-errors")
    assert "experiment_id" in _error(api.post("logged-models", json={"name": "x"}), 400, "INVALID_PARAMETER_VALUE")
    _error(api.post("logged-models", json={"experiment_id": "987654"}), 404, "RESOURCE_DOES_NOT_EXIST")
    for bad in ("a/b", "a.b", "a:b", "50%", "it's"):
        msg = _error(api.post("logged-models", json={"experiment_id": exp, "name": bad}), 400,
                     "INVALID_PARAMETER_VALUE")
        assert "Invalid model name" in msg
    _error(api.post("logged-models", json={"experiment_id": exp, "params": [{"key": "a", "value": "1"},
                                                                            {"key": "a", "value": "2"}]}),
           400, "INVALID_PARAMETER_VALUE")
    _error(api.post("logged-models", content=b'{"experiment_id": "0"}', headers={"content-type": "text/plain"}),
           400, "INVALID_PARAMETER_VALUE")
    deleted = _exp(api, "lm-errors-deleted")
    api.post("experiments/delete", json={"experiment_id": deleted})
    msg = _error(api.post("logged-models", json={"experiment_id": deleted}), 400, "INVALID_PARAMETER_VALUE")
    assert "active" in msg


# ----- metrics linked to a model

def test_metrics_logged_with_a_model_id_show_on_the_model(client: MlflowClient, api: httpx.Client) -> None:
    exp = client.create_experiment("lm-metrics")
    run = client.create_run(exp).info.run_id
    model = client.create_logged_model(exp, source_run_id=run)
    client.log_metric(run, "acc", 0.7, timestamp=100, step=1, model_id=model.model_id,
                      dataset_name="eval", dataset_digest="d1")
    client.log_batch(run, metrics=[Metric("acc", 0.9, 200, 2, model_id=model.model_id, dataset_name="eval",
                                          dataset_digest="d1"),
                                   Metric("loss", 0.3, 200, 2, model_id=model.model_id),
                                   Metric("unlinked", 1.0, 200, 2)])
    client.log_metric(run, "acc", 0.7, timestamp=100, step=1, model_id=model.model_id,
                      dataset_name="eval", dataset_digest="d1")  # an exact retry is stored once
    got = client.get_logged_model(model.model_id)
    points = sorted((m.key, m.value, m.timestamp, m.step, m.dataset_name, m.run_id) for m in got.metrics)
    assert points == [("acc", 0.7, 100, 1, "eval", run), ("acc", 0.9, 200, 2, "eval", run),
                      ("loss", 0.3, 200, 2, None, run)]
    assert {m.model_id for m in got.metrics} == {model.model_id}
    # The run gets them as ordinary metrics too.
    assert client.get_run(run).data.metrics == {"acc": 0.9, "loss": 0.3, "unlinked": 1.0}
    # A model that does not exist is refused (MLflow: a foreign key), and nothing is logged.
    r = api.post("runs/log-metric", json={"run_id": run, "key": "lost", "value": 1, "timestamp": 1,
                                          "model_id": "m-00000000000000000000000000000000"})
    assert "m-0000" in _error(r, 400, "INVALID_PARAMETER_VALUE")
    assert "lost" not in client.get_run(run).data.metrics


# ----- search

@pytest.fixture(scope="module")
def catalog(server: RunledgerServer) -> dict[str, Any]:
    """Five models in one experiment, created in name order (so creation time follows it)."""
    client = MlflowClient(server.url)
    exp = client.create_experiment("lm-search")
    other = client.create_experiment("lm-search-other")
    run = client.create_run(exp).info.run_id
    spec = [  # name, model_type, params, tags, acc points [(value, ts)], final status
        ("alpha", "agent", {"lr": "0.1"}, {"team": "a"}, [(0.5, 1), (0.95, 2)], "READY"),
        ("beta", "agent", {"lr": "0.2"}, {"team": "b"}, [(0.8, 5)], None),
        ("gamma", "clf", {"lr": "0.1"}, {"team": "a", "prod": "yes"}, [(0.99, 1), (0.6, 9)], "FAILED"),
        ("delta", "clf", {}, {}, [], None),
        ("epsilon", "", {"lr": "0.3"}, {"team": "c"}, [(0.7, 3)], "READY"),
    ]
    ids: dict[str, str] = {}
    for name, model_type, params, tags, accs, status in spec:
        model = client.create_logged_model(exp, name=name, model_type=model_type or None, params=params,
                                           tags=tags, source_run_id=run if name in ("alpha", "beta") else None)
        ids[name] = model.model_id
        for value, ts in accs:
            client.log_metric(run, "acc", value, timestamp=ts, step=0, model_id=model.model_id,
                              dataset_name="eval" if name != "epsilon" else "train", dataset_digest="d")
        if status:
            client.finalize_logged_model(model.model_id, status)
        time.sleep(0.002)  # distinct creation times
    client.create_logged_model(other, name="alpha")  # another experiment: never in these results
    return {"exp": exp, "ids": ids, "run": run, "client": client}


def _names(catalog: dict[str, Any], flt: str | None = None, order_by: list[dict[str, Any]] | None = None,
           datasets: list[dict[str, Any]] | None = None) -> list[str]:
    models = catalog["client"].search_logged_models([catalog["exp"]], filter_string=flt, order_by=order_by,
                                                    datasets=datasets)
    return [m.name for m in models]


def test_search_default_order_is_newest_first(catalog: dict[str, Any]) -> None:
    assert _names(catalog) == ["epsilon", "delta", "gamma", "beta", "alpha"]


@pytest.mark.parametrize("flt, expected", [
    ("name = 'beta'", {"beta"}),
    ("name != 'beta'", {"alpha", "gamma", "delta", "epsilon"}),
    ("name LIKE '%ta'", {"beta", "delta"}),
    ("name ILIKE 'AL%'", {"alpha"}),
    ("attributes.name IN ('alpha', 'gamma', 'zeta')", {"alpha", "gamma"}),
    ("model_type NOT IN ('agent')", {"gamma", "delta", "epsilon"}),
    ("status = 'LOGGED_MODEL_READY'", {"alpha", "epsilon"}),
    ("status = 'READY'", {"alpha", "epsilon"}),
    ("status IN ('LOGGED_MODEL_PENDING', 'LOGGED_MODEL_UPLOAD_FAILED')", {"beta", "gamma", "delta"}),
    ("source_run_id != ''", {"alpha", "beta"}),
    ("params.lr = '0.1'", {"alpha", "gamma"}),
    ("params.lr != '0.1'", {"beta", "epsilon"}),
    ("tags.team IN ('a', 'c')", {"alpha", "gamma", "epsilon"}),
    ("tags.prod = 'yes' AND params.lr = '0.1'", {"gamma"}),
    ("metrics.acc > 0.9", {"alpha", "gamma"}),  # any linked point counts, not just the latest
    # each comparison may match a different point: alpha has 0.95 and 0.5, gamma 0.99 and 0.6
    ("metrics.acc >= 0.7 AND metrics.acc < 0.8", {"alpha", "gamma", "epsilon"}),
    ("metrics.acc != 0.8", {"alpha", "gamma", "epsilon"}),
    ("creation_timestamp > 0 AND last_updated_timestamp > 0", {"alpha", "beta", "gamma", "delta", "epsilon"}),
    ("creation_time < 0", set()),
    ("lifecycle_stage = 'active'", {"alpha", "beta", "gamma", "delta", "epsilon"}),
])
def test_search_filters(catalog: dict[str, Any], flt: str, expected: set[str]) -> None:
    assert set(_names(catalog, flt)) == expected


def test_search_filters_on_creation_time_and_model_id(catalog: dict[str, Any], api: httpx.Client) -> None:
    beta = catalog["client"].get_logged_model(catalog["ids"]["beta"])
    assert set(_names(catalog, f"creation_timestamp >= {beta.creation_timestamp}")) == {
        "beta", "gamma", "delta", "epsilon"}
    assert _names(catalog, f"model_id = '{beta.model_id}'") == ["beta"]


def test_search_datasets_scope_metric_filters(catalog: dict[str, Any]) -> None:
    assert set(_names(catalog, "metrics.acc > 0.6", datasets=[{"dataset_name": "train"}])) == {"epsilon"}
    assert set(_names(catalog, None, datasets=[{"dataset_name": "eval", "dataset_digest": "d"}])) == {
        "alpha", "beta", "gamma"}
    assert _names(catalog, None, datasets=[{"dataset_name": "eval", "dataset_digest": "other"}]) == []


@pytest.mark.parametrize("flt", [
    "metric.acc > 1",               # MLflow's prefixes are plural: metrics, params, tags, attributes
    "params.lr > '0.1'",            # strings take =, !=, LIKE, ILIKE, IN, NOT IN
    "metrics.acc LIKE '0.1'",
    "creation_timestamp = 'yesterday'",
    "name = 'a' OR name = 'b'",
    "bogus_attribute = 'x'",
    "name = ",
])
def test_search_rejects_a_bad_filter(catalog: dict[str, Any], api: httpx.Client, flt: str) -> None:
    r = api.post("logged-models/search", json={"experiment_ids": [catalog["exp"]], "filter": flt})
    _error(r, 400, "INVALID_PARAMETER_VALUE")


def test_search_order_by(catalog: dict[str, Any]) -> None:
    assert _names(catalog, order_by=[{"field_name": "name"}]) == ["alpha", "beta", "delta", "epsilon", "gamma"]
    assert _names(catalog, order_by=[{"field_name": "name", "ascending": False}])[0] == "gamma"
    assert _names(catalog, order_by=[{"field_name": "creation_timestamp", "ascending": True}]) == [
        "alpha", "beta", "gamma", "delta", "epsilon"]
    # Latest point per model (greatest timestamp): alpha 0.95, beta 0.8, gamma 0.6, epsilon 0.7; delta has none.
    assert _names(catalog, order_by=[{"field_name": "metrics.acc", "ascending": False}]) == [
        "alpha", "beta", "epsilon", "gamma", "delta"]
    assert _names(catalog, order_by=[{"field_name": "metrics.acc", "ascending": True}]) == [
        "gamma", "epsilon", "beta", "alpha", "delta"]
    # Restricted to a dataset, models without points there sort last (then newest first).
    assert _names(catalog, order_by=[{"field_name": "metrics.acc", "dataset_name": "train"}]) == [
        "epsilon", "delta", "gamma", "beta", "alpha"]
    # Ties on model_type are broken by creation time, newest first.
    assert _names(catalog, order_by=[{"field_name": "model_type"}]) == ["epsilon", "beta", "alpha", "delta", "gamma"]


def test_search_order_by_errors(catalog: dict[str, Any], api: httpx.Client) -> None:
    for field in ("bogus", "params.lr", "tags.team", "attributes.name"):
        r = api.post("logged-models/search", json={"experiment_ids": [catalog["exp"]],
                                                   "order_by": [{"field_name": field}]})
        assert field in _error(r, 400, "INVALID_PARAMETER_VALUE")


def test_search_pages(catalog: dict[str, Any], api: httpx.Client) -> None:
    client, exp = catalog["client"], catalog["exp"]
    order = [{"field_name": "name", "ascending": True}]
    seen, token = [], None
    while True:
        page = client.search_logged_models([exp], max_results=2, order_by=order, page_token=token)
        assert len(page) <= 2
        seen += [m.name for m in page]
        token = page.token
        if not token:
            break
    assert seen == ["alpha", "beta", "delta", "epsilon", "gamma"]
    first = api.post("logged-models/search", json={"experiment_ids": [exp], "max_results": 2}).json()
    token = first["next_page_token"]
    r = api.post("logged-models/search", json={"experiment_ids": [exp], "max_results": 2, "page_token": token,
                                               "filter": "name = 'alpha'"})
    assert "Filter string" in _error(r, 400, "INVALID_PARAMETER_VALUE")
    r = api.post("logged-models/search", json={"experiment_ids": [exp], "page_token": "not a token"})
    _error(r, 400, "INVALID_PARAMETER_VALUE")


def test_search_request_errors_and_empty_answers(catalog: dict[str, Any], api: httpx.Client) -> None:
    assert "experiment_ids" in _error(api.post("logged-models/search", json={}), 400, "INVALID_PARAMETER_VALUE")
    assert api.post("logged-models/search", json={"experiment_ids": []}).json() == {}
    assert api.post("logged-models/search", json={"experiment_ids": ["424242"]}).json() == {}
    assert "integer" in _error(api.post("logged-models/search", json={"experiment_ids": ["abc"]}), 400,
                               "INVALID_PARAMETER_VALUE")
    r = api.post("logged-models/search", json={"experiment_ids": [catalog["exp"]],
                                               "datasets": [{"dataset_digest": "d"}]})
    assert "dataset_name" in _error(r, 400, "INVALID_PARAMETER_VALUE")
    _error(api.post("logged-models/search", json={"experiment_ids": [catalog["exp"]], "max_results": -1}),
           400, "INVALID_PARAMETER_VALUE")


def test_search_max_results_defaults_to_50(api: httpx.Client) -> None:
    exp = _exp(api, "lm-many")
    for i in range(51):
        _create(api, experiment_id=exp, name=f"m{i}")
    first = api.post("logged-models/search", json={"experiment_ids": [exp]}).json()
    assert len(first["models"]) == 50 and "next_page_token" in first
    rest = api.post("logged-models/search", json={"experiment_ids": [exp], "page_token": first["next_page_token"]})
    assert [m["info"]["name"] for m in rest.json()["models"]] == ["m0"]
    assert "next_page_token" not in rest.json()


# ----- the log is the truth

def test_models_survive_a_rebuild_from_the_log(make_server: Any, kafka_bootstrap: str, tmp_path: Any) -> None:
    server = make_server()
    client = MlflowClient(server.url)
    exp = client.create_experiment("lm-replay")
    run = client.create_run(exp).info.run_id
    ids = []
    for i in range(4):
        model = client.create_logged_model(exp, name=f"r{i}", params={"i": str(i)}, tags={"t": "x"},
                                           model_type="agent" if i % 2 else "clf", source_run_id=run)
        ids.append(model.model_id)
        client.log_metric(run, "acc", 0.1 * i, timestamp=10 + i, step=i, model_id=model.model_id)
    client.finalize_logged_model(ids[0], "READY")
    client.finalize_logged_model(ids[1], "FAILED")
    client.set_logged_model_tags(ids[2], {"t": "y", "u": "z"})
    client.delete_logged_model_tag(ids[3], "t")
    client.log_model_params(ids[3], {"extra": "1"})
    client.delete_logged_model(ids[1])
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=30) as api:
        # a rejected write is part of the log too
        assert api.post(f"logged-models/{ids[0]}/params", json={"params": [{"key": "i", "value": "9"}]}
                        ).status_code == 400

        def answers() -> dict[str, Any]:
            out: dict[str, Any] = {m: api.get(f"logged-models/{m}", params={"allow_deleted": "true"}).json()
                                   for m in ids}
            out["not deleted"] = api.get(f"logged-models/{ids[1]}").json()
            for order in ([], [{"field_name": "metrics.acc", "ascending": False}], [{"field_name": "name"}]):
                out[f"search {order}"] = api.post("logged-models/search", json={
                    "experiment_ids": [exp], "order_by": order}).json()
            out["filtered"] = api.post("logged-models/search", json={
                "experiment_ids": [exp], "filter": "params.i != '0' AND metrics.acc > 0.15 AND tags.t = 'y'"}).json()
            return out

        before = answers()
        assert len(before["search []"]["models"]) == 3
        assert before["not deleted"]["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        assert [m["info"]["model_id"] for m in before["filtered"]["models"]] == [ids[2]]
    server.stop()
    server.duckdb_path.unlink()
    server.duckdb_path.with_suffix(".duckdb.wal").unlink(missing_ok=True)
    server.start()
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=30) as api:
        deadline = time.monotonic() + 30
        after = answers()
        while after != before and time.monotonic() < deadline:  # the rebuild runs in the background
            time.sleep(0.2)
            after = answers()
    assert after == before
    # Model events (keyed by model id) and the metrics linked to models (keyed by run id) live
    # in different partitions: any interleaving, cut into any batches, folds to the same tables.
    server.stop()
    tables = dump_tables(str(server.duckdb_path))
    log = read_topic(kafka_bootstrap, server.topic)
    assert len([p for p in log if log[p]]) > 1
    rng = random.Random(7)
    for attempt in range(3):
        path = str(tmp_path / f"interleaved-{attempt}.duckdb")
        fold_into(path, server.topic, interleaved_batches(log, rng, max_batch=6))
        assert without_offsets(dump_tables(path)) == without_offsets(tables)
