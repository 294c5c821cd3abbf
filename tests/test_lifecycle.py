"""Run and experiment lifecycle, as MLflow behaves, through the real client where it has the call."""

from __future__ import annotations

import time

import httpx
import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

from tests.conftest import RunledgerServer


@pytest.fixture
def client(server: RunledgerServer) -> MlflowClient:
    mlflow.set_tracking_uri(server.url)
    return MlflowClient(server.url)


def _names(client: MlflowClient, exp_id: str, view: int = ViewType.ACTIVE_ONLY) -> set[str]:
    return {r.info.run_name for r in client.search_runs([exp_id], run_view_type=view)}


def test_deleting_an_experiment_hides_its_runs_and_restoring_brings_all_back(client: MlflowClient) -> None:
    exp = client.create_experiment("lifecycle-cascade")
    runs = {n: client.create_run(exp, run_name=n).info.run_id for n in ("a", "b", "c")}
    client.delete_run(runs["a"])  # deleted on its own before the experiment
    client.delete_experiment(exp)
    assert client.get_experiment(exp).lifecycle_stage == "deleted"
    assert _names(client, exp) == set()
    assert _names(client, exp, ViewType.DELETED_ONLY) == {"a", "b", "c"}
    assert client.get_run(runs["b"]).info.lifecycle_stage == "deleted"
    with pytest.raises(MlflowException) as err:
        client.log_metric(runs["b"], "m", 1.0)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    client.restore_experiment(exp)
    assert _names(client, exp) == {"a", "b", "c"}  # MLflow restores individually deleted runs too
    client.log_metric(runs["a"], "m", 1.0)


def test_a_deleted_experiment_keeps_its_name(client: MlflowClient) -> None:
    exp = client.create_experiment("keeps-name")
    client.delete_experiment(exp)
    with pytest.raises(MlflowException) as err:
        client.create_experiment("keeps-name")
    assert err.value.error_code == "RESOURCE_ALREADY_EXISTS"
    assert client.get_experiment_by_name("keeps-name").lifecycle_stage == "deleted"


def test_deleting_or_restoring_an_experiment_twice_is_resource_does_not_exist_as_in_mlflow(
        client: MlflowClient) -> None:
    exp = client.create_experiment("twice")
    with pytest.raises(MlflowException) as err:
        client.restore_experiment(exp)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    client.delete_experiment(exp)
    with pytest.raises(MlflowException) as err:
        client.delete_experiment(exp)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_creating_a_run_in_a_deleted_experiment_is_rejected(client: MlflowClient) -> None:
    exp = client.create_experiment("no-new-runs")
    client.delete_experiment(exp)
    with pytest.raises(MlflowException) as err:
        client.create_run(exp)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"


def test_rename_experiment_and_names_stay_unique(client: MlflowClient) -> None:
    exp = client.create_experiment("old-name")
    client.create_experiment("taken-name")
    client.rename_experiment(exp, "new-name")
    assert client.get_experiment(exp).name == "new-name"
    assert client.get_experiment_by_name("old-name") is None
    with pytest.raises(MlflowException) as err:
        client.rename_experiment(exp, "taken-name")
    assert err.value.error_code == "BAD_REQUEST"  # as mlflow server: its unique constraint, not create's code


def test_experiment_tags_set_overwrite_and_delete(client: MlflowClient) -> None:
    exp = client.create_experiment("exp-tags", tags={"a": "1"})
    client.set_experiment_tag(exp, "a", "2")
    client.set_experiment_tag(exp, "b", "x")
    client.delete_experiment_tag(exp, "b")
    assert client.get_experiment(exp).tags == {"a": "2"}


def test_deleted_run_rejects_writes_and_restore_makes_it_writable(client: MlflowClient) -> None:
    run = client.create_run(client.create_experiment("run-delete")).info.run_id
    client.delete_run(run)
    assert client.get_run(run).info.lifecycle_stage == "deleted"
    for write in (lambda: client.log_param(run, "p", "1"), lambda: client.set_tag(run, "t", "1"),
                  lambda: client.log_metric(run, "m", 1.0)):
        with pytest.raises(MlflowException) as err:
            write()
        assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    client.restore_run(run)
    client.log_param(run, "p", "1")
    assert client.get_run(run).data.params == {"p": "1"}


def test_logging_to_a_finished_run_is_allowed(client: MlflowClient) -> None:
    run = client.create_run(client.create_experiment("finished-run")).info.run_id
    client.set_terminated(run, "FAILED")
    client.log_metric(run, "after", 2.0)
    got = client.get_run(run)
    assert got.info.status == "FAILED" and got.data.metrics["after"] == 2.0


def test_run_name_and_its_tag_stay_in_step(client: MlflowClient) -> None:
    exp = client.create_experiment("run-names")
    run = client.create_run(exp, run_name="first").info.run_id
    client.set_tag(run, "mlflow.runName", "second")
    assert client.get_run(run).info.run_name == "second"
    client.update_run(run, name="third")
    got = client.get_run(run)
    assert got.info.run_name == "third" and got.data.tags["mlflow.runName"] == "third"
    generated = client.create_run(exp).info
    assert generated.run_name and client.get_run(generated.run_id).data.tags["mlflow.runName"] == generated.run_name


def test_bulk_delete_and_restore_runs_by_time(server: RunledgerServer) -> None:
    api = f"{server.url}/api/2.0/mlflow"
    exp = httpx.post(f"{api}/experiments/create", json={"name": "bulk-lifecycle"}).json()["experiment_id"]
    for start in (100, 200, 300, 400):
        httpx.post(f"{api}/runs/create", json={"experiment_id": exp, "start_time": start}).raise_for_status()
    r = httpx.post(f"{api}/databricks/runs/delete-runs", json={"experiment_id": exp, "max_timestamp_millis": 300})
    assert r.json() == {"runs_deleted": 3}
    after_delete = int(time.time() * 1000) - 60_000
    r = httpx.post(f"{api}/databricks/runs/restore-runs",
                   json={"experiment_id": exp, "min_timestamp_millis": after_delete, "max_runs": 2})
    assert r.json() == {"runs_restored": 2}
    search = httpx.post(f"{api}/runs/search", json={"experiment_ids": [exp]}).json()
    assert sorted(run["info"]["start_time"] for run in search["runs"]) == [100, 200, 400]
    bad = httpx.post(f"{api}/databricks/runs/delete-runs", json={"experiment_id": exp})
    assert bad.status_code == 400 and "max_timestamp_millis" in bad.json()["message"]
