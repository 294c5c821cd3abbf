"""The unmodified `mlflow` client against a real Runledger (real Kafka, real DuckDB)."""

from __future__ import annotations

import math
import time

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from tests.conftest import RunledgerServer


@pytest.fixture
def client(server: RunledgerServer, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    mlflow.set_tracking_uri(server.url)
    return MlflowClient(server.url)


def test_fluent_flow_creates_experiment_logs_and_reads_back(client: MlflowClient) -> None:
    mlflow.set_experiment("fluent-flow")
    with mlflow.start_run(run_name="first") as run:
        mlflow.log_param("lr", 0.01)
        mlflow.log_metric("loss", 0.9, step=0)
        mlflow.log_metric("loss", 0.3, step=1)
        mlflow.set_tag("team", "vision")
        mlflow.log_metrics({"acc": 0.7, "f1": 0.6}, step=1)
        mlflow.log_params({"epochs": 3, "optimizer": "adam"})
        mlflow.set_tags({"stage": "dev"})
    got = client.get_run(run.info.run_id)
    assert got.info.status == "FINISHED"
    assert got.info.end_time is not None and got.info.end_time >= got.info.start_time
    assert got.info.run_name == "first"
    assert got.data.params == {"lr": "0.01", "epochs": "3", "optimizer": "adam"}
    assert got.data.metrics == {"loss": 0.3, "acc": 0.7, "f1": 0.6}
    assert got.data.tags["team"] == "vision" and got.data.tags["stage"] == "dev"
    assert got.data.tags["mlflow.runName"] == "first"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.3)]


def test_client_log_batch_is_visible_in_get_run(client: MlflowClient) -> None:
    exp_id = client.create_experiment("batch-flow")
    run = client.create_run(exp_id, run_name="b")
    now = int(time.time() * 1000)
    client.log_batch(run.info.run_id,
                     metrics=[Metric("m", float(i), now + i, i) for i in range(50)],
                     params=[Param("p1", "v1"), Param("p2", "v2")],
                     tags=[RunTag("t", "x")])
    client.set_terminated(run.info.run_id)
    got = client.get_run(run.info.run_id)
    assert got.data.metrics["m"] == 49.0
    assert got.data.params == {"p1": "v1", "p2": "v2"}
    assert got.data.tags["t"] == "x"
    assert len(client.get_metric_history(run.info.run_id, "m")) == 50


def test_search_runs_filters_on_metric_and_orders_by_it(client: MlflowClient) -> None:
    exp_id = client.create_experiment("search-flow")
    losses = {"a": 0.9, "b": 0.2, "c": 0.4, "d": 0.45}
    for name, loss in losses.items():
        run = client.create_run(exp_id, run_name=name)
        client.log_metric(run.info.run_id, "loss", loss)
    found = client.search_runs([exp_id], filter_string="metrics.loss < 0.5", order_by=["metrics.loss DESC"])
    assert [r.info.run_name for r in found] == ["d", "c", "b"]


def test_get_experiment_by_name_and_default_experiment(client: MlflowClient) -> None:
    assert client.get_experiment("0").name == "Default"
    exp_id = client.create_experiment("by-name")
    assert client.get_experiment_by_name("by-name").experiment_id == exp_id
    assert client.get_experiment_by_name("no-such-experiment") is None


def test_param_change_is_rejected_through_the_client(client: MlflowClient) -> None:
    run = client.create_run(client.create_experiment("param-change"))
    client.log_param(run.info.run_id, "lr", "0.1")
    client.log_param(run.info.run_id, "lr", "0.1")  # same value: fine
    with pytest.raises(MlflowException) as err:
        client.log_param(run.info.run_id, "lr", "0.2")
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert client.get_run(run.info.run_id).data.params["lr"] == "0.1"


def test_nan_metric_round_trips_through_the_client(client: MlflowClient) -> None:
    run = client.create_run(client.create_experiment("nan-flow"))
    client.log_metric(run.info.run_id, "x", float("nan"), timestamp=1000, step=0)
    assert math.isnan(client.get_run(run.info.run_id).data.metrics["x"])
    assert math.isnan(client.get_metric_history(run.info.run_id, "x")[0].value)
