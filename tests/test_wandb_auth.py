"""The W&B room with authentication on (RUNLEDGER_AUTH=on): W&B keys are Runledger tokens, a
project the caller cannot read is absent, writes need EDIT on the run's experiment."""

from __future__ import annotations

import base64
import uuid
from typing import Any, Iterator

import httpx
import pytest

ADMIN, ADMIN_PW = "root", "root-password-1"
M, V1 = "/api/2.0/mlflow", "/api/runledger/v1"
PROJECT_RUN = ("query Run($project: String!, $entity: String!, $name: String!) { project(name: $project, "
               "entityName: $entity) { run(name: $name) { id displayName } } }")
DELETE = "mutation DeleteRun($id: ID!) { deleteRun(input: {id: $id}) { clientMutationId } }"


def _key(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"api:{token}".encode()).decode()}


@pytest.fixture(scope="module")
def world(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from tests.conftest import RunledgerServer

    server = RunledgerServer(kafka_bootstrap, tmp_path_factory.mktemp("data"), f"test-{uuid.uuid4().hex[:12]}",
                             RUNLEDGER_AUTH="on", RUNLEDGER_ADMIN_USER=ADMIN, RUNLEDGER_ADMIN_PASSWORD=ADMIN_PW,
                             RUNLEDGER_AUTH_DEFAULT_PERMISSION="NO_PERMISSIONS").start()
    admin = httpx.Client(base_url=server.url, auth=(ADMIN, ADMIN_PW), timeout=30)
    name = f"wb-auth-{uuid.uuid4().hex[:8]}"
    exp = admin.post(f"{M}/experiments/create", json={"name": name}).json()["experiment_id"]
    run = admin.post(f"{M}/runs/create", json={"experiment_id": exp, "run_name": "r"}).json()["run"]["info"]["run_id"]
    tokens = {}
    for user, level in (("outsider", None), ("reader", "READ")):
        assert admin.post(f"{M}/users/create", json={"username": user, "password": f"{user}-pw-123"}).status_code == 200
        if level:
            assert admin.post("/api/3.0/mlflow/users/permissions/grant", json={
                "username": user, "resource_type": "experiment", "resource_id": exp, "permission": level}).status_code == 200
        tokens[user] = admin.post(f"{V1}/tokens", json={"username": user}).json()["token"]
    yield {"url": server.url, "project": name, "run": run, "tokens": tokens}
    admin.close()
    server.stop()


def _gql(world: dict, token: str, query: str, **variables: Any) -> httpx.Response:
    return httpx.post(f"{world['url']}/graphql", headers=_key(token), timeout=30,
                      json={"query": query, "variables": variables, "operationName": ""})


def test_a_token_is_a_wandb_key(world: dict) -> None:
    r = _gql(world, world["tokens"]["reader"], "{ viewer { username entity } }")
    assert r.json()["data"]["viewer"]["username"] == "reader"


def test_a_key_that_is_no_token_is_refused(world: dict) -> None:
    assert _gql(world, "x" * 40, "{ viewer { id } }").status_code == 401


def test_a_reader_sees_the_project_and_an_outsider_does_not(world: dict) -> None:
    args = {"project": world["project"], "entity": "runledger", "name": world["run"]}
    seen = _gql(world, world["tokens"]["reader"], PROJECT_RUN, **args).json()
    assert seen["data"]["project"]["run"]["displayName"] == "r"
    assert _gql(world, world["tokens"]["outsider"], PROJECT_RUN, **args).json() == {"data": {"project": None}}


def test_a_write_without_edit_is_refused_with_a_graphql_error(world: dict) -> None:
    answer = _gql(world, world["tokens"]["reader"], DELETE, id=world["run"]).json()
    assert "needs EDIT" in answer["errors"][0]["message"]
    assert answer["errors"][0]["extensions"]["code"] == "PERMISSION_DENIED"


PARQUET = ("query P($project: String!, $entity: String!, $name: String!) { project(name: $project, entityName: "
           "$entity) { run(name: $name) { parquetHistory(liveKeys: [\"_step\"]) { parquetUrls } } } }")


def test_a_history_export_is_fetched_only_by_a_user_who_may_read_the_run(world: dict) -> None:
    """The export URL (fetched by W&B's helper without credentials) is signed for the user who
    asked; it stops working once that user loses READ, and an outsider is never given one."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    admin = httpx.Client(base_url=world["url"], auth=(ADMIN, ADMIN_PW), timeout=30)
    exp = admin.get(f"{M}/experiments/get-by-name", params={"experiment_name": world["project"]}).json()
    exp_id = exp["experiment"]["experiment_id"]
    run = admin.post(f"{M}/runs/create", json={"experiment_id": exp_id, "run_name": "exported"}).json()
    run_id = run["run"]["info"]["run_id"]
    points = [{"key": "loss", "value": 1.0 / (s + 1), "timestamp": 1_700_000_000_000 + s, "step": s} for s in range(50)]
    assert admin.post(f"{M}/runs/log-batch", json={"run_id": run_id, "metrics": points}).status_code == 200
    assert admin.post(f"{M}/runs/update", json={"run_id": run_id, "status": "FINISHED"}).status_code == 200
    assert admin.post(f"{M}/users/create", json={"username": "fleeting", "password": "fleeting-pw-123"}).status_code == 200
    grant = {"username": "fleeting", "resource_type": "experiment", "resource_id": exp_id}
    assert admin.post("/api/3.0/mlflow/users/permissions/grant", json={**grant, "permission": "READ"}).status_code == 200
    token = admin.post(f"{V1}/tokens", json={"username": "fleeting"}).json()["token"]
    args = {"project": world["project"], "entity": "runledger", "name": run_id}

    urls = _gql(world, token, PARQUET, **args).json()["data"]["project"]["run"]["parquetHistory"]["parquetUrls"]
    assert len(urls) == 1 and httpx.get(urls[0], timeout=30).status_code == 200
    assert _gql(world, world["tokens"]["outsider"], PARQUET, **args).json() == {"data": {"project": None}}
    parts = urlsplit(urls[0])
    as_outsider = {**dict(parse_qsl(parts.query)), "user": "outsider"}
    assert httpx.get(urlunsplit(parts._replace(query=urlencode(as_outsider))), timeout=30).status_code == 404
    assert admin.post("/api/3.0/mlflow/users/permissions/revoke", json=grant).status_code == 200
    assert httpx.get(urls[0], timeout=30).status_code == 404
    admin.close()
