"""With authentication on, comet_ml's key is the user's API token and the Comet routes keep the
same per-experiment permissions as the MLflow ones (docs/comet.md, docs/auth.md)."""

from __future__ import annotations

import os
import uuid
from typing import Any, Iterator

os.environ.setdefault("COMET_ERROR_TRACKING_ENABLE", "false")
os.environ.setdefault("COMET_DISABLE_ANNOUNCEMENT", "true")

import base64  # noqa: E402

import httpx  # noqa: E402
import pytest  # noqa: E402
from comet_ml import API, APIExperiment  # noqa: E402
from comet_ml.exceptions import CometRestApiException  # noqa: E402

ADMIN, ADMIN_PW = "root", "root-password-1"
M = "/api/2.0/mlflow"


def _admin() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{ADMIN}:{ADMIN_PW}".encode()).decode()}


@pytest.fixture(scope="module")
def world(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from tests.conftest import RunledgerServer

    s = RunledgerServer(kafka_bootstrap, tmp_path_factory.mktemp("data"), f"test-{uuid.uuid4().hex[:12]}",
                        RUNLEDGER_AUTH="on", RUNLEDGER_ADMIN_USER=ADMIN, RUNLEDGER_ADMIN_PASSWORD=ADMIN_PW,
                        RUNLEDGER_AUTH_DEFAULT_PERMISSION="NO_PERMISSIONS", RUNLEDGER_AUTH_FREE_FAILURES="100000")
    s.start()
    with httpx.Client(base_url=s.url, headers=_admin(), timeout=30) as h:
        def ok(method: str, path: str, **kw: Any) -> dict[str, Any]:
            r = h.request(method, path, **kw)
            assert r.status_code == 200, r.text
            return r.json() if r.content else {}
        ok("POST", f"{M}/users/create", json={"username": "alice", "password": "alice-pw"})
        shared = ok("POST", f"{M}/experiments/create", json={"name": f"shared-{uuid.uuid4().hex[:6]}"})["experiment_id"]
        hidden = ok("POST", f"{M}/experiments/create", json={"name": f"hidden-{uuid.uuid4().hex[:6]}"})["experiment_id"]
        ok("POST", "/api/3.0/mlflow/users/permissions/grant", json={
            "username": "alice", "resource_type": "experiment", "resource_id": shared, "permission": "READ"})
        runs = {e: ok("POST", f"{M}/runs/create", json={"experiment_id": e})["run"]["info"]["run_id"]
                for e in (shared, hidden)}
        token = ok("POST", "/api/runledger/v1/tokens", json={"username": "alice"})["token"]
    mp = pytest.MonkeyPatch()
    mp.setenv("COMET_URL_OVERRIDE", f"{s.url}/clientlib/")
    yield {"url": s.url, "token": token, "shared": shared, "hidden": hidden, "runs": runs}
    mp.undo()
    s.stop()


def test_the_comet_key_is_the_users_api_token_and_listings_show_only_readable_projects(world: dict[str, Any]) -> None:
    api = API(api_key=world["token"], cache=False)
    projects = api.get_projects("runledger")
    names = {p["projectName"] for p in api._client.get_project_jsons("runledger")["projects"]}
    assert len(projects) == len(names)
    ids = {p["projectId"] for p in api._client.get_project_jsons("runledger")["projects"]}
    assert world["shared"] in ids and world["hidden"] not in ids
    assert api.get_experiment_by_key(world["runs"][world["shared"]]).key == world["runs"][world["shared"]]


def test_reading_an_experiment_without_a_grant_is_a_403(world: dict[str, Any]) -> None:
    api = API(api_key=world["token"], cache=False)
    with pytest.raises(CometRestApiException) as info:
        api._client.get_experiment_metadata(world["runs"][world["hidden"]])
    assert info.value.response.status_code == 403


def test_a_wrong_key_is_a_401_in_comets_shape(world: dict[str, Any]) -> None:
    r = httpx.get(f"{world['url']}/api/rest/v2/workspaces", headers={"Authorization": "not-a-token"})
    assert r.status_code == 401 and r.headers["content-type"] == "application/json"
    assert r.json()["code"] == 401 and r.json()["error_code"] == "UNAUTHENTICATED"
    assert httpx.get(f"{world['url']}/clientlib/isAlive/ver").status_code == 200   # the version probe is public


def test_writing_needs_edit_and_a_new_project_belongs_to_its_creator(world: dict[str, Any]) -> None:
    api = API(api_key=world["token"], cache=False)
    with pytest.raises(CometRestApiException) as info:
        api._client.log_experiment_metric(world["runs"][world["shared"]], "loss", 1.0)   # READ only
    assert info.value.response.status_code == 403
    exp = APIExperiment(api=api, workspace="runledger", project_name=f"alice-{uuid.uuid4().hex[:6]}")
    exp.log_metric("loss", 0.5, step=1)
    assert exp.get_metrics_summary("loss")["valueCurrent"] == "0.5"
