"""/openapi.json documents every route's request body, query, answer and error shape, and real
answers of a running server (real Kafka, real DuckDB) validate against it; /docs works offline."""

from __future__ import annotations

import base64
import re
import time
import uuid
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS31Validator

from runledger.app import create_app
from runledger.settings import Settings

MLFLOW = "/api/2.0/mlflow"
AJAX = "/ajax-api/2.0/mlflow"
NATIVE = "/api/runledger/v1"
COMET_REST = "/api/rest/v2"
COMET_CLIENTLIB = "/clientlib"
PAI = "/api/automl/v1/hpo"
UNDOCUMENTED = {"/health", "/version"}   # plain-text probes


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return create_app(Settings()).openapi()


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, methods in spec["paths"].items() for method, op in methods.items()
            if path not in UNDOCUMENTED]


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_every_write_documents_its_request_body(spec: dict[str, Any]) -> None:
    without = [f"{m.upper()} {p}" for p, m, op in _operations(spec)
               if m in ("post", "patch", "put") and "requestBody" not in op]
    assert without == []
    for path, method, op in _operations(spec):
        for media_type, media in op.get("requestBody", {}).get("content", {}).items():
            if media["schema"].get("format") == "binary":
                continue   # an upload or Arrow stream: bytes, described by the route's text
            body = _resolve(spec, media["schema"])
            assert body.get("properties"), f"{method} {path}: a body without fields"


def test_every_operation_documents_its_answer_and_its_error_shape(spec: dict[str, Any]) -> None:
    for path, method, op in _operations(spec):
        ok = op["responses"]["200"]
        assert ok.get("content"), f"{method} {path}: 200 has no content"
        errors = [code for code in op["responses"] if code[0] in "45"]
        assert errors, f"{method} {path}: no error documented"
        for code in errors:
            schema = op["responses"][code].get("content", {}).get("application/json", {}).get("schema", {})
            if code != "422" and path != "/health/ready":
                expected = _error_model(path, code)
                assert schema.get("$ref", "").endswith(f"/{expected}"), f"{method} {path} {code}: {schema}"


def _error_model(path: str, code: str) -> str:
    """The error shape of a path: each room's own (its errors.py), MLflow's ErrorBody elsewhere."""
    if path.startswith((COMET_REST, COMET_CLIENTLIB)):
        return "CometErrorBody"
    if path.startswith(PAI):
        return "PaiErrorBody"
    if path == "/graphql" and code in ("400", "401", "403"):
        return "WandbGraphqlAnswer"   # answered by the handler in GraphQL's shape
    return "ErrorBody"


def test_the_comet_pai_and_wandb_rooms_are_documented_but_not_their_catch_alls(spec: dict[str, Any]) -> None:
    paths = spec["paths"]
    assert "post" in paths["/graphql"]
    assert {f"{COMET_REST}/experiment/metadata", f"{COMET_REST}/write/experiment/metric",
            f"{COMET_REST}/project/query", f"{COMET_CLIENTLIB}/isAlive/ver",
            f"{PAI}/experiment/{{experiment_id}}/trial/{{trial_id}}"} <= set(paths)
    # The 501 catch-alls are not operations (a fuzzer must not take their 501 for a server error).
    assert not [p for p in paths if "{rest" in p]


def test_every_query_and_path_parameter_is_documented(spec: dict[str, Any]) -> None:
    for path, method, op in _operations(spec):
        names = {(p["in"], p["name"]) for p in op.get("parameters", [])}
        for name in re.findall(r"{([^}:]+)", path):
            assert ("path", name) in names, f"{method} {path}: {name}"
        if method == "get" and path.startswith((MLFLOW, NATIVE)) and "{" not in path and not path.endswith("/lag") \
                and not path.endswith(("/verify/checksums", "/users/current", "/users/list", "/read-paths")):
            assert any(where == "query" for where, _ in names), f"GET {path}: no query parameters documented"


def test_the_error_shape_has_an_example(spec: dict[str, Any]) -> None:
    error = spec["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"error_code", "message"}
    assert all(prop.get("examples") for prop in error["properties"].values())


def test_request_bodies_carry_examples(spec: dict[str, Any]) -> None:
    bare = []
    for path, method, op in _operations(spec):
        media = op.get("requestBody", {}).get("content", {}).get("application/json")
        if media is None or media.get("examples"):
            continue
        body = _resolve(spec, media["schema"])
        if not any("examples" in prop for prop in body.get("properties", {}).values()):
            bare.append(f"{method} {path}")
    assert bare == []


class Checked:
    """Sends requests to a real server and validates each answer against /openapi.json."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=60)
        self.spec = self.client.get("/openapi.json").json()
        self.checked: list[str] = []

    def __call__(self, method: str, template: str, status: int = 200, path_args: dict[str, str] | None = None,
                 **kwargs: Any) -> Any:
        answer = self.client.request(method, template.format(**(path_args or {})), **kwargs)
        assert answer.status_code == status, f"{method} {template}: {answer.status_code} {answer.text}"
        op = self.spec["paths"][template][method.lower()]
        documented = op["responses"][str(status)]
        schema = documented["content"]["application/json"]["schema"]
        body = answer.json()
        OAS31Validator({**schema, "components": self.spec["components"]}).validate(body)
        self.checked.append(f"{method} {template} {status}")
        return body


def test_real_answers_validate_against_the_schema(server) -> None:  # type: ignore[no-untyped-def]
    check = Checked(server.url)
    name = f"openapi-{uuid.uuid4().hex[:8]}"
    exp = check("POST", f"{MLFLOW}/experiments/create", json={"name": name})["experiment_id"]
    check("GET", f"{MLFLOW}/experiments/get", params={"experiment_id": exp})
    check("GET", f"{MLFLOW}/experiments/get-by-name", params={"experiment_name": name})
    check("POST", f"{MLFLOW}/experiments/search", json={"max_results": 5})
    check("GET", f"{MLFLOW}/experiments/search", params={"max_results": 5})
    check("POST", f"{MLFLOW}/experiments/set-experiment-tag", json={"experiment_id": exp, "key": "k", "value": "v"})
    run = check("POST", f"{MLFLOW}/runs/create",
                json={"experiment_id": exp, "run_name": "r", "start_time": 1, "tags": [{"key": "t", "value": "1"}]})
    run_id = run["run"]["info"]["run_id"]
    now = int(time.time() * 1000)
    check("POST", f"{MLFLOW}/runs/log-metric", json={"run_id": run_id, "key": "loss", "value": 0.5,
                                                      "timestamp": now, "step": 1})
    check("POST", f"{MLFLOW}/runs/log-parameter", json={"run_id": run_id, "key": "lr", "value": "0.1"})
    check("POST", f"{MLFLOW}/runs/set-tag", json={"run_id": run_id, "key": "stage", "value": "a"})
    check("POST", f"{MLFLOW}/runs/log-batch", json={
        "run_id": run_id, "metrics": [{"key": "loss", "value": "NaN", "timestamp": now, "step": 2}],
        "params": [{"key": "bs", "value": "32"}], "tags": [{"key": "x", "value": "y"}]})
    check("POST", f"{MLFLOW}/runs/log-inputs", json={"run_id": run_id, "datasets": [
        {"dataset": {"name": "d", "digest": "abc", "source_type": "local", "source": "{}"},
         "tags": [{"key": "mlflow.data.context", "value": "train"}]}]})
    check("GET", f"{MLFLOW}/runs/get", params={"run_id": run_id})
    check("POST", f"{MLFLOW}/runs/search", json={"experiment_ids": [exp], "filter": "metrics.loss < 1"})
    check("GET", f"{MLFLOW}/metrics/get-history", params={"run_id": run_id, "metric_key": "loss"})
    check("GET", f"{MLFLOW}/metrics/get-history-bulk-interval", params={"run_ids": run_id, "metric_key": "loss"})
    check("GET", f"{AJAX}/metrics/get-history-bulk", params={"run_id": run_id, "metric_key": "loss"})
    check("POST", f"{AJAX}/experiments/search-datasets", json={"experiment_ids": [exp]})
    check("POST", f"{MLFLOW}/runs/update", json={"run_id": run_id, "status": "FINISHED", "end_time": now})
    model = check("POST", f"{MLFLOW}/logged-models", json={"experiment_id": exp, "name": "m", "source_run_id": run_id})
    model_id = model["model"]["info"]["model_id"]
    check("GET", f"{MLFLOW}/logged-models/{{model_id}}", path_args={"model_id": model_id})
    check("POST", f"{MLFLOW}/logged-models/search", json={"experiment_ids": [exp]})
    check("POST", f"{NATIVE}/metrics/stream", json={"run_id": run_id, "keys": ["acc"], "values": [0.9],
                                                     "timestamps": [now], "steps": [3]})
    check("GET", f"{NATIVE}/lag")
    check("GET", f"{NATIVE}/rejections", params={"run_id": run_id})
    check("GET", f"{NATIVE}/runs/{{run_id}}/events", path_args={"run_id": run_id})
    check("GET", f"{NATIVE}/runs/{{run_id}}", path_args={"run_id": run_id}, params={"as_of": str(now + 60_000)})
    check("GET", f"{NATIVE}/verify/checksums")
    check("POST", f"{NATIVE}/runs/search", json={"experiment_ids": [exp], "filter": {
        "$or": [{"metrics.loss": {"$lt": 1}}, {"params.lr": {"$in": ["0.1"]}}]}})
    check("GET", f"{NATIVE}/metrics/history-buckets", params={"run_id": run_id, "metric_key": "acc", "buckets": 10})
    check("GET", f"{MLFLOW}/metrics/get-history", params={"run_id": run_id, "metric_key": "loss",
                                                          "as_of": str(now + 60_000)})
    check("POST", f"{MLFLOW}/runs/delete", json={"run_id": run_id})
    # Errors: the same shape on every prefix.
    check("GET", f"{MLFLOW}/runs/get", 404, params={"run_id": uuid.uuid4().hex})
    check("POST", f"{MLFLOW}/runs/log-metric", 400, json={"run_id": run_id})
    check("POST", f"{MLFLOW}/experiments/create", 400, json={"name": name})
    check("GET", f"{NATIVE}/rejections", 400, params={"max_results": 0})
    check("POST", f"{NATIVE}/metrics/stream", 400, json={"keys": []})
    assert len(check.checked) == 37


def test_real_answers_of_the_comet_pai_and_wandb_rooms_validate_against_the_schema(server) -> None:  # type: ignore[no-untyped-def]
    check = Checked(server.url)
    ws = check("GET", f"{COMET_REST}/workspaces")["workspaceNames"][0]
    check("GET", f"{COMET_CLIENTLIB}/isAlive/ver")
    project = f"openapi-comet-{uuid.uuid4().hex[:8]}"
    key = check("POST", f"{COMET_REST}/write/experiment/create",
                json={"workspaceName": ws, "projectName": project, "experimentName": "c"})["experimentKey"]
    check("POST", f"{COMET_REST}/write/experiment/metric",
          json={"experimentKey": key, "metricName": "loss", "metricValue": 0.25, "step": 1, "epoch": 1})
    check("POST", f"{COMET_REST}/write/experiment/parameter",
          json={"experimentKey": key, "parameterName": "lr", "parameterValue": 0.1})
    check("POST", f"{COMET_REST}/write/experiment/log-other", json={"experimentKey": key, "key": "d", "value": "m"})
    check("POST", f"{COMET_REST}/write/experiment/tags", json={"experimentKey": key, "addedTags": ["base"]})
    check("GET", f"{COMET_REST}/write/experiment/set-status", params={"experimentKey": key})
    check("POST", f"{COMET_REST}/write/experiment/update-status", json={"experimentKey": key, "isAlive": False})
    check("GET", f"{COMET_REST}/projects", params={"workspaceName": ws})
    project_id = check("GET", f"{COMET_REST}/project", params={"workspaceName": ws, "projectName": project})["projectId"]
    check("GET", f"{COMET_REST}/experiments", params={"workspaceName": ws, "projectName": project})
    for read in ("metadata", "parameters", "metrics/summary", "metrics/get-all", "tags", "log-other"):
        check("GET", f"{COMET_REST}/experiment/{read}", params={"experimentKey": key})
    check("GET", f"{COMET_REST}/experiment/metrics/get-metric", params={"experimentKey": key, "metricName": "loss"})
    check("GET", f"{COMET_REST}/project/column-names", params={"workspaceName": ws, "projectName": project})
    found = check("POST", f"{COMET_REST}/project/query", json={
        "workspaceName": ws, "projectName": project, "predicates": [{"source": "metrics", "query": {
            "condition": "AND", "rules": [{"field": "loss", "type": "double", "operator": "less", "value": 1}]}}]})
    assert found["experimentKeys"] == [key]
    check("GET", f"{COMET_REST}/experiment/metadata", 404, params={"experimentKey": uuid.uuid4().hex})
    check("POST", f"{COMET_REST}/write/experiment/metric", 400, json={"experimentKey": key, "metricName": "x"})
    # PAI: the project (an MLflow experiment) read as a study, the Comet experiment as its trial.
    check("GET", f"{PAI}/experiment/{{experiment_id}}", path_args={"experiment_id": project_id})
    check("GET", f"{PAI}/experiment/{{experiment_id}}/trials", path_args={"experiment_id": project_id},
          params={"SortBy": "FINAL_METRIC"})
    check("GET", f"{PAI}/experiment/{{experiment_id}}/trial/{{trial_id}}",
          path_args={"experiment_id": project_id, "trial_id": key})
    check("GET", f"{PAI}/experiment/{{experiment_id}}", 404, path_args={"experiment_id": uuid.uuid4().hex})
    check("GET", f"{PAI}/experiment/{{experiment_id}}/trials", 400, path_args={"experiment_id": project_id},
          params={"PageSize": "0"})
    # W&B: an answer with data, one with GraphQL errors, and the handler's own 400 and 401.
    basic = {"Authorization": "Basic " + base64.b64encode(b"api:" + b"k" * 40).decode()}
    check("POST", "/graphql", headers=basic, json={"query": "query Viewer { viewer { id entity } }",
                                                   "operationName": "Viewer", "variables": {}})
    assert check("POST", "/graphql", headers=basic, json={"query": "{ nope }"})["errors"]
    check("POST", "/graphql", 400, headers=basic, json={"query": 3})
    check("POST", "/graphql", 401, json={"query": "{ viewer { id } }"})
    assert len(check.checked) == 32


def test_a_served_comet_path_asked_with_another_method_is_a_405_not_a_501(server) -> None:  # type: ignore[no-untyped-def]
    wrong = httpx.put(f"{server.url}{COMET_REST}/write/experiment/metric", json={}, timeout=30)
    assert wrong.status_code == 405 and wrong.json()["code"] == 405, wrong.text
    assert "PUT" in wrong.json()["msg"]
    assert httpx.post(f"{server.url}{COMET_CLIENTLIB}/isAlive/ver", timeout=30).status_code == 405
    # A path Runledger does not serve stays a clear 501.
    unserved = httpx.get(f"{server.url}{COMET_REST}/experiment/asset/list", timeout=30)
    assert unserved.status_code == 501 and "not served" in unserved.json()["msg"]


def test_a_comet_query_naming_its_project_with_a_non_string_is_a_400(server) -> None:  # type: ignore[no-untyped-def]
    # Found by the fuzzer once the route was documented: it was a 500 from the search.
    bad = httpx.post(f"{server.url}{COMET_REST}/project/query", json={"projectName": [None], "predicates": []},
                     timeout=30)
    assert bad.status_code == 400 and "projectName" in bad.json()["msg"], bad.text


def test_a_comet_step_or_time_beyond_64_bits_is_a_400(server) -> None:  # type: ignore[no-untyped-def]
    # The writer's 64-bit columns made these a 500 (found probing the newly documented routes).
    created = httpx.post(f"{server.url}{COMET_REST}/write/experiment/create", timeout=30, json={
        "workspaceName": httpx.get(f"{server.url}{COMET_REST}/workspaces").json()["workspaceNames"][0],
        "projectName": f"openapi-big-{uuid.uuid4().hex[:8]}"})
    key = created.json()["experimentKey"]
    big = httpx.post(f"{server.url}{COMET_REST}/write/experiment/metric", timeout=30, json={
        "experimentKey": key, "metricName": "loss", "metricValue": 1, "timestamp": 1e300})
    assert big.status_code == 400 and "timestamp" in big.json()["msg"], big.text


def test_docs_work_offline_from_files_the_server_serves(server) -> None:  # type: ignore[no-untyped-def]
    page = httpx.get(f"{server.url}/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/docs/static/") for s in sources), sources
    for source in sources:
        asset = httpx.get(f"{server.url}{source}")
        assert asset.status_code == 200 and len(asset.content) > 1000, source
    assert "/openapi.json" in page.text


def test_the_validation_catches_an_answer_that_breaks_the_schema(spec: dict[str, Any]) -> None:
    from jsonschema.exceptions import ValidationError

    schema = spec["paths"][f"{MLFLOW}/runs/get"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    validator = OAS31Validator({**schema, "components": spec["components"]})
    validator.validate({"run": {"info": {"run_id": "a", "experiment_id": "0"}}})
    with pytest.raises(ValidationError):
        validator.validate({"run": {"info": {"run_id": "a"}}})          # experiment_id missing
    with pytest.raises(ValidationError):
        validator.validate({"run": {"info": {"run_id": "a", "experiment_id": "0", "status": "DONE"}}})
