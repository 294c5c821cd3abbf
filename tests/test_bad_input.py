"""Bad input over raw HTTP: MLflow's error shape, code and status, and nothing half-written.

docs/design.md, invariant 8. Every request goes to a real Runledger process (real Kafka, real
DuckDB) through httpx; each test checks one behaviour. Where MLflow itself is lax (an
unparseable enum silently ignored, 404/405 as HTML) Runledger answers with a JSON error
instead, and the tests pin that.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Iterator

import httpx
import pytest

from tests.conftest import RunledgerServer

pytestmark = pytest.mark.kafka

MAX_DOUBLE = 1.7976931348623157e308
MISSING = "Missing value for required parameter '{}'"
TS = 1_700_000_000_000


# ----- helpers

def error(resp: httpx.Response, status: int, code: str, *fragments: str) -> str:
    """Assert an MLflow error body with `status` and `code`; every fragment must be in the message."""
    assert resp.status_code == status, f"{resp.status_code} {resp.text[:500]}"
    assert resp.headers["content-type"].startswith("application/json"), resp.headers["content-type"]
    body = resp.json()
    assert isinstance(body, dict), body
    assert body.get("error_code") == code, body
    message = body.get("message")
    assert isinstance(message, str) and message, body
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def ok(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 200, f"{resp.status_code} {resp.text[:500]}"
    return resp.json()


def new_experiment(api: httpx.Client, **extra: Any) -> str:
    return ok(api.post("experiments/create", json={"name": f"bad-input-{uuid.uuid4().hex}", **extra}))[
        "experiment_id"]


def new_run(api: httpx.Client, experiment_id: str) -> str:
    return ok(api.post("runs/create", json={"experiment_id": experiment_id, "start_time": TS}))["run"]["info"][
        "run_id"]


def get_run(api: httpx.Client, run_id: str) -> dict[str, Any]:
    return ok(api.get("runs/get", params={"run_id": run_id}))["run"]


def run_data(api: httpx.Client, run_id: str) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    data = get_run(api, run_id)["data"]
    return ({m["key"]: m["value"] for m in data.get("metrics", [])},
            {p["key"]: p["value"] for p in data.get("params", [])},
            {t["key"]: t["value"] for t in data.get("tags", [])})


def history(api: httpx.Client, run_id: str, key: str) -> list[dict[str, Any]]:
    return ok(api.get("metrics/get-history", params={"run_id": run_id, "metric_key": key})).get("metrics", [])


@pytest.fixture(scope="module")
def module_api(server: RunledgerServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def exp_id(module_api: httpx.Client) -> str:
    return new_experiment(module_api)


@pytest.fixture
def run_id(api: httpx.Client, exp_id: str) -> str:
    return new_run(api, exp_id)


@pytest.fixture(autouse=True)
def server_survives(server: RunledgerServer) -> Iterator[None]:
    """Whatever a test sent, the server process is still running afterwards."""
    yield
    assert server.proc is not None and server.proc.poll() is None, server.log_tail()


# ----- transport: body, JSON, content type

@pytest.mark.parametrize("body", [b'{"name": ', b"{'name': 'x'}", b'{"name": "x",}', b"not json", b"\xff\xfe{}",
                                  b'{"name": 1e400}'],
                         ids=["truncated", "single-quotes", "trailing-comma", "bare-word", "bad-utf8", "huge-float"])
def test_malformed_json_body_is_400(api: httpx.Client, body: bytes) -> None:
    resp = api.post("experiments/create", content=body, headers={"content-type": "application/json"})
    error(resp, 400, "INVALID_PARAMETER_VALUE", "JSON")


@pytest.mark.parametrize("body", [b"[]", b'[{"name": "x"}]', b"42", b"null", b"true", b'"[1, 2]"'],
                         ids=["empty-array", "array", "number", "null", "bool", "string-holding-array"])
def test_body_that_is_not_a_json_object_is_400(api: httpx.Client, body: bytes) -> None:
    resp = api.post("experiments/create", content=body, headers={"content-type": "application/json"})
    error(resp, 400, "INVALID_PARAMETER_VALUE", "JSON object")


def test_post_without_content_type_is_400(api: httpx.Client) -> None:
    resp = api.post("experiments/create", content=b'{"name": "no-content-type"}')
    assert "content-type" not in resp.request.headers
    error(resp, 400, "INVALID_PARAMETER_VALUE", "Content-Type")


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"])
def test_post_with_wrong_content_type_is_400(api: httpx.Client, ctype: str) -> None:
    resp = api.post("experiments/create", content=b'{"name": "wrong-type"}', headers={"content-type": ctype})
    error(resp, 400, "INVALID_PARAMETER_VALUE", "Content-Type", ctype)


def test_content_type_with_charset_is_accepted(api: httpx.Client) -> None:
    name = f"charset-{uuid.uuid4().hex}"
    resp = api.post("experiments/create", content=f'{{"name": "{name}"}}'.encode(),
                    headers={"content-type": "application/json; charset=utf-8"})
    assert ok(resp)["experiment_id"]


def test_double_encoded_json_body_is_accepted(api: httpx.Client) -> None:
    """Legacy clients send a JSON string holding the JSON object; MLflow decodes it twice."""
    name = f"double-{uuid.uuid4().hex}"
    resp = api.post("experiments/create", content=json.dumps(json.dumps({"name": name})).encode(),
                    headers={"content-type": "application/json"})
    exp = ok(api.get("experiments/get", params={"experiment_id": ok(resp)["experiment_id"]}))["experiment"]
    assert exp["name"] == name


def test_empty_body_counts_as_empty_object(api: httpx.Client) -> None:
    resp = api.post("experiments/create", content=b"", headers={"content-type": "application/json"})
    error(resp, 400, "INVALID_PARAMETER_VALUE", MISSING.format("name"))


# ----- request size (one request is one Kafka event; an oversized one must be a 400, not a 5xx)

MAX_REQUEST_BYTES = 8 * 1024 * 1024


def _big_experiment_tags(total_bytes: int) -> list[dict[str, str]]:
    return [{"key": f"k{i}", "value": "v" * 20000} for i in range(total_bytes // 20000 + 1)]


def test_oversized_body_is_400_not_a_retryable_5xx(api: httpx.Client) -> None:
    name = f"too-big-{uuid.uuid4().hex}"
    resp = api.post("experiments/create", json={"name": name, "tags": _big_experiment_tags(20 * 1024 * 1024)})
    error(resp, 400, "INVALID_PARAMETER_VALUE", "request body", str(MAX_REQUEST_BYTES))
    error(api.get("experiments/get-by-name", params={"experiment_name": name}), 404, "RESOURCE_DOES_NOT_EXIST")


def test_oversized_chunked_body_without_content_length_is_400(api: httpx.Client, exp_id: str) -> None:
    body = json.dumps({"experiment_id": exp_id, "tags": [{"key": f"k{i}", "value": "v" * 8000}
                                                         for i in range(1200)]}).encode()
    assert len(body) > MAX_REQUEST_BYTES

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    resp = api.post("runs/create", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in resp.request.headers
    error(resp, 400, "INVALID_PARAMETER_VALUE", "request body")


def test_body_just_under_the_size_limit_is_accepted(api: httpx.Client) -> None:
    tags = _big_experiment_tags(MAX_REQUEST_BYTES - 400_000)
    resp = api.post("experiments/create", json={"name": f"big-ok-{uuid.uuid4().hex}", "tags": tags})
    assert len(resp.request.content) < MAX_REQUEST_BYTES
    exp = ok(api.get("experiments/get", params={"experiment_id": ok(resp)["experiment_id"]}))["experiment"]
    assert len(exp["tags"]) == len(tags)


# ----- missing required fields

def _full_metric(run_id: str) -> dict[str, Any]:
    return {"run_id": run_id, "key": "m", "value": 1.0, "timestamp": TS, "step": 0}


@pytest.mark.parametrize("path,full,drop", [
    ("runs/log-metric", "metric", "run_id"),
    ("runs/log-metric", "metric", "key"),
    ("runs/log-metric", "metric", "value"),
    ("runs/log-metric", "metric", "timestamp"),
    ("runs/log-parameter", "param", "key"),
    ("runs/log-parameter", "param", "run_id"),
    ("runs/set-tag", "tag", "value"),
    ("runs/set-tag", "tag", "key"),
    ("runs/set-tag", "tag", "run_id"),
    ("runs/update", "update", "run_id"),
    ("runs/delete", "run", "run_id"),
    ("runs/restore", "run", "run_id"),
    ("runs/delete-tag", "tag", "key"),
    ("runs/log-batch", "run", "run_id"),
    ("experiments/set-experiment-tag", "exptag", "key"),
    ("experiments/set-experiment-tag", "exptag", "experiment_id"),
    ("experiments/update", "exprename", "new_name"),
    ("experiments/update", "exprename", "experiment_id"),
    ("experiments/delete", "exp", "experiment_id"),
    ("experiments/restore", "exp", "experiment_id"),
])
def test_missing_required_field_on_write_is_400(api: httpx.Client, run_id: str, exp_id: str,
                                                path: str, full: str, drop: str) -> None:
    bodies = {
        "metric": _full_metric(run_id),
        "param": {"run_id": run_id, "key": "p", "value": "v"},
        "tag": {"run_id": run_id, "key": "t", "value": "v"},
        "update": {"run_id": run_id, "status": "FINISHED"},
        "run": {"run_id": run_id},
        "exptag": {"experiment_id": exp_id, "key": "k", "value": "v"},
        "exprename": {"experiment_id": exp_id, "new_name": f"renamed-{uuid.uuid4().hex}"},
        "exp": {"experiment_id": exp_id},
    }
    body = {k: v for k, v in bodies[full].items() if k != drop}
    error(api.post(path, json=body), 400, "INVALID_PARAMETER_VALUE", MISSING.format(drop))


def test_experiments_create_without_name_is_400(api: httpx.Client) -> None:
    error(api.post("experiments/create", json={"tags": [{"key": "k", "value": "v"}]}), 400,
          "INVALID_PARAMETER_VALUE", MISSING.format("name"))


@pytest.mark.parametrize("field", ["key", "run_id"])
def test_empty_string_counts_as_missing(api: httpx.Client, run_id: str, field: str) -> None:
    body = {**_full_metric(run_id), field: ""}
    error(api.post("runs/log-metric", json=body), 400, "INVALID_PARAMETER_VALUE", MISSING.format(field))


def test_null_counts_as_missing(api: httpx.Client, run_id: str) -> None:
    body = {**_full_metric(run_id), "value": None}
    error(api.post("runs/log-metric", json=body), 400, "INVALID_PARAMETER_VALUE", MISSING.format("value"))


def test_camel_case_alone_does_not_satisfy_a_required_field(api: httpx.Client, run_id: str) -> None:
    body = {"runId": run_id, "key": "m", "value": 1.0, "timestamp": TS}
    error(api.post("runs/log-metric", json=body), 400, "INVALID_PARAMETER_VALUE", MISSING.format("run_id"))


@pytest.mark.parametrize("path,params,field", [
    ("runs/get", {}, "run_id"),
    ("metrics/get-history", {"metric_key": "m"}, "run_id"),
    ("metrics/get-history", {"run_id": "RUN"}, "metric_key"),
    ("experiments/get", {}, "experiment_id"),
    ("experiments/get-by-name", {}, "experiment_name"),
])
def test_missing_required_query_parameter_is_400(api: httpx.Client, run_id: str, path: str,
                                                 params: dict[str, str], field: str) -> None:
    params = {k: run_id if v == "RUN" else v for k, v in params.items()}
    error(api.get(path, params=params), 400, "INVALID_PARAMETER_VALUE", MISSING.format(field))


@pytest.mark.parametrize("item,field", [
    ({"value": 1.0, "timestamp": TS}, "metrics[0].key"),
    ({"key": "m", "timestamp": TS}, "metrics[0].value"),
    ({"key": "m", "value": 1.0}, "metrics[0].timestamp"),
])
def test_log_batch_metric_missing_field_names_its_path(api: httpx.Client, run_id: str,
                                                       item: dict[str, Any], field: str) -> None:
    body = {"run_id": run_id, "metrics": [item]}
    error(api.post("runs/log-batch", json=body), 400, "INVALID_PARAMETER_VALUE", MISSING.format(field))


@pytest.mark.parametrize("group", ["params", "tags"])
def test_log_batch_param_or_tag_missing_key_names_its_path(api: httpx.Client, run_id: str, group: str) -> None:
    body = {"run_id": run_id, group: [{"key": "ok", "value": "v"}, {"value": "v"}]}
    error(api.post("runs/log-batch", json=body), 400, "INVALID_PARAMETER_VALUE", MISSING.format(f"{group}[1].key"))


# ----- wrong types

@pytest.mark.parametrize("field,value", [
    ("value", "abc"), ("value", True), ("value", False), ("value", [1.0]), ("value", {"v": 1}),
    ("timestamp", "soon"), ("timestamp", 1.5), ("timestamp", True), ("timestamp", "1.5"),
    ("step", 1.5), ("step", "one"), ("step", 2 ** 63), ("step", [1]),
    ("key", 123), ("key", ["m"]), ("run_id", 42),
], ids=lambda v: repr(v)[:20])
def test_log_metric_wrong_type_is_400_naming_the_field(api: httpx.Client, run_id: str, field: str,
                                                       value: Any) -> None:
    body = {**_full_metric(run_id), field: value}
    error(api.post("runs/log-metric", json=body), 400, "INVALID_PARAMETER_VALUE", f"'{field}'")
    assert history(api, run_id, "m") == []


@pytest.mark.parametrize("path,field,value", [
    ("runs/log-parameter", "value", 0.1),
    ("runs/log-parameter", "key", 7),
    ("runs/set-tag", "value", 5),
    ("runs/set-tag", "value", {"nested": True}),
    ("runs/update", "end_time", "later"),
    ("runs/update", "run_name", 3),
])
def test_run_write_wrong_type_is_400_naming_the_field(api: httpx.Client, run_id: str, path: str, field: str,
                                                      value: Any) -> None:
    body = {"run_id": run_id, "key": "k", "value": "v", field: value}
    error(api.post(path, json=body), 400, "INVALID_PARAMETER_VALUE", f"'{field}'")


@pytest.mark.parametrize("body,field", [
    ({"tags": {"a": "b"}}, "tags"),
    ({"tags": "a=b"}, "tags"),
    ({"params": ["lr=0.1"]}, "params[0]"),
    ({"params": [{"key": "a", "value": "1"}, None]}, "params[1]"),
    ({"metrics": {"key": "m"}}, "metrics"),
    ({"metrics": [{"key": "m", "value": "abc", "timestamp": TS}]}, "metrics[0].value"),
    ({"metrics": [{"key": "m", "value": 1, "timestamp": "soon"}]}, "metrics[0].timestamp"),
    ({"metrics": [{"key": "m", "value": 1, "timestamp": TS, "step": 0.5}]}, "metrics[0].step"),
    ({"tags": [{"key": 1, "value": "v"}]}, "tags[0].key"),
    ({"tags": [{"key": "t", "value": 1}]}, "tags[0].value"),
    ({"params": [{"key": "p", "value": 1}]}, "params[0].value"),
], ids=lambda v: repr(v)[:30])
def test_log_batch_wrong_type_is_400_naming_the_item(api: httpx.Client, run_id: str, body: dict[str, Any],
                                                     field: str) -> None:
    error(api.post("runs/log-batch", json={"run_id": run_id, **body}), 400, "INVALID_PARAMETER_VALUE", f"'{field}'")
    metrics, params, tags = run_data(api, run_id)
    assert metrics == {} and params == {} and set(tags) == {"mlflow.runName"}


@pytest.mark.parametrize("body,field", [
    ({"name": 5}, "name"),
    ({"name": "x", "tags": "k=v"}, "tags"),
    ({"name": "x", "tags": [["k", "v"]]}, "tags[0]"),
    ({"name": "x", "artifact_location": 5}, "artifact_location"),
])
def test_experiments_create_wrong_type_is_400(api: httpx.Client, body: dict[str, Any], field: str) -> None:
    error(api.post("experiments/create", json=body), 400, "INVALID_PARAMETER_VALUE", f"'{field}'")


@pytest.mark.parametrize("body,field", [
    ({"start_time": "now"}, "start_time"),
    ({"tags": {"k": "v"}}, "tags"),
    ({"run_name": 1}, "run_name"),
    ({"experiment_id": 1.5}, "experiment_id"),
])
def test_runs_create_wrong_type_is_400(api: httpx.Client, exp_id: str, body: dict[str, Any], field: str) -> None:
    error(api.post("runs/create", json={"experiment_id": exp_id, **body}), 400, "INVALID_PARAMETER_VALUE",
          f"'{field}'")


@pytest.mark.parametrize("params,field", [
    ({"max_results": "many"}, "max_results"),
    ({"max_results": "0"}, "max_results"),
    ({"page_token": "not-a-token"}, "page token"),
])
def test_get_history_bad_paging_is_400(api: httpx.Client, run_id: str, params: dict[str, str], field: str) -> None:
    resp = api.get("metrics/get-history", params={"run_id": run_id, "metric_key": "m", **params})
    error(resp, 400, "INVALID_PARAMETER_VALUE", field)


# ----- lenient parsing MLflow's protobuf JSON allows

def test_numeric_strings_are_accepted_for_int64_fields(api: httpx.Client, run_id: str) -> None:
    body = {"run_id": run_id, "key": "m", "value": "0.25", "timestamp": "1700000000000", "step": "3"}
    ok(api.post("runs/log-metric", json=body))
    assert history(api, run_id, "m") == [{"key": "m", "value": 0.25, "timestamp": 1700000000000, "step": 3}]


def test_numeric_string_start_time_and_end_time_are_accepted(api: httpx.Client, exp_id: str) -> None:
    run = ok(api.post("runs/create", json={"experiment_id": exp_id, "start_time": "1700000000001"}))["run"]
    assert run["info"]["start_time"] == 1700000000001
    info = ok(api.post("runs/update", json={"run_id": run["info"]["run_id"], "status": "FINISHED",
                                            "end_time": "1700000000002"}))["run_info"]
    assert info["end_time"] == 1700000000002 and info["status"] == "FINISHED"


@pytest.mark.parametrize("sent,stored", [
    ("NaN", "NaN"), ("Infinity", MAX_DOUBLE), ("-Infinity", -MAX_DOUBLE),
])
def test_special_double_strings_are_accepted(api: httpx.Client, run_id: str, sent: str, stored: Any) -> None:
    ok(api.post("runs/log-metric", json={"run_id": run_id, "key": "special", "value": sent, "timestamp": TS}))
    metrics, _, _ = run_data(api, run_id)
    assert metrics["special"] == stored
    assert [m["value"] for m in history(api, run_id, "special")] == [stored]


def test_integral_float_is_accepted_for_int64(api: httpx.Client, run_id: str) -> None:
    """Protobuf's JSON parser takes 1.7e12 for an int64 (R's jsonlite writes numbers that way)."""
    ok(api.post("runs/log-metric", json={"run_id": run_id, "key": "m", "value": 1, "timestamp": 1.7e12,
                                         "step": 2.0}))
    assert history(api, run_id, "m") == [{"key": "m", "value": 1.0, "timestamp": 1700000000000, "step": 2}]


def test_unknown_fields_are_ignored(api: httpx.Client, run_id: str) -> None:
    ok(api.post("runs/log-parameter", json={"run_id": run_id, "key": "p", "value": "v", "bogus": {"x": [1]}}))
    assert run_data(api, run_id)[1] == {"p": "v"}


def test_run_uuid_alias_is_accepted(api: httpx.Client, run_id: str) -> None:
    ok(api.post("runs/set-tag", json={"run_uuid": run_id, "key": "t", "value": "v"}))
    assert run_data(api, run_id)[2]["t"] == "v"


def test_negative_step_is_accepted(api: httpx.Client, run_id: str) -> None:
    ok(api.post("runs/log-metric", json={**_full_metric(run_id), "step": -5}))
    assert [m["step"] for m in history(api, run_id, "m")] == [-5]


def test_status_as_enum_number_is_accepted(api: httpx.Client, run_id: str) -> None:
    assert ok(api.post("runs/update", json={"run_id": run_id, "status": 4}))["run_info"]["status"] == "FAILED"


# ----- unknown ids

@pytest.mark.parametrize("path,extra", [
    ("runs/log-metric", {"key": "m", "value": 1.0, "timestamp": TS}),
    ("runs/log-parameter", {"key": "p", "value": "v"}),
    ("runs/set-tag", {"key": "t", "value": "v"}),
    ("runs/delete-tag", {"key": "t"}),
    ("runs/log-batch", {"params": [{"key": "p", "value": "v"}]}),
    ("runs/update", {"status": "FINISHED"}),
    ("runs/delete", {}),
    ("runs/restore", {}),
])
def test_write_to_unknown_run_is_404(api: httpx.Client, path: str, extra: dict[str, Any]) -> None:
    missing_run = uuid.uuid4().hex
    resp = api.post(path, json={"run_id": missing_run, **extra})
    error(resp, 404, "RESOURCE_DOES_NOT_EXIST", missing_run)


def test_get_unknown_run_is_404(api: httpx.Client) -> None:
    missing_run = uuid.uuid4().hex
    error(api.get("runs/get", params={"run_id": missing_run}), 404, "RESOURCE_DOES_NOT_EXIST", missing_run)


def test_runs_create_in_unknown_experiment_is_404(api: httpx.Client) -> None:
    resp = api.post("runs/create", json={"experiment_id": "987654321", "start_time": TS})
    error(resp, 404, "RESOURCE_DOES_NOT_EXIST", "987654321")


@pytest.mark.parametrize("method,path,body", [
    ("GET", "experiments/get", None),
    ("POST", "experiments/delete", {}),
    ("POST", "experiments/restore", {}),
    ("POST", "experiments/update", {"new_name": "never-used-name"}),
    ("POST", "experiments/set-experiment-tag", {"key": "k", "value": "v"}),
])
def test_unknown_experiment_is_404(api: httpx.Client, method: str, path: str, body: dict[str, Any] | None) -> None:
    if method == "GET":
        resp = api.get(path, params={"experiment_id": "987654321"})
    else:
        resp = api.post(path, json={"experiment_id": "987654321", **(body or {})})
    error(resp, 404, "RESOURCE_DOES_NOT_EXIST", "987654321")


def test_get_by_name_unknown_is_404(api: httpx.Client) -> None:
    name = f"nobody-{uuid.uuid4().hex}"
    error(api.get("experiments/get-by-name", params={"experiment_name": name}), 404, "RESOURCE_DOES_NOT_EXIST", name)


@pytest.mark.parametrize("bad_id", ["../etc", "-leading-dash", "a b", "x" * 300])
def test_malformed_run_id_on_write_is_400(api: httpx.Client, bad_id: str) -> None:
    resp = api.post("runs/log-parameter", json={"run_id": bad_id, "key": "p", "value": "v"})
    error(resp, 400, "INVALID_PARAMETER_VALUE", "'run_id'")


@pytest.mark.parametrize("bad_id", ["../1", "1 OR 1=1", "x" * 65])
def test_malformed_experiment_id_on_write_is_400(api: httpx.Client, bad_id: str) -> None:
    resp = api.post("runs/create", json={"experiment_id": bad_id})
    error(resp, 400, "INVALID_PARAMETER_VALUE", "experiment")


# ----- keys and lengths

def _write_key(api: httpx.Client, kind: str, run_id: str, key: str) -> httpx.Response:
    if kind == "metric":
        return api.post("runs/log-metric", json={"run_id": run_id, "key": key, "value": 1.0, "timestamp": TS})
    if kind == "param":
        return api.post("runs/log-parameter", json={"run_id": run_id, "key": key, "value": "v"})
    return api.post("runs/set-tag", json={"run_id": run_id, "key": key, "value": "v"})


@pytest.mark.parametrize("kind", ["metric", "param", "tag"])
def test_key_of_251_chars_is_400(api: httpx.Client, run_id: str, kind: str) -> None:
    error(_write_key(api, kind, run_id, "k" * 251), 400, "INVALID_PARAMETER_VALUE", "'key'", "250")


@pytest.mark.parametrize("kind", ["metric", "param", "tag"])
def test_key_of_250_chars_is_accepted(api: httpx.Client, run_id: str, kind: str) -> None:
    ok(_write_key(api, kind, run_id, "k" * 250))


@pytest.mark.parametrize("kind", ["metric", "param", "tag"])
@pytest.mark.parametrize("key", ["a|b", "a;b", "a\nb", "ключ?", "a*b", "../x", "/abs", "a//b", "a/./b", "a/",
                                 ".", "..", "./a"])
def test_bad_key_is_400(api: httpx.Client, run_id: str, kind: str, key: str) -> None:
    error(_write_key(api, kind, run_id, key), 400, "INVALID_PARAMETER_VALUE", "'key'")


@pytest.mark.parametrize("key", ["a/b", "loss:val", "train loss", "a-b.c_d", "system/cpu", "Ünïcode"])
def test_keys_mlflow_allows_are_accepted(api: httpx.Client, run_id: str, key: str) -> None:
    ok(_write_key(api, "metric", run_id, key))
    assert key in run_data(api, run_id)[0]


def test_bad_key_inside_batch_names_the_item(api: httpx.Client, run_id: str) -> None:
    body = {"run_id": run_id, "metrics": [{"key": "ok", "value": 1, "timestamp": TS},
                                          {"key": "../x", "value": 1, "timestamp": TS}]}
    error(api.post("runs/log-batch", json=body), 400, "INVALID_PARAMETER_VALUE", "'metrics[1].key'")
    assert run_data(api, run_id)[0] == {}


def test_param_value_of_6001_chars_is_truncated_to_6000(api: httpx.Client, run_id: str) -> None:
    value = "".join(str(i % 10) for i in range(6001))
    ok(api.post("runs/log-parameter", json={"run_id": run_id, "key": "long", "value": value}))
    assert run_data(api, run_id)[1]["long"] == value[:6000]


def test_param_truncation_makes_a_same_prefix_relog_a_noop(api: httpx.Client, run_id: str) -> None:
    value = "x" * 6000
    ok(api.post("runs/log-parameter", json={"run_id": run_id, "key": "long", "value": value + "A"}))
    ok(api.post("runs/log-parameter", json={"run_id": run_id, "key": "long", "value": value + "B"}))
    assert run_data(api, run_id)[1]["long"] == value


@pytest.mark.parametrize("via", ["set-tag", "log-batch", "runs/create"])
def test_run_tag_value_of_8001_chars_is_truncated_to_8000(api: httpx.Client, exp_id: str, via: str) -> None:
    value = "".join(chr(ord("a") + i % 26) for i in range(8001))
    if via == "runs/create":
        run = ok(api.post("runs/create", json={"experiment_id": exp_id, "tags": [{"key": "long", "value": value}]}))
        rid = run["run"]["info"]["run_id"]
    else:
        rid = new_run(api, exp_id)
        if via == "set-tag":
            ok(api.post("runs/set-tag", json={"run_id": rid, "key": "long", "value": value}))
        else:
            ok(api.post("runs/log-batch", json={"run_id": rid, "tags": [{"key": "long", "value": value}]}))
    assert run_data(api, rid)[2]["long"] == value[:8000]


def test_experiment_tag_value_of_20001_chars_is_400(api: httpx.Client, exp_id: str) -> None:
    resp = api.post("experiments/set-experiment-tag", json={"experiment_id": exp_id, "key": "big", "value": "v" * 20001})
    error(resp, 400, "INVALID_PARAMETER_VALUE", "'value'", "20000")
    exp = ok(api.get("experiments/get", params={"experiment_id": exp_id}))["experiment"]
    assert "big" not in {t["key"] for t in exp.get("tags", [])}


def test_experiment_tag_value_of_20000_chars_is_accepted(api: httpx.Client, exp_id: str) -> None:
    ok(api.post("experiments/set-experiment-tag", json={"experiment_id": exp_id, "key": "big20k", "value": "v" * 20000}))
    exp = ok(api.get("experiments/get", params={"experiment_id": exp_id}))["experiment"]
    assert {t["key"]: t["value"] for t in exp["tags"]}["big20k"] == "v" * 20000


def test_experiment_tag_value_of_20001_chars_at_create_is_400(api: httpx.Client) -> None:
    name = f"too-long-tag-{uuid.uuid4().hex}"
    resp = api.post("experiments/create", json={"name": name, "tags": [{"key": "big", "value": "v" * 20001}]})
    error(resp, 400, "INVALID_PARAMETER_VALUE", "'tags[0].value'", "20000")
    error(api.get("experiments/get-by-name", params={"experiment_name": name}), 404, "RESOURCE_DOES_NOT_EXIST")


def test_experiment_tag_key_of_251_chars_is_400(api: httpx.Client, exp_id: str) -> None:
    resp = api.post("experiments/set-experiment-tag", json={"experiment_id": exp_id, "key": "k" * 251, "value": "v"})
    error(resp, 400, "INVALID_PARAMETER_VALUE", "'key'", "250")


@pytest.mark.parametrize("location,fragment", [
    ("runs:/abc/artifacts", "runs:/"),
    ("s3://bucket/" + "p" * 2040, "2048"),
    ("file:///tmp/x#frag", "fragments"),
], ids=["runs-uri", "2049-chars", "fragment"])
def test_bad_artifact_location_is_400(api: httpx.Client, location: str, fragment: str) -> None:
    resp = api.post("experiments/create", json={"name": f"loc-{uuid.uuid4().hex}", "artifact_location": location})
    error(resp, 400, "INVALID_PARAMETER_VALUE", "'artifact_location'", fragment)


def test_experiment_name_of_501_chars_is_400(api: httpx.Client) -> None:
    error(api.post("experiments/create", json={"name": "n" * 501}), 400, "INVALID_PARAMETER_VALUE", "'name'", "500")


def test_experiment_name_of_500_chars_is_accepted(api: httpx.Client) -> None:
    name = uuid.uuid4().hex + "n" * 468
    assert len(name) == 500
    exp_id = ok(api.post("experiments/create", json={"name": name}))["experiment_id"]
    assert ok(api.get("experiments/get", params={"experiment_id": exp_id}))["experiment"]["name"] == name


def test_rename_experiment_to_501_chars_is_400(api: httpx.Client, exp_id: str) -> None:
    resp = api.post("experiments/update", json={"experiment_id": exp_id, "new_name": "n" * 501})
    error(resp, 400, "INVALID_PARAMETER_VALUE", "500")


# ----- log-batch limits and atomicity

def _metrics(n: int) -> list[dict[str, Any]]:
    return [{"key": "m", "value": float(i), "timestamp": TS + i, "step": i} for i in range(n)]


def _kv(n: int) -> list[dict[str, str]]:
    return [{"key": f"k{i}", "value": "v"} for i in range(n)]


@pytest.mark.parametrize("body,fragment", [
    ({"metrics": _metrics(1001)}, "at most 1000 metrics"),
    ({"params": _kv(101)}, "at most 100 params"),
    ({"tags": _kv(101)}, "at most 100 tags"),
    ({"metrics": _metrics(901), "params": _kv(50), "tags": _kv(50)}, "at most 1000"),
], ids=["1001-metrics", "101-params", "101-tags", "1001-entities"])
def test_log_batch_over_limit_is_400(api: httpx.Client, run_id: str, body: dict[str, Any], fragment: str) -> None:
    error(api.post("runs/log-batch", json={"run_id": run_id, **body}), 400, "INVALID_PARAMETER_VALUE", fragment,
          "split")
    metrics, params, tags = run_data(api, run_id)
    assert metrics == {} and params == {} and set(tags) == {"mlflow.runName"}


def test_log_batch_at_limits_is_accepted(api: httpx.Client, run_id: str) -> None:
    ok(api.post("runs/log-batch", json={"run_id": run_id, "metrics": _metrics(800), "params": _kv(100),
                                        "tags": _kv(100)}))
    metrics, params, tags = run_data(api, run_id)
    assert len(params) == 100 and len(tags) == 101 and metrics["m"] == 799.0
    assert len(history(api, run_id, "m")) == 800


def test_log_batch_duplicate_param_keys_is_400(api: httpx.Client, run_id: str) -> None:
    body = {"run_id": run_id, "params": [{"key": "lr", "value": "0.1"}, {"key": "lr", "value": "0.1"}]}
    error(api.post("runs/log-batch", json=body), 400, "INVALID_PARAMETER_VALUE", "Duplicate", "lr")
    assert run_data(api, run_id)[1] == {}


def test_log_batch_with_conflicting_param_stores_nothing(api: httpx.Client, run_id: str) -> None:
    ok(api.post("runs/log-parameter", json={"run_id": run_id, "key": "lr", "value": "0.1"}))
    body = {"run_id": run_id,
            "metrics": [{"key": "acc", "value": 0.9, "timestamp": TS, "step": 1}],
            "params": [{"key": "fresh", "value": "1"}, {"key": "lr", "value": "0.2"}],
            "tags": [{"key": "stage", "value": "dev"}]}
    error(api.post("runs/log-batch", json=body), 400, "INVALID_PARAMETER_VALUE", "lr")
    metrics, params, tags = run_data(api, run_id)
    assert metrics == {}
    assert params == {"lr": "0.1"}
    assert "stage" not in tags
    assert history(api, run_id, "acc") == []


def test_log_batch_with_one_bad_metric_stores_nothing(api: httpx.Client, run_id: str) -> None:
    body = {"run_id": run_id, "params": [{"key": "p", "value": "1"}], "tags": [{"key": "t", "value": "x"}],
            "metrics": [{"key": "m", "value": 1, "timestamp": TS}, {"key": "m", "value": 2, "timestamp": -1}]}
    error(api.post("runs/log-batch", json=body), 400, "INVALID_PARAMETER_VALUE", "'metrics[1].timestamp'")
    metrics, params, tags = run_data(api, run_id)
    assert metrics == {} and params == {} and "t" not in tags


def test_log_param_conflict_is_400_and_first_value_stays(api: httpx.Client, run_id: str) -> None:
    ok(api.post("runs/log-parameter", json={"run_id": run_id, "key": "lr", "value": "0.1"}))
    ok(api.post("runs/log-parameter", json={"run_id": run_id, "key": "lr", "value": "0.1"}))
    resp = api.post("runs/log-parameter", json={"run_id": run_id, "key": "lr", "value": "0.2"})
    error(resp, 400, "INVALID_PARAMETER_VALUE", "lr", "Changing param values is not allowed")
    assert run_data(api, run_id)[1] == {"lr": "0.1"}


def test_empty_log_batch_is_a_noop(api: httpx.Client, run_id: str) -> None:
    assert ok(api.post("runs/log-batch", json={"run_id": run_id})) == {}


# ----- values and lifecycle

def test_negative_timestamp_is_400(api: httpx.Client, run_id: str) -> None:
    resp = api.post("runs/log-metric", json={**_full_metric(run_id), "timestamp": -1})
    error(resp, 400, "INVALID_PARAMETER_VALUE", "'timestamp'")
    assert history(api, run_id, "m") == []


@pytest.mark.parametrize("status", [0, 9, True, ["FINISHED"], {"a": 1}])
def test_runs_update_with_a_status_of_the_wrong_kind_is_400(api: httpx.Client, run_id: str, status: Any) -> None:
    error(api.post("runs/update", json={"run_id": run_id, "status": status}), 400, "INVALID_PARAMETER_VALUE",
          "'status'")
    assert get_run(api, run_id)["info"]["status"] == "RUNNING"


@pytest.mark.parametrize("status", ["BOGUS", "finished", ""])
def test_runs_update_with_an_unknown_status_name_keeps_the_status_as_mlflow_does(
        api: httpx.Client, run_id: str, status: str) -> None:
    ok(api.post("runs/update", json={"run_id": run_id, "status": status, "end_time": 1700000009999}))
    info = get_run(api, run_id)["info"]
    assert (info["status"], info["end_time"]) == ("RUNNING", 1700000009999)


def test_runs_update_applies_a_known_status_such_as_scheduled(api: httpx.Client, run_id: str) -> None:
    ok(api.post("runs/update", json={"run_id": run_id, "status": "SCHEDULED"}))
    assert get_run(api, run_id)["info"]["status"] == "SCHEDULED"


def test_runs_create_without_start_time_stores_zero_as_mlflow_does(api: httpx.Client) -> None:
    run = ok(api.post("runs/create", json={"experiment_id": "0"}))["run"]["info"]
    assert run["start_time"] == 0
    assert get_run(api, run["run_id"])["info"]["start_time"] == 0


@pytest.mark.parametrize("route", ["runs/log-parameter", "runs/set-tag"])
def test_run_id_is_named_first_when_run_id_and_value_are_both_of_the_wrong_type(api: httpx.Client, route: str) -> None:
    error(api.post(route, json={"run_id": 123, "key": "k", "value": 456}), 400, "INVALID_PARAMETER_VALUE",
          "'run_id'")


def test_history_bulk_interval_errors_are_worded_as_mlflow_words_them(api: httpx.Client) -> None:
    error(api.get("metrics/get-history-bulk-interval", params={"metric_key": "m"}), 400, "INVALID_PARAMETER_VALUE",
          "Missing value for required parameter 'run_ids'. See the API docs for more information about request "
          "parameters.")
    many = [("run_ids", f"r{i}") for i in range(101)] + [("metric_key", "m")]
    error(api.get("metrics/get-history-bulk-interval", params=many), 400, "INVALID_PARAMETER_VALUE",
          "GetMetricHistoryBulkInterval request must specify at most 100 run_ids. Received 101 run_ids. "
          "See the API docs for more information about request parameters.")


def test_history_bulk_errors_are_worded_as_mlflow_words_them(server: Any) -> None:
    url = f"{server.url}/ajax-api/2.0/mlflow/metrics/get-history-bulk"
    error(httpx.get(url, params={"metric_key": "m"}), 400, "INVALID_PARAMETER_VALUE",
          "GetMetricHistoryBulk request must specify at least one run_id.")
    many = [("run_id", f"r{i}") for i in range(101)] + [("metric_key", "m")]
    error(httpx.get(url, params=many), 400, "INVALID_PARAMETER_VALUE",
          "GetMetricHistoryBulk request cannot specify more than 100 run_ids. Received 101 run_ids.")


def test_duplicate_experiment_name_is_resource_already_exists(api: httpx.Client) -> None:
    name = f"dup-{uuid.uuid4().hex}"
    ok(api.post("experiments/create", json={"name": name}))
    error(api.post("experiments/create", json={"name": name}), 400, "RESOURCE_ALREADY_EXISTS", name)


def test_deleted_experiment_name_stays_reserved(api: httpx.Client) -> None:
    name = f"dup-deleted-{uuid.uuid4().hex}"
    exp = ok(api.post("experiments/create", json={"name": name}))["experiment_id"]
    ok(api.post("experiments/delete", json={"experiment_id": exp}))
    error(api.post("experiments/create", json={"name": name}), 400, "RESOURCE_ALREADY_EXISTS", name)


def test_rename_to_an_existing_name_is_400(api: httpx.Client) -> None:
    first, second = new_experiment(api), new_experiment(api)
    taken = ok(api.get("experiments/get", params={"experiment_id": first}))["experiment"]["name"]
    resp = api.post("experiments/update", json={"experiment_id": second, "new_name": taken})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error_code"] in {"RESOURCE_ALREADY_EXISTS", "INVALID_PARAMETER_VALUE", "BAD_REQUEST"}
    assert taken in resp.json()["message"]


def test_delete_missing_run_tag_is_404(api: httpx.Client, run_id: str) -> None:
    error(api.post("runs/delete-tag", json={"run_id": run_id, "key": "never-set"}), 404,
          "RESOURCE_DOES_NOT_EXIST", "never-set")


# ----- routing

@pytest.mark.parametrize("path", ["/api/2.0/mlflow/runs/nope", "/api/2.0/mlflow/nothing/here",
                                  "/ajax-api/2.0/mlflow/runs/nope", "/api/2.0/mlflow/"])
def test_unknown_path_is_404_json(server: RunledgerServer, path: str) -> None:
    for method in ("GET", "POST"):
        resp = httpx.request(method, server.url + path, json={}, timeout=30)
        error(resp, 404, "ENDPOINT_NOT_FOUND", path)


@pytest.mark.parametrize("method,path", [
    ("GET", "runs/log-metric"), ("GET", "runs/create"), ("GET", "runs/search"), ("POST", "runs/get"),
    ("PUT", "experiments/create"), ("DELETE", "runs/delete"), ("POST", "metrics/get-history"),
])
def test_wrong_method_is_405_json(api: httpx.Client, method: str, path: str) -> None:
    resp = api.request(method, path, json={} if method != "GET" else None)
    error(resp, 405, "BAD_REQUEST", method, path)


# ----- writes to deleted things

_RUN_WRITES = [
    ("runs/log-metric", {"key": "m", "value": 1.0, "timestamp": TS}),
    ("runs/log-parameter", {"key": "p", "value": "v"}),
    ("runs/set-tag", {"key": "t", "value": "v"}),
    ("runs/delete-tag", {"key": "t"}),
    ("runs/log-batch", {"metrics": [{"key": "m", "value": 1.0, "timestamp": TS}]}),
    ("runs/update", {"status": "FINISHED"}),
]


@pytest.mark.parametrize("path,extra", _RUN_WRITES, ids=[p for p, _ in _RUN_WRITES])
def test_write_to_deleted_run_is_400(api: httpx.Client, run_id: str, path: str, extra: dict[str, Any]) -> None:
    ok(api.post("runs/set-tag", json={"run_id": run_id, "key": "t", "value": "before"}))
    ok(api.post("runs/delete", json={"run_id": run_id}))
    error(api.post(path, json={"run_id": run_id, **extra}), 400, "INVALID_PARAMETER_VALUE", run_id, "active")
    run = get_run(api, run_id)
    assert run["info"]["lifecycle_stage"] == "deleted" and run["info"]["status"] == "RUNNING"
    metrics, params, tags = run_data(api, run_id)
    assert metrics == {} and params == {} and tags["t"] == "before"


@pytest.mark.parametrize("path,extra", _RUN_WRITES, ids=[p for p, _ in _RUN_WRITES])
def test_write_to_run_of_deleted_experiment_is_400(api: httpx.Client, path: str, extra: dict[str, Any]) -> None:
    exp = new_experiment(api)
    rid = new_run(api, exp)
    ok(api.post("runs/set-tag", json={"run_id": rid, "key": "t", "value": "before"}))
    ok(api.post("experiments/delete", json={"experiment_id": exp}))
    error(api.post(path, json={"run_id": rid, **extra}), 400, "INVALID_PARAMETER_VALUE", "active")
    metrics, params, tags = run_data(api, rid)
    assert metrics == {} and params == {} and tags["t"] == "before"


def test_runs_create_in_deleted_experiment_is_400(api: httpx.Client) -> None:
    exp = new_experiment(api)
    ok(api.post("experiments/delete", json={"experiment_id": exp}))
    error(api.post("runs/create", json={"experiment_id": exp}), 400, "INVALID_PARAMETER_VALUE", exp, "active")


def test_writes_work_again_after_restoring_the_experiment(api: httpx.Client) -> None:
    exp = new_experiment(api)
    rid = new_run(api, exp)
    ok(api.post("experiments/delete", json={"experiment_id": exp}))
    error(api.post("runs/log-parameter", json={"run_id": rid, "key": "p", "value": "v"}), 400,
          "INVALID_PARAMETER_VALUE")
    ok(api.post("experiments/restore", json={"experiment_id": exp}))
    ok(api.post("runs/log-parameter", json={"run_id": rid, "key": "p", "value": "v"}))
    assert run_data(api, rid)[1] == {"p": "v"}


# ----- and afterwards, it still works

def test_zz_server_still_serves_a_normal_round_trip(api: httpx.Client, server: RunledgerServer) -> None:
    assert httpx.get(f"{server.url}/health", timeout=10).text == "OK"
    exp = new_experiment(api)
    now = int(time.time() * 1000)
    run = ok(api.post("runs/create", json={"experiment_id": exp, "run_name": "after-abuse", "start_time": now}))
    rid = run["run"]["info"]["run_id"]
    ok(api.post("runs/log-metric", json={"run_id": rid, "key": "loss", "value": 0.5, "timestamp": now, "step": 1}))
    ok(api.post("runs/log-parameter", json={"run_id": rid, "key": "lr", "value": "0.01"}))
    got = get_run(api, rid)
    assert got["info"]["run_name"] == "after-abuse" and got["info"]["status"] == "RUNNING"
    assert got["data"]["metrics"] == [{"key": "loss", "value": 0.5, "timestamp": now, "step": 1}]
    assert got["data"]["params"] == [{"key": "lr", "value": "0.01"}]
    assert server.proc is not None and server.proc.poll() is None
