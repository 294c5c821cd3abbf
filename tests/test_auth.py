"""Authentication and per-experiment permissions (docs/auth.md), against a real server with
RUNLEDGER_AUTH=on and users without a grant reading nothing (RUNLEDGER_AUTH_DEFAULT_PERMISSION=
NO_PERMISSIONS), so "no grant" and "READ grant" are different cells of the matrix."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any, Iterator

import httpx
import pytest

from runledger.auth import rules
from runledger.auth.rules import Need
from runledger.settings import Settings

pytestmark = pytest.mark.kafka

ADMIN, ADMIN_PW = "root", "root-password-1"
V1 = "/api/runledger/v1"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class World:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=60)
        self.admin = basic(ADMIN, ADMIN_PW)

    def call(self, method: str, path: str, headers: dict[str, str], **kw: Any) -> httpx.Response:
        return self.http.request(method, path, headers=headers, **kw)

    def ok(self, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
        r = self.call(method, path, headers or self.admin, **kw)
        assert r.status_code == 200, r.text
        return r.json() if r.content else {}


@pytest.fixture(scope="module")
def world(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from tests.conftest import RunledgerServer

    s = RunledgerServer(kafka_bootstrap, tmp_path_factory.mktemp("data"), f"test-{uuid.uuid4().hex[:12]}",
                        RUNLEDGER_AUTH="on", RUNLEDGER_ADMIN_USER=ADMIN, RUNLEDGER_ADMIN_PASSWORD=ADMIN_PW,
                        RUNLEDGER_AUTH_DEFAULT_PERMISSION="NO_PERMISSIONS",
                        # the matrix fails sign-ins on purpose; slowing down is tested on its own
                        RUNLEDGER_AUTH_FREE_FAILURES="100000")
    s.start()
    w = World(s.url)
    w.server = s  # type: ignore[attr-defined]
    m = "/api/2.0/mlflow"
    for name in ("nogrant", "reader", "editor", "manager"):
        w.ok("POST", f"{m}/users/create", json={"username": name, "password": f"{name}-pw"})
    w.exp = w.ok("POST", f"{m}/experiments/create", json={"name": f"auth-{uuid.uuid4().hex}"})["experiment_id"]
    w.other = w.ok("POST", f"{m}/experiments/create", json={"name": f"other-{uuid.uuid4().hex}"})["experiment_id"]
    for name, level in (("reader", "READ"), ("editor", "EDIT"), ("manager", "MANAGE")):
        w.ok("POST", "/api/3.0/mlflow/users/permissions/grant", json={
            "username": name, "resource_type": "experiment", "resource_id": w.exp, "permission": level})
    w.run = w.ok("POST", f"{m}/runs/create", json={"experiment_id": w.exp})["run"]["info"]["run_id"]
    w.other_run = w.ok("POST", f"{m}/runs/create", json={"experiment_id": w.other})["run"]["info"]["run_id"]
    w.ok("POST", f"{m}/runs/log-batch", json={"run_id": w.other_run, "metrics": [
        {"key": "secret_loss", "value": 1.0, "timestamp": 1, "step": 0}], "params": [{"key": "p", "value": "v"}]})
    w.ok("POST", f"{m}/runs/log-metric", json={"run_id": w.run, "key": "loss", "value": 0.5, "timestamp": 1})
    revoked = w.ok("POST", f"{V1}/tokens", json={"username": "editor"})
    w.ok("POST", f"{V1}/tokens/revoke", json={"token_id": revoked["info"]["token_id"]})
    w.revoked = revoked["token"]
    expiring = w.ok("POST", f"{V1}/tokens", json={"username": "editor",
                                                  "expires_at": int(time.time() * 1000) + 1500})
    w.expired = expiring["token"]
    w.editor_token = w.ok("POST", f"{V1}/tokens", json={"username": "editor"})["token"]
    # an experiment the matrix leaves alone (its admin cells delete the matrix's own)
    w.live = _fresh_experiment(w, {"reader": "READ", "editor": "EDIT"})
    time.sleep(max(0.0, 1.6))
    yield w
    w.http.close()
    s.stop()


# ----- the matrix, generated from the app's route table

def _app_routes() -> list[tuple[str, str]]:
    from runledger.app import create_app

    app = create_app(Settings(auth=True))
    out = []
    for entry in rules.route_table(app.routes):
        for method in sorted(entry.methods or {"GET"}):
            if method != "HEAD":
                out.append((method, entry.path))
    return out


ROUTES = _app_routes()


def test_every_route_of_the_app_declares_an_access_rule() -> None:
    assert [r for r in ROUTES if rules.rule_for(*r) is None] == []


def _request(w: World, method: str, path: str, rule: rules.Rule) -> dict[str, Any]:
    """A request naming the matrix's experiment (or its run) where the rule looks."""
    values = {rules.EXPERIMENT: w.exp, rules.RUN: w.run, rules.MODEL: "m-none", rules.USERNAME: "manager",
              rules.EXPERIMENT_NAME: "none"}
    params: dict[str, Any] = {}
    body: dict[str, Any] = {}
    concrete = path.replace("{run_id}", w.run).replace("{experiment_id}", w.exp).replace(
        "{model_id}", "m-none").replace("{tag_key:path}", "k").replace(
        "{path:path}", f"{w.exp}/{w.run}/artifacts/matrix.txt")   # an artifact path in the run's folder
    where = rule.where
    if where is not None and where.source in ("body", "query", "handler") and where.kind in values:
        target = params if where.source == "query" else body
        target[where.field] = [values[where.kind]] if where.many else values[where.kind]
    kw: dict[str, Any] = {"params": params}
    if method in ("POST", "PATCH", "DELETE", "PUT"):
        kw["json"] = body
    return {"method": method, "url": concrete, **kw}


def _principals(w: World) -> dict[str, dict[str, str]]:
    return {"anonymous": {}, "wrong_password": basic("editor", "nope"), "revoked_token": bearer(w.revoked),
            "expired_token": bearer(w.expired), "no_grant": basic("nogrant", "nogrant-pw"),
            "read_user": basic("reader", "reader-pw"), "edit_user": bearer(w.editor_token),
            "admin": w.admin}


_LEVEL = {Need.READ: 1, Need.EDIT: 2, Need.MANAGE: 3}
_HAS = {"no_grant": 0, "read_user": 1, "edit_user": 2}


def expected(principal: str, rule: rules.Rule) -> str:
    """"401", "403" or "allowed" (any answer but 401/403)."""
    if rule.need is Need.PUBLIC:
        return "allowed"
    if principal in ("anonymous", "wrong_password", "revoked_token", "expired_token"):
        return "401"
    if principal == "admin" or rule.need is Need.AUTHENTICATED:
        return "allowed"
    if rule.need is Need.ADMIN:
        return "403"
    if rule.need is Need.SELF_OR_ADMIN:
        return "403"                                # the cells name "manager", not the caller
    where = rule.where
    if rule.filters or where is None or (where.source == "handler" and rule.need is Need.READ):
        return "allowed"                            # listings leave things out instead
    if where.kind == rules.MODEL or where.kind == rules.EXPERIMENT_NAME:
        return "allowed"                            # nothing found: the route's own 404
    return "allowed" if _HAS[principal] >= _LEVEL[rule.need] else "403"


@pytest.mark.parametrize("principal", ["anonymous", "wrong_password", "revoked_token", "expired_token",
                                       "no_grant", "read_user", "edit_user", "admin"])
def test_route_matrix(world: World, principal: str) -> None:
    headers = _principals(world)[principal]
    wrong = []
    # destructive routes last, so the admin's deletions do not change earlier cells
    order = sorted(ROUTES, key=lambda r: ("delete" in r[1] or r[0] == "DELETE" or "update-admin" in r[1], r))
    for method, path in order:
        rule = rules.rule_for(method, path)
        assert rule is not None
        if path.endswith("/tail") and expected(principal, rule) == "allowed":
            continue                                # a live stream: its refusal cells still run
        if "users/delete" in path or "update-admin" in path or "update-password" in path:
            if principal == "admin":
                continue                            # would change the matrix's own principals
        want = expected(principal, rule)
        r = world.http.request(headers=headers, timeout=30, **_request(world, method, path, rule))
        got = str(r.status_code) if r.status_code in (401, 403) else "allowed"
        if got != want:
            wrong.append((method, path, want, r.status_code, r.text[:200]))
        if r.status_code in (401, 403):
            assert r.json()["error_code"] == ("UNAUTHENTICATED" if r.status_code == 401 else "PERMISSION_DENIED")
    assert wrong == []


def test_edit_user_cannot_delete_but_manager_can(world: World) -> None:
    m = "/api/2.0/mlflow"
    exp = _fresh_experiment(world, {"editor": "EDIT", "manager": "MANAGE"})
    run = world.ok("POST", f"{m}/runs/create", json={"experiment_id": exp})["run"]["info"]["run_id"]
    assert world.call("POST", f"{m}/runs/delete", bearer(world.editor_token), json={"run_id": run}).status_code == 403
    assert world.call("POST", f"{m}/runs/delete", basic("manager", "manager-pw"), json={"run_id": run}).status_code == 200


def _fresh_experiment(w: World, grants: dict[str, str]) -> str:
    exp = w.ok("POST", "/api/2.0/mlflow/experiments/create", json={"name": f"fresh-{uuid.uuid4().hex}"})["experiment_id"]
    for name, level in grants.items():
        w.ok("POST", "/api/3.0/mlflow/users/permissions/grant", json={
            "username": name, "resource_type": "experiment", "resource_id": exp, "permission": level})
    return exp


# ----- listings leave out what the caller may not read

def test_listings_leave_out_experiments_the_caller_may_not_read(world: World) -> None:
    m = "/api/2.0/mlflow"
    exp = _fresh_experiment(world, {"reader": "READ"})
    hidden = _fresh_experiment(world, {})
    runs = {e: world.ok("POST", f"{m}/runs/create", json={"experiment_id": e})["run"]["info"]["run_id"]
            for e in (exp, hidden)}
    for e, r in runs.items():
        world.ok("POST", f"{m}/runs/log-metric", json={"run_id": r, "key": "loss", "value": 1.0, "timestamp": 5})
    reader = basic("reader", "reader-pw")
    found = world.ok("POST", f"{m}/experiments/search", reader, json={"max_results": 1000})
    ids = {e["experiment_id"] for e in found["experiments"]}
    assert exp in ids and hidden not in ids
    got = world.ok("GET", f"{m}/experiments/search", reader, params={"max_results": 1000, "filter": "name LIKE 'fresh-%'"})
    assert hidden not in {e["experiment_id"] for e in got["experiments"]}
    searched = world.ok("POST", f"{m}/runs/search", reader, json={"experiment_ids": [exp, hidden]})
    assert {r["info"]["run_id"] for r in searched["runs"]} == {runs[exp]}
    bulk = world.ok("GET", f"{m}/metrics/get-history-bulk-interval", reader,
                    params=[("run_ids", runs[exp]), ("run_ids", runs[hidden]), ("metric_key", "loss")])
    assert {p["run_id"] for p in bulk["metrics"]} == {runs[exp]}
    events = world.ok("GET", f"{V1}/events", reader, params={"max_results": 1000})["events"]
    seen = {e["experiment_id"] for e in events}
    assert exp in seen and hidden not in seen and world.other not in seen and None not in seen
    assert world.call("GET", f"{m}/runs/get", reader, params={"run_id": runs[hidden]}).status_code == 403


def test_a_user_without_a_grant_lists_nothing_under_no_permissions_default(world: World) -> None:
    found = world.ok("POST", "/api/2.0/mlflow/experiments/search", basic("nogrant", "nogrant-pw"),
                     json={"max_results": 1000})
    assert found.get("experiments", []) == []


# ----- SQL answers only rows of readable experiments, whatever the query says

def _sql(w: World, headers: dict[str, str], query: str) -> list[list[Any]]:
    r = w.call("POST", f"{V1}/sql", headers, json={"query": query})
    assert r.status_code == 200, r.text
    return r.json()["rows"]


SQL_PROBES = [
    "SELECT experiment_id FROM experiments",
    "SELECT r.experiment_id FROM runs r",
    "SELECT run_id FROM metrics WHERE key = 'secret_loss'",
    "SELECT run_id FROM latest_metrics WHERE key = 'secret_loss'",
    "SELECT run_id FROM params WHERE key = 'p'",
    "SELECT m.run_id FROM metrics m JOIN runs r USING (run_id) WHERE m.key = 'secret_loss'",
    "SELECT run_id FROM tags WHERE run_id IN (SELECT run_id FROM runs)",
    "WITH x AS (SELECT * FROM metrics) SELECT run_id FROM x WHERE key = 'secret_loss'",
    "SELECT experiment_id FROM events WHERE experiment_id IS NOT NULL",
    "SELECT experiment_id FROM events UNION ALL SELECT experiment_id FROM rejections",
    "SELECT (SELECT count(*) FROM metrics WHERE key = 'secret_loss') AS n WHERE n > 0",
]


@pytest.mark.parametrize("query", SQL_PROBES)
def test_sql_shows_a_reader_no_row_of_another_experiment(world: World, query: str) -> None:
    rows = _sql(world, basic("reader", "reader-pw"), query)
    assert world.other not in {str(v) for row in rows for v in row}
    assert world.other_run not in {str(v) for row in rows for v in row}
    # the admin sees the same query's rows of that experiment (the probes do reach it)
    admin_rows = _sql(world, world.admin, query)
    assert {world.other, world.other_run, "1"} & {str(v) for row in admin_rows for v in row}


def test_sql_events_name_users_and_tokens_only_for_admins_and_never_secrets(world: World) -> None:
    reader_types = {r[0] for r in _sql(world, basic("reader", "reader-pw"), "SELECT DISTINCT type FROM events")}
    assert not reader_types & {"UserCreated", "TokenCreated", "PasswordChanged"}
    payloads = " ".join(str(r[0]) for r in _sql(world, world.admin, "SELECT payload FROM events"))
    assert "TokenCreated" in {r[0] for r in _sql(world, world.admin, "SELECT DISTINCT type FROM events")}
    for secret in (ADMIN_PW, "reader-pw", "editor-pw", world.editor_token, world.editor_token.split("_")[-1]):
        assert secret not in payloads
    assert "$argon2" not in payloads


# ----- the actor is the authenticated principal

def test_the_actor_is_the_authenticated_user_and_a_claimed_user_stays_data(world: World) -> None:
    m = "/api/2.0/mlflow"
    r = world.call("POST", f"{m}/runs/create", bearer(world.editor_token) | {"X-Runledger-User": "mallory"}, json={
        "experiment_id": world.live, "user_id": "mallory", "tags": [{"key": "mlflow.user", "value": "mallory"}]})
    assert r.status_code == 200, r.text
    run = r.json()["run"]["info"]
    assert run["user_id"] == "mallory"
    trail = world.ok("GET", f"{V1}/runs/{run['run_id']}/events")["events"]
    assert trail[0]["actor"] == {"name": "editor", "verified": True}


# ----- the mlflow client, unmodified

def test_mlflow_client_with_basic_credentials_logs_and_reads(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "editor")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "editor-pw")
    client = MlflowClient(tracking_uri=world.url)
    run = client.create_run(world.live)
    client.log_metric(run.info.run_id, "acc", 0.9, step=1)
    client.log_param(run.info.run_id, "lr", "0.1")
    assert client.get_run(run.info.run_id).data.metrics == {"acc": 0.9}
    from mlflow.exceptions import MlflowException
    with pytest.raises(MlflowException) as e:
        client.delete_run(run.info.run_id)
    assert e.value.error_code == "PERMISSION_DENIED"


def test_mlflow_client_with_a_bearer_token_logs(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", world.editor_token)
    client = MlflowClient(tracking_uri=world.url)
    run = client.create_run(world.live)
    client.log_batch(run.info.run_id, metrics=[], params=[], tags=[])
    client.set_tag(run.info.run_id, "t", "v")
    assert client.get_run(run.info.run_id).data.tags["t"] == "v"


def test_mlflow_client_without_credentials_is_unauthenticated(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(MlflowException) as e:
        MlflowClient(tracking_uri=world.url).get_experiment(world.exp)
    assert e.value.error_code == "UNAUTHENTICATED"


def test_mlflow_auth_client_manages_users_and_grants(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.server import get_app_client

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PW)
    auth = get_app_client("basic-auth", tracking_uri=world.url)
    name = f"u{uuid.uuid4().hex[:8]}"
    user = auth.create_user(name, "first-pw")
    assert (user.username, user.is_admin) == (name, False)
    assert auth.get_user(name).username == name
    auth.update_user_password(name, "second-pw")
    auth.update_user_admin(name, True)
    assert auth.get_user(name).is_admin
    auth.update_user_admin(name, False)
    exp = _fresh_experiment(world, {})
    auth.grant_user_permission(name, "experiment", exp, "EDIT")
    got = auth.get_user_permission(name, "experiment", exp)
    assert got.permission == "EDIT"
    r = world.call("POST", "/api/2.0/mlflow/runs/create", basic(name, "second-pw"), json={"experiment_id": exp})
    assert r.status_code == 200
    auth.revoke_user_permission(name, "experiment", exp)
    assert auth.get_user_permission(name, "experiment", exp).permission == "NO_PERMISSIONS"
    r = world.call("POST", "/api/2.0/mlflow/runs/create", basic(name, "second-pw"), json={"experiment_id": exp})
    assert r.status_code == 403
    auth.delete_user(name)
    assert world.call("GET", "/api/2.0/mlflow/experiments/get", basic(name, "second-pw"),
                      params={"experiment_id": exp}).status_code == 401


def test_the_creator_of_an_experiment_gets_manage(world: World) -> None:
    editor = bearer(world.editor_token)
    r = world.call("POST", "/api/2.0/mlflow/experiments/create", editor, json={"name": f"mine-{uuid.uuid4().hex}"})
    assert r.status_code == 200, r.text
    exp = r.json()["experiment_id"]
    got = world.ok("GET", "/api/3.0/mlflow/users/permissions/get",
                   params={"username": "editor", "resource_type": "experiment", "resource_id": exp})
    assert got["permission"] == "MANAGE"
    assert world.call("POST", "/api/2.0/mlflow/experiments/delete", editor, json={"experiment_id": exp}).status_code == 200


def test_the_stream_endpoint_refuses_a_reader_before_appending(world: World) -> None:
    r = world.call("POST", f"{V1}/metrics/stream", basic("reader", "reader-pw"), json={
        "run_id": world.run, "keys": ["x"], "values": [1.0], "timestamps": [1], "steps": [0]})
    assert r.status_code == 403
    n = _sql(world, world.admin, f"SELECT count(*) FROM metrics WHERE run_id = '{world.run}' AND key = 'x'")
    assert n == [[0]]


# ----- replay: the log alone gives the same permission answers

def test_permissions_replayed_from_the_log_give_the_same_answers(world: World, kafka_bootstrap: str,
                                                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    import shutil

    from tests.conftest import RunledgerServer

    users = ["reader", "editor", "manager", "nogrant", ADMIN]
    exps = [world.exp, world.other]

    def answers(w: World) -> list[Any]:
        return [w.ok("GET", "/api/3.0/mlflow/users/permissions/get", params={
            "username": u, "resource_type": "experiment", "resource_id": e})["permission"]
            for u in users for e in exps] + [w.ok("GET", "/api/2.0/mlflow/users/list")["users"]]

    before = answers(world)
    data = tmp_path_factory.mktemp("replayed")
    # the secrets file is not in the log (docs/auth.md): it travels with the data folder
    shutil.copy(world.server.data_dir / "auth-secrets.json", data / "auth-secrets.json")  # type: ignore[attr-defined]
    s = RunledgerServer(kafka_bootstrap, data, world.server.topic, RUNLEDGER_AUTH="on",  # type: ignore[attr-defined]
                        RUNLEDGER_AUTH_DEFAULT_PERMISSION="NO_PERMISSIONS")
    s.start()
    try:
        again = World(s.url)
        deadline = time.monotonic() + 60
        while again.http.get("/health/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)      # the rebuilt read model catches up with the log first
        assert answers(again) == before
        assert again.call("GET", "/api/2.0/mlflow/runs/get", bearer(world.editor_token),
                          params={"run_id": world.run}).status_code == 200
        assert again.call("GET", "/api/2.0/mlflow/runs/get", bearer(world.revoked),
                          params={"run_id": world.run}).status_code == 401
    finally:
        s.stop()


# ----- slowing down repeated failures

def test_repeated_failures_from_one_client_are_slowed_down() -> None:
    from runledger.auth.authenticator import FailureThrottle

    t = FailureThrottle(free=3, base=0.1, cap=1.0)
    for _ in range(3):
        assert t.delay("1.2.3.4") == 0
        t.failed("1.2.3.4")
    assert t.delay("1.2.3.4") == pytest.approx(0.1)
    t.failed("1.2.3.4")
    assert t.delay("1.2.3.4") == pytest.approx(0.2)
    assert t.delay("5.6.7.8") == 0          # other clients are not slowed
    t.succeeded("1.2.3.4")
    assert t.delay("1.2.3.4") == 0


def test_tokens_are_shaped_as_other_clients_want_their_keys() -> None:
    import re

    from runledger.auth import tokens

    _, token, digest = tokens.new_token()
    assert re.fullmatch(r"[A-Za-z0-9_]{40,}", token) and token not in digest


def test_the_streaming_client_sends_its_token(world: World) -> None:
    from runledger.client.stream import MetricStream

    run = world.ok("POST", "/api/2.0/mlflow/runs/create", json={"experiment_id": world.live})["run"]["info"]["run_id"]
    with MetricStream(world.url, run, token=world.editor_token, flush_interval=0.05) as stream:
        for step in range(10):
            stream.log("streamed", float(step), step=step, timestamp=1_700_000_000_000 + step)
    # The stream client holds no log position to pass back, so the points become queryable
    # when the projector applies them, a moment after the acknowledgement.
    query = f"SELECT count(*) FROM metrics WHERE run_id = '{run}' AND key = 'streamed'"
    deadline = time.monotonic() + 30
    while (n := _sql(world, world.admin, query)) != [[10]] and time.monotonic() < deadline:
        assert n[0][0] < 10, n
        time.sleep(0.05)
    assert n == [[10]]


@pytest.mark.parametrize("query", [
    "SELECT * FROM query('SELECT experiment_id FROM main.experiments')",
    "SELECT * FROM query_table('main.runs')",
    "SELECT * FROM main.metrics",
    "SELECT * FROM analytics.metrics WHERE key = 'secret_loss'",
])
def test_sql_has_no_way_around_the_scope(world: World, query: str) -> None:
    r = world.call("POST", f"{V1}/sql", basic("reader", "reader-pw"), json={"query": query})
    if r.status_code == 200:
        values = {str(v) for row in r.json()["rows"] for v in row}
        assert world.other not in values and world.other_run not in values
    else:
        assert r.status_code == 400, r.text


def test_a_manager_cannot_grant_on_an_experiment_that_does_not_exist_yet(world: World) -> None:
    r = world.call("POST", "/api/3.0/mlflow/users/permissions/grant", basic("manager", "manager-pw"), json={
        "username": "manager", "resource_type": "experiment", "resource_id": "999999", "permission": "MANAGE"})
    assert r.status_code == 404


# ----- the CLI does not overwrite a user (issue 19)

def _cli(w: World, *args: str, stdin: str = "") -> "subprocess.CompletedProcess[str]":
    import os
    import subprocess
    import sys

    server = w.server  # type: ignore[attr-defined]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNLEDGER_")}
    env.update(RUNLEDGER_DATA_DIR=str(server.data_dir), RUNLEDGER_TOPIC=server.topic,
               RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS=server.bootstrap)
    return subprocess.run([sys.executable, "-m", "runledger.cli", *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=120)


def _signs_in(w: World, user: str, password: str, within: float = 0.0) -> bool:
    deadline = time.monotonic() + within
    while True:
        ok = w.call("GET", "/api/2.0/mlflow/users/current", basic(user, password)).status_code == 200
        if ok or time.monotonic() >= deadline:
            return ok
        time.sleep(0.2)


def test_cli_users_add_refuses_an_existing_user_and_users_password_changes_it(world: World) -> None:
    name = f"cli-{uuid.uuid4().hex[:6]}"
    first = _cli(world, "users", "add", name, "--password-stdin", stdin="first-pw\n")
    assert first.returncode == 0, first.stderr
    assert _signs_in(world, name, "first-pw", within=30)
    again = _cli(world, "users", "add", name, "--admin", "--password-stdin", stdin="taken-over\n")
    assert again.returncode != 0
    assert "already exists" in again.stderr and f"runledger users password {name}" in again.stderr
    assert _signs_in(world, name, "first-pw") and not _signs_in(world, name, "taken-over")
    assert not world.ok("GET", "/api/2.0/mlflow/users/get", params={"username": name})["user"]["is_admin"]
    changed = _cli(world, "users", "password", name, "--password-stdin", stdin="second-pw\n")
    assert changed.returncode == 0, changed.stderr
    assert _signs_in(world, name, "second-pw", within=10) and not _signs_in(world, name, "first-pw")


# ----- a read's log-position wait comes after the gate (issue 21)

POSITION = "X-Runledger-Log-Position"


def test_a_refused_caller_passing_a_far_future_log_position_is_answered_at_once(world: World) -> None:
    far = {POSITION: '{"0": 999999999999, "1": 999999999999}'}    # never reached: an allowed read would wait 30 s
    m = "/api/2.0/mlflow"
    run_id = world.ok("POST", f"{m}/runs/create", json={"experiment_id": world.live})["run"]["info"]["run_id"]
    for headers, status in (({}, 401), (basic("editor", "wrong-pw"), 401), (bearer(world.revoked), 401),
                            (basic("nogrant", "nogrant-pw"), 403)):
        t0 = time.monotonic()
        r = world.call("GET", f"{m}/runs/get", {**headers, **far}, params={"run_id": run_id})
        assert r.status_code == status, r.text
        assert time.monotonic() - t0 < 5, "the refusal waited for the log position"
    t0 = time.monotonic()
    assert world.call("GET", "/health", far).status_code == 200 and time.monotonic() - t0 < 5


def test_an_allowed_read_passing_a_write_position_still_sees_the_write(world: World) -> None:
    m = "/api/2.0/mlflow"
    editor = basic("editor", "editor-pw")
    run_id = world.ok("POST", f"{m}/runs/create", editor, json={"experiment_id": world.live})["run"]["info"]["run_id"]
    wrote = world.call("POST", f"{m}/runs/set-tag", editor, json={"run_id": run_id, "key": "pos", "value": "1"})
    assert wrote.status_code == 200, wrote.text
    got = world.call("GET", f"{m}/runs/get", {**basic("reader", "reader-pw"), POSITION: wrote.headers[POSITION]},
                     params={"run_id": run_id})
    assert got.status_code == 200, got.text
    assert {"key": "pos", "value": "1"} in got.json()["run"]["data"]["tags"]


def test_a_caller_refused_by_a_handlers_own_check_is_not_held_by_a_far_future_log_position(world: World) -> None:
    """Routes whose handler checks the permission itself (artifact proxy, HPO studies, a Comet
    project by id, another user's tokens) refuse a caller without permission at once too: they
    would otherwise wait the whole sync timeout (30 s) for a position the log never reaches."""
    far = {POSITION: '{"0": 999999999999, "1": 999999999999}'}
    nogrant = basic("nogrant", "nogrant-pw")
    run_id = world.ok("POST", "/api/2.0/mlflow/runs/create",
                      json={"experiment_id": world.live})["run"]["info"]["run_id"]
    artifact = f"/api/2.0/mlflow-artifacts/artifacts/{world.live}/{run_id}/artifacts/model.pkl"
    cases = [
        ("GET", artifact, {}, 404),                  # a read of an unreadable run's artifact: as if absent
        ("PUT", artifact, {"content": b"x"}, 403),
        ("GET", "/api/2.0/mlflow-artifacts/artifacts", {"params": {"path": f"{world.live}/{run_id}/artifacts"}}, 404),
        ("GET", f"{V1}/hpo/{world.live}", {}, 404),
        ("GET", f"/api/automl/v1/hpo/experiment/{world.live}", {}, 404),
        ("GET", "/api/rest/v2/project", {"params": {"projectId": world.live}}, 403),
        ("GET", f"{V1}/tokens", {"params": {"username": "reader"}}, 403),
    ]
    for method, path, kw, status in cases:
        t0 = time.monotonic()
        r = world.call(method, path, {**nogrant, **far}, **kw)
        took = time.monotonic() - t0
        assert r.status_code == status, (method, path, r.status_code, r.text)
        assert took < 5, f"{method} {path}: the refusal waited {took:.1f} s for the log position"


def test_an_allowed_caller_of_a_handler_checked_route_passing_a_write_position_sees_the_write(world: World) -> None:
    editor = basic("editor", "editor-pw")
    parent = world.ok("POST", "/api/2.0/mlflow/runs/create", editor,
                      json={"experiment_id": world.live, "run_name": "study"})["run"]["info"]["run_id"]
    wrote = world.call("POST", "/api/2.0/mlflow/runs/create", editor, json={
        "experiment_id": world.live, "tags": [{"key": "mlflow.parentRunId", "value": parent}]})
    assert wrote.status_code == 200, wrote.text
    got = world.call("GET", f"{V1}/hpo/{parent}", {**basic("reader", "reader-pw"), POSITION: wrote.headers[POSITION]})
    assert got.status_code == 200, got.text
    assert got.json()["study"]["trial_count"] == 1


# ----- writes whose handler finds the experiment in the body: checked before the wait (issue 21)

@pytest.fixture(scope="module")
def short_wait(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A server whose log-position wait gives up after 3 s: a refusal that waited for the
    far-future position would come back as a 504 DEADLINE_EXCEEDED instead of the refusal."""
    from tests.conftest import RunledgerServer

    s = RunledgerServer(kafka_bootstrap, tmp_path_factory.mktemp("data"), f"test-{uuid.uuid4().hex[:12]}",
                        RUNLEDGER_AUTH="on", RUNLEDGER_ADMIN_USER=ADMIN, RUNLEDGER_ADMIN_PASSWORD=ADMIN_PW,
                        RUNLEDGER_AUTH_DEFAULT_PERMISSION="NO_PERMISSIONS", RUNLEDGER_SYNC_TIMEOUT="3")
    s.start()
    w = World(s.url)
    m = "/api/2.0/mlflow"
    for name in ("nogrant", "editor"):
        w.ok("POST", f"{m}/users/create", json={"username": name, "password": f"{name}-pw"})
    w.exp_name = f"short-wait-{uuid.uuid4().hex}"  # type: ignore[attr-defined]
    w.exp = w.ok("POST", f"{m}/experiments/create", json={"name": w.exp_name})["experiment_id"]  # type: ignore[attr-defined]
    w.ok("POST", "/api/3.0/mlflow/users/permissions/grant", json={
        "username": "editor", "resource_type": "experiment", "resource_id": w.exp, "permission": "EDIT"})
    w.run = w.ok("POST", f"{m}/runs/create", json={"experiment_id": w.exp})["run"]["info"]["run_id"]  # type: ignore[attr-defined]
    yield w
    w.http.close()
    s.stop()


FAR = {POSITION: '{"0": 999999999999, "1": 999999999999}'}    # never reached: a wait ends in a 504


def _stream(w: World, headers: dict[str, str]) -> httpx.Response:
    return w.call("POST", f"{V1}/metrics/stream", {**headers, **FAR}, json={
        "run_id": w.run, "keys": ["refused_loss"], "values": [1.0], "timestamps": [1], "steps": [0]})


def _comet_create(w: World, headers: dict[str, str]) -> httpx.Response:
    return w.call("POST", "/api/rest/v2/write/experiment/create", {**headers, **FAR},
                  json={"workspaceName": "runledger", "projectName": w.exp_name})  # type: ignore[attr-defined]


def test_a_caller_without_edit_streaming_with_a_far_future_log_position_is_refused_not_held(short_wait: World) -> None:
    r = _stream(short_wait, basic("nogrant", "nogrant-pw"))
    assert r.status_code == 403, r.text
    assert r.json()["error_code"] == "PERMISSION_DENIED", r.text
    history = short_wait.ok("GET", "/api/2.0/mlflow/metrics/get-history",
                            params={"run_id": short_wait.run, "metric_key": "refused_loss"})  # type: ignore[attr-defined]
    assert history.get("metrics", []) == []


def test_a_caller_without_edit_creating_a_comet_experiment_with_a_far_future_log_position_is_refused_not_held(
        short_wait: World) -> None:
    r = _comet_create(short_wait, basic("nogrant", "nogrant-pw"))
    assert r.status_code == 403, r.text
    assert r.json()["code"] == 403 and "msg" in r.json(), r.text
    runs = short_wait.ok("POST", "/api/2.0/mlflow/runs/search", json={"experiment_ids": [short_wait.exp]})  # type: ignore[attr-defined]
    assert len(runs["runs"]) == 1         # the fixture's run only


@pytest.mark.parametrize("send", [_stream, _comet_create], ids=["metrics-stream", "comet-experiment-create"])
def test_an_allowed_writer_on_these_routes_still_waits_for_the_log_position(short_wait: World, send: Any) -> None:
    r = send(short_wait, basic("editor", "editor-pw"))
    assert r.status_code == 504, r.text
    assert "has not applied the log up to" in r.text, r.text
