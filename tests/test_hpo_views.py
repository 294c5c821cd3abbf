"""PAI's HPO view and the native /hpo answer over searches logged the way Optuna's MLflow callback
logs them (the real optuna + optuna-integration packages, through the real mlflow client), against
a real Runledger (docs/pai.md)."""

from __future__ import annotations

import json
import uuid
from typing import Any, Iterator

import httpx
import mlflow
import optuna
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric
from optuna_integration.mlflow import MLflowCallback

from tests.conftest import RunledgerServer

optuna.logging.set_verbosity(optuna.logging.WARNING)
# The callback is deprecated (removal in optuna 6) but is what existing searches logged with.
pytestmark = pytest.mark.filterwarnings("ignore:MLflowCallback has been deprecated:FutureWarning")


@pytest.fixture(scope="module")
def url(server: RunledgerServer) -> Iterator[str]:
    mlflow.set_tracking_uri(server.url)
    yield server.url


def _objective(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    opt = trial.suggest_categorical("optimizer", ["adam", "sgd"])
    if trial.number == 3:
        raise optuna.TrialPruned()
    if trial.number == 4:
        raise ValueError("diverged")
    return (lr - 0.01) ** 2 + (0.5 if opt == "sgd" else 0.0)


def _nested_study(url: str, direction: str = "minimize") -> tuple[str, optuna.Study]:
    """A parent run whose trials are nested runs, as `MLflowCallback(mlflow_kwargs={"nested": True})` logs them."""
    mlflow.set_experiment(f"study-{uuid.uuid4().hex[:8]}")
    callback = MLflowCallback(tracking_uri=url, metric_name="value", mlflow_kwargs={"nested": True})
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.RandomSampler(seed=7))
    with mlflow.start_run(run_name="search") as parent:
        study.optimize(_objective, n_trials=8, callbacks=[callback], catch=(ValueError,))
        parent_id = parent.info.run_id
    return parent_id, study


def _get(url: str, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{url}{path}", params=params, timeout=30)


def test_pai_experiment_counts_trials_by_status_for_a_parent_run(url: str) -> None:
    parent_id, study = _nested_study(url)
    r = _get(url, f"/api/automl/v1/hpo/experiment/{parent_id}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ExperimentId"] == parent_id and body["Name"] == "search" and body["Status"] == "FINISHED"
    assert body["TrialCount"] == 8
    assert body["TrialStatus"] == {"FINISHED": "6", "EARLY_STOPPED": "1", "FAILED": "1"}
    assert body["GmtCreateTime"].endswith("Z") and body["GmtModifiedTime"] >= body["GmtCreateTime"]
    config = body["HpoExperimentConfiguration"]
    assert config["Objective"] == {"MetricName": "value", "Direction": "MINIMIZE"}
    assert config["BestTrialId"] is not None and config["BestMetric"] == pytest.approx(study.best_value)


def test_search_space_comes_from_optunas_distribution_tags(url: str) -> None:
    parent_id, _ = _nested_study(url)
    space = _get(url, f"/api/automl/v1/hpo/experiment/{parent_id}").json()["HpoExperimentConfiguration"]["SearchSpace"]
    assert space["lr"] == {"_type": "loguniform", "_value": [1e-4, 1e-1], "source": "optuna"}
    assert space["optimizer"] == {"_type": "choice", "_value": ["adam", "sgd"], "source": "optuna"}


def test_best_trial_is_optunas_best_trial(url: str) -> None:
    parent_id, study = _nested_study(url)
    trials = _get(url, f"/api/automl/v1/hpo/experiment/{parent_id}/trials", SortBy="FINAL_METRIC").json()
    assert trials["TotalCount"] == 8
    best = trials["Trials"][0]
    assert json.loads(best["Hyperparam"]) == {k: str(v) for k, v in study.best_params.items()}
    assert best["Name"] == str(study.best_trial.number)
    finals = [json.loads(t["Metric"])[-1] for t in trials["Trials"] if t["Status"] == "FINISHED"]
    assert [f["type"] for f in finals] == ["FINAL"] * 6
    assert [f["default"] for f in finals] == sorted(f["default"] for f in finals)


def test_an_experiment_is_a_study_of_its_runs_and_maximize_is_read_from_optunas_tag(url: str) -> None:
    name = f"flat-{uuid.uuid4().hex[:8]}"
    callback = MLflowCallback(tracking_uri=url, metric_name="score", create_experiment=True)
    study = optuna.create_study(study_name=name, direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(lambda t: -abs(t.suggest_float("x", -2, 2)), n_trials=5, callbacks=[callback])
    exp_id = MlflowClient(url).get_experiment_by_name(name).experiment_id
    body = _get(url, f"/api/automl/v1/hpo/experiment/{exp_id}").json()
    assert body["TrialCount"] == 5 and body["TrialStatus"] == {"FINISHED": "5"}
    assert body["HpoExperimentConfiguration"]["Objective"] == {"MetricName": "score", "Direction": "MAXIMIZE"}
    assert body["HpoExperimentConfiguration"]["BestMetric"] == pytest.approx(study.best_value)


def test_trial_detail_has_the_metric_series_ending_with_final(url: str) -> None:
    """A trial that reports intermediate values (as a Ray Tune / hand-written loop logs them)."""
    client = MlflowClient(url)
    exp_id = client.create_experiment(f"ray-{uuid.uuid4().hex[:8]}")
    parent = client.create_run(exp_id, run_name="tune", tags={"runledger.hpo.objective": "val_loss",
                                                             "runledger.hpo.direction": "minimize"})
    trial = client.create_run(exp_id, run_name="trial-0", tags={"mlflow.parentRunId": parent.info.run_id})
    client.log_param(trial.info.run_id, "lr", "0.1")
    client.log_batch(trial.info.run_id, metrics=[Metric("val_loss", v, 1_700_000_000_000 + i, i)
                                                  for i, v in enumerate([0.9, 0.6, 0.4])])
    client.set_terminated(trial.info.run_id)
    r = _get(url, f"/api/automl/v1/hpo/experiment/{parent.info.run_id}/trial/{trial.info.run_id}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["Status"] == "FINISHED" and body["MetricName"] == "val_loss"
    metric = json.loads(body["Metric"])
    assert [m["default"] for m in metric] == [0.9, 0.6, 0.4, 0.4]
    assert metric[-1]["type"] == "FINAL" and metric[-1]["step"] == 2
    assert body["ExperimentId"] == parent.info.run_id
    experiment = _get(url, f"/api/automl/v1/hpo/experiment/{parent.info.run_id}").json()
    assert experiment["Status"] == "RUNNING"   # the parent run is still open
    assert experiment["HpoExperimentConfiguration"]["SearchSpace"]["lr"]["source"] == "observed"


def test_unknown_experiment_or_trial_is_a_404_in_pais_shape(url: str) -> None:
    r = _get(url, f"/api/automl/v1/hpo/experiment/{uuid.uuid4().hex}")
    assert r.status_code == 404
    assert r.json()["Code"] == "RESOURCE_DOES_NOT_EXIST" and "RequestId" in r.json()
    parent_id, _ = _nested_study(url)
    r = _get(url, f"/api/automl/v1/hpo/experiment/{parent_id}/trial/{uuid.uuid4().hex}")
    assert r.status_code == 404 and "No trial" in r.json()["Message"]


def test_native_hpo_answers_counts_and_best_trial_in_runledgers_shape(url: str) -> None:
    parent_id, study = _nested_study(url, direction="maximize")
    r = _get(url, f"/api/runledger/v1/hpo/{parent_id}")
    assert r.status_code == 200, r.text
    s = r.json()["study"]
    assert s["kind"] == "parent_run" and s["trial_count"] == 8
    assert s["trial_states"] == {"FINISHED": 6, "PRUNED": 1, "FAILED": 1}
    assert s["objective"] == {"metric": "value", "direction": "maximize"}
    assert s["best_trial"]["value"] == pytest.approx(study.best_value)
    assert s["best_trial"]["params"] == {k: str(v) for k, v in study.best_params.items()}
    missing = _get(url, f"/api/runledger/v1/hpo/{uuid.uuid4().hex}")
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
