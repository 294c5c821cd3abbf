"""The unmodified `comet_ml` client (its API / APIExperiment) against a real Runledger (real Kafka,
real DuckDB), reading what the mlflow client wrote and the other way round (docs/comet.md)."""

from __future__ import annotations

import os
import time
import uuid
from typing import Iterator

# Read by comet_ml at import: no error reports to Comet's tracker, no announcements, from tests.
os.environ.setdefault("COMET_ERROR_TRACKING_ENABLE", "false")
os.environ.setdefault("COMET_DISABLE_ANNOUNCEMENT", "true")

import httpx  # noqa: E402
import mlflow  # noqa: E402
import pytest  # noqa: E402
from comet_ml import API, APIExperiment  # noqa: E402
from comet_ml.exceptions import CometRestApiException  # noqa: E402
from comet_ml.query import Metadata, Metric, Other, Parameter, Tag  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric as MlflowMetric  # noqa: E402

from tests.conftest import RunledgerServer  # noqa: E402

WORKSPACE = "runledger"


@pytest.fixture(scope="module")
def comet_env(server: RunledgerServer) -> Iterator[RunledgerServer]:
    mp = pytest.MonkeyPatch()
    # The client keeps only scheme and host of this URL; the key is any non-empty string (no auth yet).
    mp.setenv("COMET_URL_OVERRIDE", f"{server.url}/clientlib/")
    mp.setenv("COMET_API_KEY", "runledger-test-key")
    yield server
    mp.undo()


@pytest.fixture
def api(comet_env: RunledgerServer) -> API:
    return API(cache=False)


@pytest.fixture
def mlflow_client(comet_env: RunledgerServer) -> MlflowClient:
    mlflow.set_tracking_uri(comet_env.url)
    return MlflowClient(comet_env.url)


def _project(client: MlflowClient) -> tuple[str, str]:
    name = f"proj-{uuid.uuid4().hex[:8]}"
    return name, client.create_experiment(name)


def _mlflow_run(client: MlflowClient, exp_id: str, name: str = "r1", *, lr: str = "0.01", loss: list[float] | None = None,
                tags: dict[str, str] | None = None) -> str:
    run = client.create_run(exp_id, run_name=name, tags=tags or {})
    run_id = run.info.run_id
    client.log_param(run_id, "lr", lr)
    client.log_param(run_id, "optimizer", "adam")
    t0 = 1_700_000_000_000
    client.log_batch(run_id, metrics=[MlflowMetric("loss", v, t0 + i, i) for i, v in enumerate(loss or [0.9, 0.5, 0.7])])
    return run_id


@pytest.mark.parametrize(("header", "key"), [
    ("abc123", "abc123"),                          # comet_ml's bare key
    ("abc123*eyJiYXNlVXJsIjogIngifQ==", "abc123"),  # a key that embeds the server URL
    ("Basic dXNlcjpwdw==", None), ("Bearer tok", None), ("", None)])
def test_the_comet_key_is_read_from_the_bare_authorization_header(header: str, key: str | None) -> None:
    from starlette.datastructures import Headers

    from runledger.dialects.comet.key import comet_key

    assert comet_key(Headers({"authorization": header} if header else {})) == key


def test_backend_version_is_served_at_the_host_root(comet_env: RunledgerServer) -> None:
    r = httpx.get(f"{comet_env.url}/clientlib/isAlive/ver")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json()["version"] == "3.28.0"


def test_workspaces_and_projects_list_mlflow_experiments(api: API, mlflow_client: MlflowClient) -> None:
    name, exp_id = _project(mlflow_client)
    assert api.get_workspaces() == [WORKSPACE]
    assert name in api.get_projects(WORKSPACE)
    project = api.get_project(WORKSPACE, name)
    assert project["projectId"] == exp_id and project["projectName"] == name
    assert api.get_project(WORKSPACE, "no-such-project") is None


def test_get_experiments_lists_mlflow_runs_and_filters_by_name_pattern(api: API, mlflow_client: MlflowClient) -> None:
    name, exp_id = _project(mlflow_client)
    a = _mlflow_run(mlflow_client, exp_id, "alpha-1")
    b = _mlflow_run(mlflow_client, exp_id, "beta-1")
    keys = {e.key for e in api.get_experiments(WORKSPACE, name)}
    assert keys == {a, b}
    assert [e.key for e in api.get_experiments(WORKSPACE, name, pattern="alpha")] == [a]


def test_get_experiment_finds_a_run_by_its_name_too(api: API, mlflow_client: MlflowClient) -> None:
    name, exp_id = _project(mlflow_client)
    run_id = _mlflow_run(mlflow_client, exp_id, "by-name")
    assert api.get_experiment(WORKSPACE, name, "by-name").key == run_id   # the client's name fallback


def test_query_variables_list_the_projects_metrics_params_others_and_labels(api: API, mlflow_client: MlflowClient) -> None:
    name, exp_id = _project(mlflow_client)
    run_id = _mlflow_run(mlflow_client, exp_id, tags={"team": "vision"})
    mlflow_client.set_tag(run_id, "best", "")
    found = {(type(v).__name__, v.name if hasattr(v, "name") else repr(v)) for v in api.get_query_variables(WORKSPACE, name)}
    assert {("Metric", "loss"), ("Parameter", "lr"), ("Other", "team"), ("Metadata", "start_server_timestamp")} <= found
    assert any(kind == "Tag" for kind, _ in found)


def test_the_default_cached_api_reads_its_own_writes(comet_env: RunledgerServer) -> None:
    api = API()   # cache=True, comet_ml's default: a write clears the reads it affects
    exp = APIExperiment(api=api, workspace=WORKSPACE, project_name=f"p-{uuid.uuid4().hex[:8]}")
    assert exp.get_metrics_summary() == []
    exp.log_metric("loss", 0.5, step=1)
    assert exp.get_metrics_summary("loss")["valueCurrent"] == "0.5"


def test_archived_experiments_are_deleted_runs(api: API, mlflow_client: MlflowClient) -> None:
    name, exp_id = _project(mlflow_client)
    kept, gone = _mlflow_run(mlflow_client, exp_id, "kept"), _mlflow_run(mlflow_client, exp_id, "gone")
    mlflow_client.delete_run(gone)
    assert [e.key for e in api.get_experiments(WORKSPACE, name)] == [kept]
    assert [e.key for e in api.get_archived_experiments(WORKSPACE, name)] == [gone]
    assert api.get_experiment_by_key(gone).archived is True


def test_metadata_and_state_follow_the_mlflow_run(api: API, mlflow_client: MlflowClient) -> None:
    name, exp_id = _project(mlflow_client)
    run_id = _mlflow_run(mlflow_client, exp_id, "meta")
    exp = api.get_experiment(WORKSPACE, name, run_id)
    meta = exp.get_metadata()
    assert meta["experimentKey"] == run_id and meta["experimentName"] == "meta"
    assert meta["projectName"] == name and meta["projectId"] == exp_id and meta["workspaceName"] == WORKSPACE
    assert exp.get_state() == "running"
    mlflow_client.set_terminated(run_id, "FAILED")
    assert api.get_experiment_by_key(run_id).get_state() == "crashed"


def test_unknown_experiment_key_reads_as_none_and_raises_on_direct_calls(api: API) -> None:
    missing = uuid.uuid4().hex
    assert api.get_experiment_by_key(missing) is None
    with pytest.raises(CometRestApiException) as info:
        api._client.get_experiment_metadata(missing)
    assert info.value.response.status_code == 404
    assert f"No experiment with key '{missing}'" in str(info.value)


def test_parameters_and_others_summaries_read_params_and_tags(api: API, mlflow_client: MlflowClient) -> None:
    _, exp_id = _project(mlflow_client)
    run_id = _mlflow_run(mlflow_client, exp_id, "named", tags={"team": "vision"})
    exp = api.get_experiment_by_key(run_id)
    params = {p["name"]: p for p in exp.get_parameters_summary()}
    assert params["lr"]["valueCurrent"] == "0.01" and params["lr"]["valueMin"] == "0.01"
    assert params["optimizer"]["valueCurrent"] == "adam"
    others = {o["name"]: o["valueCurrent"] for o in exp.get_others_summary()}
    assert others["team"] == "vision"
    assert exp.get_name() == "named"


def test_metrics_summary_has_min_max_and_current_with_steps_and_timestamps(api: API, mlflow_client: MlflowClient) -> None:
    _, exp_id = _project(mlflow_client)
    run_id = _mlflow_run(mlflow_client, exp_id, loss=[0.9, 0.2, 0.5])
    loss = api.get_experiment_by_key(run_id).get_metrics_summary("loss")
    t0 = 1_700_000_000_000
    assert (loss["valueMin"], loss["stepMin"], loss["timestampMin"]) == ("0.2", 1, t0 + 1)
    assert (loss["valueMax"], loss["stepMax"], loss["timestampMax"]) == ("0.9", 0, t0)
    assert (loss["valueCurrent"], loss["stepCurrent"], loss["timestampCurrent"]) == ("0.5", 2, t0 + 2)


def test_get_metrics_returns_every_point_of_one_key_and_of_all_keys(api: API, mlflow_client: MlflowClient) -> None:
    _, exp_id = _project(mlflow_client)
    run_id = _mlflow_run(mlflow_client, exp_id, loss=[float(i) for i in range(2500)])
    mlflow_client.log_metric(run_id, "acc", 0.75, timestamp=1_800_000_000_000, step=3)
    exp = api.get_experiment_by_key(run_id)
    loss = exp.get_metrics("loss")
    assert len(loss) == 2500
    assert [(p["metricValue"], p["step"]) for p in loss[:2]] == [("0", 0), ("1", 1)]   # Arrow's shortest text
    assert loss[-1]["metricName"] == "loss" and loss[-1]["timestamp"] == 1_700_000_000_000 + 2499
    everything = exp.get_metrics()
    assert len(everything) == 2501
    assert {p["metricName"] for p in everything} == {"loss", "acc"}
    assert [p["offset"] for p in everything] == list(range(2501))


def test_query_translates_metric_parameter_tag_and_metadata_expressions(api: API, mlflow_client: MlflowClient) -> None:
    name, exp_id = _project(mlflow_client)
    low = _mlflow_run(mlflow_client, exp_id, "sweep-low", lr="0.001", loss=[0.3, 0.1])
    high = _mlflow_run(mlflow_client, exp_id, "sweep-high", lr="0.1", loss=[0.9, 0.8])
    other = _mlflow_run(mlflow_client, exp_id, "baseline", lr="10", loss=[0.5], tags={"team": "vision_x"})
    APIExperiment(api=api, metadata=api._get_experiment_metadata(low)).add_tags(["best"])

    def keys(expr) -> set[str]:  # type: ignore[no-untyped-def]
        return {e.key for e in api.query(WORKSPACE, name, expr)}

    assert keys(Metric("loss") < 0.6) == {low, other}
    assert keys((Metric("loss") < 0.6) & (Parameter("lr") > 1)) == {other}   # numeric, not "10" < "9"
    assert keys(~(Metric("loss") < 0.6)) == {high}
    assert keys(Metric("loss").between(0.4, 0.9)) == {high, other}
    assert keys(Parameter("optimizer") == "adam") == {low, high, other}
    assert keys(Tag("best")) == {low}
    assert keys(Metadata("name").startswith("sweep-")) == {low, high}
    assert keys(Metadata("name").contains("-hi")) == {high}
    assert keys(Other("team").contains("n_x")) == {other}   # '_' is a character, not LIKE's wildcard
    assert keys(Other("team").contains("n%x")) == set()


def test_query_or_and_negated_tests_go_through_the_search_tree(api: API, mlflow_client: MlflowClient) -> None:
    name, exp_id = _project(mlflow_client)
    a = _mlflow_run(mlflow_client, exp_id, "a", lr="0.01", loss=[0.2])
    b = _mlflow_run(mlflow_client, exp_id, "b", lr="0.5", loss=[0.9])
    c = _mlflow_run(mlflow_client, exp_id, "c-sgd", lr="2", loss=[0.7])

    def keys(expr) -> set[str]:  # type: ignore[no-untyped-def]
        return {e.key for e in api.query(WORKSPACE, name, expr)}

    assert keys((Metric("loss") < 0.3) | (Parameter("lr") > 1)) == {a, c}        # OR across sources
    assert keys((Metric("loss") < 0.3) | (Metric("loss") > 0.8)) == {a, b}       # OR within one
    assert keys(~Metric("loss").between(0.3, 0.8)) == {a, b}
    assert keys(~Metadata("name").contains("sgd")) == {a, b}
    assert keys(~Metadata("name").startswith("c-") & (Parameter("lr") >= 0.5)) == {b}


def test_query_on_an_unserved_source_is_a_clear_400(comet_env: RunledgerServer) -> None:
    r = httpx.post(f"{comet_env.url}/api/rest/v2/project/query", headers={"Authorization": "k"}, json={
        "workspaceName": WORKSPACE, "projectName": "Default", "archived": False,
        "predicates": [{"source": "env_details", "query": {"condition": "AND", "valid": True, "rules": [
            {"id": "os", "field": "os", "type": "string", "operator": "equal", "value": "linux"}]}}]})
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    assert "env_details" in r.json()["msg"] and r.json()["code"] == 400


def test_api_experiment_writes_are_read_back_by_mlflow(api: API, mlflow_client: MlflowClient) -> None:
    project = f"comet-made-{uuid.uuid4().hex[:8]}"
    exp = APIExperiment(api=api, workspace=WORKSPACE, project_name=project, experiment_name="from-comet")
    exp.log_parameter("batch_size", 32)
    # APIExperiment takes seconds and sends milliseconds.
    exp.log_metric("loss", 0.25, step=4, timestamp=1_700_000_000.25)
    exp.log_metric("loss", 0.125, step=5, epoch=2, timestamp=1_700_000_000.5)
    exp.log_other("stage", "dev")
    exp.add_tags(["baseline", "v1"])
    exp.set_start_time(1_600_000_000_000)
    exp.set_state("finished")
    run = mlflow_client.get_run(exp.key)
    assert mlflow_client.get_experiment(run.info.experiment_id).name == project
    assert run.info.run_name == "from-comet" and run.info.status == "FINISHED"
    assert run.info.start_time == 1_600_000_000_000 and run.info.end_time is not None
    assert run.data.params == {"batch_size": "32"}
    assert [(m.value, m.step, m.timestamp) for m in mlflow_client.get_metric_history(exp.key, "loss")] == [
        (0.25, 4, 1_700_000_000_250), (0.125, 5, 1_700_000_000_500)]
    assert run.data.tags["stage"] == "dev"
    assert sorted(exp.get_tags()) == ["baseline", "v1"]
    points = exp.get_metrics("loss")
    assert [p["epoch"] for p in points] == [None, 2]


def test_a_changed_parameter_is_refused_in_comets_shape_and_the_first_value_stays(api: API) -> None:
    exp = APIExperiment(api=api, workspace=WORKSPACE, project_name=f"p-{uuid.uuid4().hex[:8]}")
    exp.log_parameter("lr", 0.01)
    exp.log_parameter("lr", 0.01)   # the same value again is fine
    with pytest.raises(CometRestApiException) as info:
        exp.log_parameter("lr", 0.02)
    assert info.value.response.status_code == 400
    assert info.value.safe_json_response["code"] == 400
    assert "Changing param values is not allowed" in info.value.safe_msg
    assert exp.get_parameters_summary("lr")["valueCurrent"] == "0.01"


def _run_updates(url: str, run_id: str) -> int:
    r = httpx.post(f"{url}/api/runledger/v1/sql", timeout=30, json={
        "query": f"SELECT count(*) AS n FROM events WHERE run_id = '{run_id}' AND type = 'RunUpdated'"})
    assert r.status_code == 200, r.text
    return int(r.json()["rows"][0][0])


def test_keep_alive_appends_nothing_while_running_and_reopens_a_finished_run(
        comet_env: RunledgerServer, api: API, mlflow_client: MlflowClient) -> None:
    exp = APIExperiment(api=api, workspace=WORKSPACE, project_name=f"p-{uuid.uuid4().hex[:8]}")
    assert api._client.update_experiment_status(exp.key)["isAliveBeatDurationMillis"] > 0
    assert _run_updates(comet_env.url, exp.key) == 0
    exp.set_state("finished")
    api._client.update_experiment_status(exp.key)
    assert mlflow_client.get_run(exp.key).info.status == "RUNNING"
    assert _run_updates(comet_env.url, exp.key) == 2


def test_writing_to_an_unknown_experiment_key_is_a_404(api: API) -> None:
    with pytest.raises(CometRestApiException) as info:
        api._client.log_experiment_metric(uuid.uuid4().hex, "loss", 1.0)
    assert info.value.response.status_code == 404


def test_unserved_client_calls_fail_with_a_clear_501(api: API, mlflow_client: MlflowClient) -> None:
    _, exp_id = _project(mlflow_client)
    exp = api.get_experiment_by_key(_mlflow_run(mlflow_client, exp_id))
    for call in (exp.get_asset_list, exp.get_code, exp.get_system_details, exp.get_html):
        with pytest.raises(CometRestApiException) as info:
            call()
        assert info.value.response.status_code == 501, call
        assert "not served by Runledger" in str(info.value)


def test_comet_writes_are_recorded_as_comet_events(comet_env: RunledgerServer, api: API) -> None:
    exp = APIExperiment(api=api, workspace=WORKSPACE, project_name=f"p-{uuid.uuid4().hex[:8]}")
    exp.log_metric("m", 1.0)
    time.sleep(0)  # the write is answered after it is applied
    r = httpx.post(f"{comet_env.url}/api/runledger/v1/sql", json={
        "query": f"SELECT api FROM events WHERE run_id = '{exp.key}' AND type = 'MetricsLogged'"}, timeout=30)
    assert r.status_code == 200, r.text
    assert "comet" in r.text
