"""runs/log-inputs: dataset inputs with tags, de-duplicated by (name, digest) per run, shown by
runs/get and searchable with dataset filters."""

from __future__ import annotations

import httpx
import mlflow
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag

from tests.conftest import RunledgerServer


def _dataset(name: str, digest: str, context: str | None = None) -> DatasetInput:
    tags = [InputTag("mlflow.data.context", context)] if context else []
    return DatasetInput(Dataset(name=name, digest=digest, source_type="local", source='{"uri": "/d"}',
                                schema='{"cols": 3}', profile='{"rows": 10}'), tags)


def test_logged_inputs_appear_on_the_run_once_per_name_and_digest(server: RunledgerServer) -> None:
    client = MlflowClient(server.url)
    run = client.create_run(client.create_experiment("inputs")).info.run_id
    client.log_inputs(run, [_dataset("train", "abc", "training"), _dataset("eval", "def", "eval")])
    client.log_inputs(run, [_dataset("train", "abc", "other-context")])  # already logged: unchanged
    inputs = client.get_run(run).inputs.dataset_inputs
    assert sorted((i.dataset.name, i.dataset.digest) for i in inputs) == [("eval", "def"), ("train", "abc")]
    train = next(i for i in inputs if i.dataset.name == "train")
    assert [(t.key, t.value) for t in train.tags] == [("mlflow.data.context", "training")]
    assert train.dataset.schema == '{"cols": 3}' and train.dataset.source_type == "local"


def test_dataset_filters_match_runs_with_any_matching_input(server: RunledgerServer) -> None:
    mlflow.set_tracking_uri(server.url)
    client = MlflowClient(server.url)
    exp = client.create_experiment("dataset-search")
    a = client.create_run(exp, run_name="a").info.run_id
    b = client.create_run(exp, run_name="b").info.run_id
    client.create_run(exp, run_name="c")
    client.log_inputs(a, [_dataset("mnist", "d1", "training")])
    client.log_inputs(b, [_dataset("mnist", "d2", "eval"), _dataset("cifar", "d3", "training")])

    def names(flt: str) -> set[str]:
        return {r.info.run_name for r in client.search_runs([exp], filter_string=flt)}

    assert names("datasets.name = 'mnist'") == {"a", "b"}
    assert names("datasets.digest IN ('d1', 'd3')") == {"a", "b"}
    assert names("datasets.context = 'eval'") == {"b"}
    assert names("datasets.name LIKE 'cif%'") == {"b"}


def test_log_inputs_rejects_a_dataset_without_its_required_fields(server: RunledgerServer) -> None:
    api = f"{server.url}/api/2.0/mlflow"
    exp = httpx.post(f"{api}/experiments/create", json={"name": "inputs-bad"}).json()["experiment_id"]
    run = httpx.post(f"{api}/runs/create", json={"experiment_id": exp}).json()["run"]["info"]["run_id"]
    r = httpx.post(f"{api}/runs/log-inputs", json={"run_id": run, "datasets": [{"dataset": {"name": "x"}}]})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "digest" in r.json()["message"]
    long_digest = {"name": "x", "digest": "d" * 37, "source_type": "local", "source": "s"}
    r = httpx.post(f"{api}/runs/log-inputs", json={"run_id": run, "datasets": [{"dataset": long_digest}]})
    assert r.status_code == 400 and "digest" in r.json()["message"]


def test_search_datasets_summarises_an_experiments_inputs_under_ajax_api(server: RunledgerServer) -> None:
    client = MlflowClient(server.url)
    exp = client.create_experiment("dataset-summaries")
    run = client.create_run(exp).info.run_id
    client.log_inputs(run, [_dataset("train", "t1", "training"), _dataset("test", "t2", "testing")])
    r = httpx.post(f"{server.url}/ajax-api/2.0/mlflow/experiments/search-datasets", json={"experiment_ids": [exp]})
    assert r.status_code == 200
    got = sorted((d["experiment_id"], d["name"], d["digest"], d["context"]) for d in r.json()["dataset_summaries"])
    assert got == [(exp, "test", "t2", "testing"), (exp, "train", "t1", "training")]
    plain = httpx.post(f"{server.url}/api/2.0/mlflow/experiments/search-datasets", json={"experiment_ids": [exp]})
    assert plain.status_code == 404
    none = httpx.post(f"{server.url}/ajax-api/2.0/mlflow/experiments/search-datasets", json={})
    assert none.status_code == 400 and none.json()["error_code"] == "INVALID_PARAMETER_VALUE"
