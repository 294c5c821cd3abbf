"""Every MLflow route, every field it reads, sent values of the wrong type or out of range:
each is a 400 INVALID_PARAMETER_VALUE in MLflow's error shape, never a 500.

One real Runledger process (real Kafka, real DuckDB). The table names, per route, the fields
the route reads and their kind; `test_the_table_covers_every_mlflow_route` fails when a route
is added without a row here.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import httpx
import pytest

from runledger.app import API_PREFIXES, create_app
from runledger.settings import Settings
from tests.conftest import RunledgerServer

pytestmark = pytest.mark.kafka

INT64_MAX = 2**63 - 1
TS = 1_700_000_000_000


def _b64(doc: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


# Kinds of field and the wrong values each gets. JSON bodies carry typed junk; query strings
# can only carry text.
BODY_JUNK = {
    "int": ["abc", [], {}, [1], {"a": 1}, 2**63, 2**64, -(2**63) - 1, 10**30, 1.5, True, "1e400",
            "9223372036854775808", "1" * 5000],
    "str": [[], {}, 5, 1.5, True, ["a"], {"a": "b"}],
    "strs": [5, {}, [1], [[]], [{}], True],
    "objs": ["x", 5, {}, [5], ["a"], [[]], True],
    "view": [[], {}, "BOGUS", 99, 1.5, True, -1, 2**64, "1" * 5000, ["ALL"], {"ALL": 1}],
    "token": ["junk", "!!!!", _b64({"offset": 2**70}), _b64({"offset": -1}), _b64({"offset": "1"}), _b64([]),
              _b64("x"), _b64({"cursor": "c", "offset": 2**70}), 5, [], {}],
    # an unknown status *name* leaves the status as it is (mlflow server drops unknown enum names)
    "run_status": [[], {}, 99, True, 2**64, 1.5],
    "model_status": [[], {}, "BOGUS", 99, True, 2**64, "1" * 5000, "9" * 20],
    "double": ["abc", [], {}, True, "1" * 5000 + "x"],
}
QUERY_JUNK = {
    "int": ["abc", "1.5", "9223372036854775808", "-9223372036854775809", "1e400", "[]", "{}", "", "1" * 5000],
    "view": ["BOGUS", "[]", "{}", "99", "-1", "1" * 5000],
    "token": ["junk", "!!!!", _b64({"offset": 2**70}), _b64({"offset": -1}), _b64([]), "%%%"],
}


@dataclass
class Route:
    method: str
    path: str                                   # under /api/2.0/mlflow (or /ajax-api/2.0/mlflow if ajax)
    base: Callable[[dict[str, str]], dict[str, Any]]  # a valid request, given the fixture's ids
    fields: dict[str, str]                      # field -> kind; "a.0.b" reaches into lists and objects
    negative_ok: tuple[str, ...] = ()           # int fields where -1 is a valid value
    ajax: bool = False
    extra_ints: dict[str, int] = field(default_factory=dict)  # valid huge values that must be accepted

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


ROUTES = [
    Route("POST", "experiments/create", lambda c: {"name": _name("tc")},
          {"name": "str", "artifact_location": "str", "tags": "objs", "tags.0.key": "str", "tags.0.value": "str"}),
    Route("POST", "experiments/update", lambda c: {"experiment_id": c["exp"], "new_name": _name("tc")},
          {"experiment_id": "str", "new_name": "str"}),
    Route("POST", "experiments/delete", lambda c: {"experiment_id": c["exp"]}, {"experiment_id": "str"}),
    Route("POST", "experiments/restore", lambda c: {"experiment_id": c["exp"]}, {"experiment_id": "str"}),
    Route("POST", "experiments/set-experiment-tag", lambda c: {"experiment_id": c["exp"], "key": "k", "value": "v"},
          {"experiment_id": "str", "key": "str", "value": "str"}),
    Route("POST", "experiments/delete-experiment-tag", lambda c: {"experiment_id": c["exp"], "key": "k"},
          {"experiment_id": "str", "key": "str"}),
    Route("GET", "experiments/get", lambda c: {"experiment_id": c["exp"]}, {}),
    Route("GET", "experiments/get-by-name", lambda c: {"experiment_name": c["exp_name"]}, {}),
    Route("GET", "experiments/search", lambda c: {"max_results": 5},
          {"max_results": "int", "view_type": "view", "page_token": "token"}),
    Route("POST", "experiments/search", lambda c: {"max_results": 5},
          {"max_results": "int", "view_type": "view", "page_token": "token", "filter": "str", "order_by": "strs"}),
    Route("POST", "runs/create", lambda c: {"experiment_id": c["exp"], "start_time": TS},
          {"experiment_id": "str", "start_time": "int", "run_name": "str", "user_id": "str", "tags": "objs",
           "tags.0.key": "str"},
          negative_ok=("start_time",), extra_ints={"start_time": INT64_MAX}),
    Route("POST", "runs/update", lambda c: {"run_id": c["run"], "status": "RUNNING"},
          {"run_id": "str", "end_time": "int", "run_name": "str", "status": "run_status"},
          negative_ok=("end_time",), extra_ints={"end_time": INT64_MAX}),
    Route("POST", "runs/delete", lambda c: {"run_id": c["run"]}, {"run_id": "str"}),
    Route("POST", "runs/restore", lambda c: {"run_id": c["run"]}, {"run_id": "str"}),
    Route("POST", "runs/log-metric", lambda c: {"run_id": c["run"], "key": "m", "value": 1.0, "timestamp": TS, "step": 0},
          {"run_id": "str", "key": "str", "value": "double", "timestamp": "int", "step": "int", "model_id": "str"},
          negative_ok=("step",), extra_ints={"timestamp": INT64_MAX, "step": INT64_MAX}),
    Route("POST", "runs/log-parameter", lambda c: {"run_id": c["run"], "key": "p", "value": "v"},
          {"run_id": "str", "key": "str", "value": "str"}),
    Route("POST", "runs/set-tag", lambda c: {"run_id": c["run"], "key": "t", "value": "v"},
          {"run_id": "str", "key": "str", "value": "str"}),
    Route("POST", "runs/delete-tag", lambda c: {"run_id": c["run"], "key": "t"}, {"run_id": "str", "key": "str"}),
    Route("POST", "runs/log-batch",
          lambda c: {"run_id": c["run"], "metrics": [{"key": "m", "value": 1.0, "timestamp": TS, "step": 0}],
                     "params": [{"key": "bp", "value": "v"}], "tags": [{"key": "bt", "value": "v"}]},
          {"run_id": "str", "metrics": "objs", "metrics.0.key": "str", "metrics.0.value": "double",
           "metrics.0.timestamp": "int", "metrics.0.step": "int", "params": "objs", "params.0.value": "str",
           "tags": "objs", "tags.0.key": "str"},
          negative_ok=("metrics.0.step",)),
    Route("POST", "runs/log-inputs",
          lambda c: {"run_id": c["run"], "datasets": [{"dataset": {"name": "d", "digest": "x", "source_type": "local",
                                                                   "source": "s"}}]},
          {"run_id": "str", "datasets": "objs", "datasets.0.dataset.name": "str", "datasets.0.tags": "objs"}),
    Route("POST", "runs/search", lambda c: {"experiment_ids": [c["exp"]], "max_results": 5},
          {"experiment_ids": "strs", "filter": "str", "run_view_type": "view", "max_results": "int",
           "order_by": "strs", "page_token": "token"}),
    Route("GET", "runs/get", lambda c: {"run_id": c["run"]}, {}),
    Route("GET", "metrics/get-history", lambda c: {"run_id": c["run"], "metric_key": "m", "max_results": 5},
          {"max_results": "int", "page_token": "token"}, extra_ints={"max_results": INT64_MAX}),
    Route("GET", "metrics/get-history-bulk-interval",
          lambda c: {"run_ids": c["run"], "metric_key": "m", "start_step": -(2**62), "end_step": 2**62},
          {"max_results": "int", "start_step": "int", "end_step": "int"}, negative_ok=("start_step", "end_step")),
    Route("GET", "metrics/get-history-bulk", lambda c: {"run_id": c["run"], "metric_key": "m"},
          {"max_results": "int"}, ajax=True),
    Route("POST", "experiments/search-datasets", lambda c: {"experiment_ids": [c["exp"]]},
          {"experiment_ids": "strs"}, ajax=True),
    Route("POST", "databricks/runs/delete-runs", lambda c: {"experiment_id": c["bulk_exp"], "max_timestamp_millis": 0},
          {"experiment_id": "str", "max_timestamp_millis": "int", "max_runs": "int"},
          negative_ok=("max_timestamp_millis",)),
    Route("POST", "databricks/runs/restore-runs",
          lambda c: {"experiment_id": c["bulk_exp"], "min_timestamp_millis": INT64_MAX},
          {"experiment_id": "str", "min_timestamp_millis": "int", "max_runs": "int"},
          negative_ok=("min_timestamp_millis",)),
    Route("POST", "logged-models", lambda c: {"experiment_id": c["exp"], "name": _name("m")},
          {"experiment_id": "str", "name": "str", "model_type": "str", "source_run_id": "str", "params": "objs",
           "tags": "objs", "tags.0.key": "str"}),
    Route("PATCH", "logged-models/{model}", lambda c: {"model_id": c["model"], "status": "LOGGED_MODEL_READY"},
          {"model_id": "str", "status": "model_status"}),
    Route("DELETE", "logged-models/{model}", lambda c: {}, {}),
    Route("PATCH", "logged-models/{model}/tags", lambda c: {"tags": [{"key": "k", "value": "v"}]},
          {"tags": "objs", "tags.0.key": "str", "tags.0.value": "str"}),
    Route("DELETE", "logged-models/{model}/tags/{tag}", lambda c: {}, {}),
    Route("POST", "logged-models/{model}/params", lambda c: {"model_id": c["model"], "params": [{"key": "k", "value": "v"}]},
          {"model_id": "str", "params": "objs", "params.0.key": "str"}),
    Route("POST", "logged-models/search", lambda c: {"experiment_ids": [c["exp"]], "max_results": 5},
          {"experiment_ids": "strs", "filter": "str", "datasets": "objs", "max_results": "int", "order_by": "objs",
           "order_by.0.ascending": "str", "page_token": "token"}),
    Route("GET", "logged-models/{model}", lambda c: {}, {}),
]


def _with(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `doc` with the field at dotted `path` set to `value` (missing parents are made)."""
    doc = json.loads(json.dumps(doc))
    parts = path.split(".")
    node: Any = doc
    for i, part in enumerate(parts[:-1]):
        nxt: Any = [{}] if parts[i + 1].isdigit() else {}
        if isinstance(node, list):
            node = node[int(part)]
        else:
            if not isinstance(node.get(part), (dict, list)):
                node[part] = nxt
            node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


@pytest.fixture(scope="module")
def ids(server: RunledgerServer) -> dict[str, str]:
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=30) as c:
        name = _name("tc-exp")
        exp = c.post("experiments/create", json={"name": name}).json()["experiment_id"]
        bulk = c.post("experiments/create", json={"name": _name("tc-bulk")}).json()["experiment_id"]
        run = c.post("runs/create", json={"experiment_id": exp, "start_time": TS}).json()["run"]["info"]["run_id"]
        # "m" is written to by the rows above; "h" stays as logged here
        points = [{"key": k, "value": float(i), "timestamp": TS + i, "step": i} for i in range(30) for k in "mh"]
        assert c.post("runs/log-batch", json={"run_id": run, "metrics": points}).status_code == 200
        model = c.post("logged-models", json={"experiment_id": exp, "name": "tc-model"}).json()["model"]["info"][
            "model_id"]
        assert c.patch(f"logged-models/{model}/tags", json={"tags": [{"key": "tag1", "value": "v"}]}).status_code == 200
    return {"exp": exp, "exp_name": name, "bulk_exp": bulk, "run": run, "model": model, "tag": "tag1"}


@pytest.fixture(scope="module")
def http(server: RunledgerServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def _send(http: httpx.Client, route: Route, ids: dict[str, str], doc: dict[str, Any]) -> httpx.Response:
    prefix = API_PREFIXES[1] if route.ajax else API_PREFIXES[0]
    url = f"{prefix}/{route.path.format(**ids)}"
    if route.method == "GET":
        return http.get(url, params=doc)
    return http.request(route.method, url, content=json.dumps(doc), headers={"content-type": "application/json"})


def _is_400(resp: httpx.Response, what: str) -> None:
    assert resp.status_code == 400, f"{what}: {resp.status_code} {resp.text[:300]}"
    body = resp.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE", f"{what}: {body}"
    assert isinstance(body["message"], str) and 0 < len(body["message"]) < 1200, f"{what}: {body['message'][:300]}"


def _cases() -> Iterator[Any]:
    for route in ROUTES:
        junk_table = QUERY_JUNK if route.method == "GET" else BODY_JUNK
        for name, kind in route.fields.items():
            if kind in junk_table:
                yield pytest.param(route, name, kind, id=f"{route.id} {name}")


def test_the_table_covers_every_mlflow_route() -> None:
    app = create_app(Settings())
    served = set()
    for r in app.routes:
        for prefix in API_PREFIXES:
            if getattr(r, "path", "").startswith(prefix + "/"):
                path = r.path[len(prefix) + 1:]
                for method in r.methods:  # type: ignore[attr-defined]
                    served.add((method, path))
    table = {(r.method, r.path.replace("{model}", "{model_id}").replace("{tag}", "{tag_key:path}")) for r in ROUTES}
    assert served - table == set(), "routes without a row in ROUTES"


@pytest.mark.parametrize("route,name,kind", list(_cases()))
def test_wrong_type_is_400(http: httpx.Client, ids: dict[str, str], route: Route, name: str, kind: str) -> None:
    base = route.base(ids)
    junk_table = QUERY_JUNK if route.method == "GET" else BODY_JUNK
    for value in junk_table[kind]:
        _is_400(_send(http, route, ids, _with(base, name, value)), f"{route.id} {name}={str(value)[:40]!r}")
    if kind == "int":
        negative = _send(http, route, ids, _with(base, name, -1 if route.method != "GET" else "-1"))
        if name in route.negative_ok:
            assert negative.status_code == 200, f"{name}=-1: {negative.status_code} {negative.text[:300]}"
        else:
            _is_400(negative, f"{route.id} {name}=-1")


@pytest.mark.parametrize("route", [r for r in ROUTES if r.extra_ints], ids=lambda r: r.id)
def test_largest_int64_is_accepted_where_valid(http: httpx.Client, ids: dict[str, str], route: Route) -> None:
    for name, value in route.extra_ints.items():
        resp = _send(http, route, ids, _with(route.base(ids), name, value))
        assert resp.status_code == 200, f"{name}={value}: {resp.status_code} {resp.text[:300]}"


def test_history_page_of_int64_max_is_the_whole_history(http: httpx.Client, ids: dict[str, str]) -> None:
    resp = http.get("/api/2.0/mlflow/metrics/get-history",
                    params={"run_id": ids["run"], "metric_key": "h", "max_results": str(INT64_MAX)})
    assert resp.status_code == 200, resp.text[:300]
    body = resp.json()
    assert "next_page_token" not in body
    assert [(p["step"], p["value"]) for p in body["metrics"]] == [(i, float(i)) for i in range(30)]


def test_history_pages_chain_and_end(http: httpx.Client, ids: dict[str, str]) -> None:
    url = "/api/2.0/mlflow/metrics/get-history"
    whole = http.get(url, params={"run_id": ids["run"], "metric_key": "h"}).json()["metrics"]
    assert len(whole) == 30
    got, token = [], None
    for _ in range(len(whole)):
        params = {"run_id": ids["run"], "metric_key": "h", "max_results": "7"}
        if token:
            params["page_token"] = token
        page = http.get(url, params=params).json()
        got += page.get("metrics", [])
        token = page.get("next_page_token")
        if not token:
            break
    assert got == whole


@pytest.mark.parametrize("value", [[], {}, ["ALL"], {"x": 1}], ids=["list", "dict", "list-of-str", "object"])
@pytest.mark.parametrize("path,field_name", [("runs/search", "run_view_type"), ("experiments/search", "view_type")])
def test_view_type_of_a_container_is_400_not_a_type_error(http: httpx.Client, ids: dict[str, str], path: str,
                                                         field_name: str, value: Any) -> None:
    resp = http.post(f"/api/2.0/mlflow/{path}", json={"experiment_ids": [ids["exp"]], field_name: value})
    _is_400(resp, f"{path} {field_name}={value!r}")
    assert "TypeError" not in resp.text and "unhashable" not in resp.text
