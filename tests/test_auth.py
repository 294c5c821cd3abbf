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
    time.sleep(1.6)
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
        "{model_id}", "m-none").replace("{tag_key:path}", "k")
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
    run = world.ok("POST", f"{m}/runs/create", json={"experiment_id": world.exp})["run"]["info"]["run_id"]
    assert world.call("POST", f"{m}/runs/delete", bearer(world.editor_token), json={"run_id": run}).status_code == 403
    assert world.call("POST", f"{m}/runs/delete", basic("manager", "manager-pw"), json={"run_id": run}).status_code == 200
