"""runs/search over HTTP: filters on each entity, ordering, view types, limits, and paging that
returns every run exactly once while writes continue."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from runledger.query.search_cursors import SearchCursors


@pytest.fixture(scope="module")
def corpus(server: Any) -> tuple[str, dict[str, str]]:
    """Experiment with 6 runs: params, tags, a missing metric and a NaN metric."""
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=30) as api:
        exp = api.post("experiments/create", json={"name": "search-corpus"}).json()["experiment_id"]
        ids = {}
        spec = {"r1": (0.1, "adam", "cv-a"), "r2": (0.5, "sgd", "cv-b"), "r3": (0.3, "adam", "nlp"),
                "r4": (None, "sgd", "CV-c"), "r5": ("NaN", "adam", "cv-d"), "r6": (0.9, None, None)}
        for i, (name, (loss, opt, team)) in enumerate(spec.items()):
            run = api.post("runs/create", json={"experiment_id": exp, "run_name": name, "start_time": 1000 + i})
            run_id = run.json()["run"]["info"]["run_id"]
            ids[name] = run_id
            batch: dict[str, Any] = {"run_id": run_id, "metrics": [], "params": [], "tags": []}
            if loss is not None:
                batch["metrics"].append({"key": "loss", "value": loss, "timestamp": 1, "step": 0})
            if opt is not None:
                batch["params"].append({"key": "opt", "value": opt})
            if team is not None:
                batch["tags"].append({"key": "team", "value": team})
            assert api.post("runs/log-batch", json=batch).status_code == 200
        return exp, ids


def _search(api: httpx.Client, exp: str, **body: Any) -> list[str]:
    r = api.post("runs/search", json={"experiment_ids": [exp], **body})
    assert r.status_code == 200, r.text
    return [run["info"]["run_name"] for run in r.json().get("runs", [])]


@pytest.mark.parametrize("flt, expected", [
    ("metrics.loss < 0.4", ["r3", "r1"]),
    ("metrics.loss != 0.5", ["r6", "r5", "r3", "r1"]),  # NaN satisfies != only; missing never matches
    ("params.opt = 'adam'", ["r5", "r3", "r1"]),
    ("params.opt != 'adam'", ["r4", "r2"]),
    ("tags.team LIKE 'cv-%'", ["r5", "r2", "r1"]),
    ("tags.team ILIKE 'cv-%'", ["r5", "r4", "r2", "r1"]),
    ("tags.team IS NULL", ["r6"]),
    ("metrics.loss < 0.4 and params.opt = 'adam' and tags.team LIKE 'cv%'", ["r1"]),
    ("attributes.run_name = 'r2'", ["r2"]),
    ("attr.start_time >= 1004", ["r6", "r5"]),
    ("tags.`mlflow.runName` = 'r4'", ["r4"]),
])
def test_filter_shapes(api: httpx.Client, corpus: Any, flt: str, expected: list[str]) -> None:
    exp, _ = corpus
    assert _search(api, exp, filter=flt) == expected


def test_order_by_metric_puts_nan_then_missing_last_both_ways(api: httpx.Client, corpus: Any) -> None:
    exp, _ = corpus
    assert _search(api, exp, order_by=["metrics.loss ASC"]) == ["r1", "r3", "r2", "r6", "r5", "r4"]
    assert _search(api, exp, order_by=["metrics.loss DESC"]) == ["r6", "r2", "r3", "r1", "r5", "r4"]


def test_order_by_param_then_default_tie_breaker(api: httpx.Client, corpus: Any) -> None:
    exp, _ = corpus
    # ties on opt are broken by start_time DESC; the run without the param sorts last
    assert _search(api, exp, order_by=["params.opt"]) == ["r5", "r3", "r1", "r4", "r2", "r6"]


def test_view_types(api: httpx.Client, corpus: Any) -> None:
    exp, ids = corpus
    assert api.post("runs/delete", json={"run_id": ids["r6"]}).status_code == 200
    try:
        assert "r6" not in _search(api, exp)
        assert _search(api, exp, run_view_type="DELETED_ONLY") == ["r6"]
        assert len(_search(api, exp, run_view_type="ALL")) == 6
    finally:
        api.post("runs/restore", json={"run_id": ids["r6"]})


def test_empty_experiment_ids_gives_empty_object(api: httpx.Client) -> None:
    assert api.post("runs/search", json={}).json() == {}


@pytest.mark.parametrize("body, fragment", [
    ({"max_results": 50001}, "max_results"),
    ({"filter": "metrics.loss < 1 OR metrics.loss > 2"}, "OR"),
    ({"filter": "params.opt > 'a'"}, "comparator '>'"),
    ({"order_by": ["metrics.loss", "metrics.loss DESC"]}, "order_by"),
    ({"page_token": "not-a-token"}, "page token"),
])
def test_bad_search_requests_are_400(api: httpx.Client, corpus: Any, body: dict, fragment: str) -> None:
    exp, _ = corpus
    r = api.post("runs/search", json={"experiment_ids": [exp], **body})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert fragment.lower() in r.json()["message"].lower()


def test_paging_returns_every_run_exactly_once_while_writes_continue(api: httpx.Client) -> None:
    exp = api.post("experiments/create", json={"name": "paging-under-writes"}).json()["experiment_id"]
    original = []
    for i in range(25):
        run_id = api.post("runs/create", json={"experiment_id": exp, "start_time": 5000 + i}).json()["run"]["info"]["run_id"]
        api.post("runs/log-metric", json={"run_id": run_id, "key": "m", "value": i, "timestamp": 1})
        original.append(run_id)
    seen: list[str] = []
    token = None
    page = 0
    while True:
        body: dict[str, Any] = {"experiment_ids": [exp], "max_results": 4, "order_by": ["metrics.m DESC"]}
        if token:
            body["page_token"] = token
        result = api.post("runs/search", json=body).json()
        seen += [r["info"]["run_id"] for r in result["runs"]]
        token = result.get("next_page_token")
        if not token:
            break
        page += 1
        # Between pages: a new run at the top of the order, and a re-ranked existing run.
        new = api.post("runs/create", json={"experiment_id": exp}).json()["run"]["info"]["run_id"]
        api.post("runs/log-metric", json={"run_id": new, "key": "m", "value": 1000 + page, "timestamp": 1})
        api.post("runs/log-metric", json={"run_id": original[page], "key": "m", "value": 5000 + page, "timestamp": 2})
    assert len(seen) == len(set(seen)) == 25
    assert set(seen) == set(original)


def test_search_cursor_snapshots_are_bounded_in_count_and_age() -> None:
    cursors = SearchCursors(max_cursors=2, ttl_seconds=10)
    a = cursors.put(["1"], now=0)
    b = cursors.put(["2"], now=1)
    c = cursors.put(["3"], now=2)
    assert cursors.get(a, now=3) is None and cursors.get(b, now=3) == ["2"]
    assert cursors.get(c, now=20) is None


def _tree_search(server: Any, exp: str, **body: Any) -> httpx.Response:
    with httpx.Client(base_url=f"{server.url}/api/runledger/v1", timeout=30) as native:
        return native.post("runs/search", json={"experiment_ids": [exp], **body})


@pytest.mark.parametrize("flt, expected", [
    ({"$or": [{"params.opt": "sgd"}, {"metrics.loss": {"$lt": 0.2}}]}, ["r4", "r2", "r1"]),
    ({"tags.team": {"$regex": "^cv-[ab]$"}}, ["r2", "r1"]),
    ({"params.opt": {"$ne": "adam"}}, ["r6", "r4", "r2"]),  # r6 has no opt: $ne matches it
    ({"attributes.run_name": {"$in": ["r1", "r5"]}}, ["r5", "r1"]),
    ({"metrics.loss": {"$exists": False}}, ["r4"]),
])
def test_native_tree_search_filters(server: Any, corpus: Any, flt: dict, expected: list[str]) -> None:
    exp, _ = corpus
    r = _tree_search(server, exp, filter=flt)
    assert r.status_code == 200, r.text
    assert [run["info"]["run_name"] for run in r.json().get("runs", [])] == expected


def test_native_tree_search_pages_and_orders_like_runs_search(server: Any, corpus: Any) -> None:
    exp, _ = corpus
    first = _tree_search(server, exp, filter={"params.opt": {"$exists": True}}, order_by=["params.opt DESC"],
                         max_results=3).json()
    rest = _tree_search(server, exp, page_token=first["next_page_token"]).json()
    names = [run["info"]["run_name"] for run in first["runs"] + rest["runs"]]
    assert names == ["r4", "r2", "r5", "r3", "r1"]


@pytest.mark.parametrize("body, fragment", [
    ({"filter": {"metrics.loss": {"$regex": "x"}}}, "does not apply"),
    ({"filter": {"params.opt": {"$near": 1}}}, "Unknown operator"),
    ({"filter": "params.opt = 'x'"}, "filter"),
    ({"unknown": 1}, "unknown"),
])
def test_native_tree_search_refuses_bad_requests_with_400(server: Any, corpus: Any, body: dict,
                                                          fragment: str) -> None:
    exp, _ = corpus
    r = _tree_search(server, exp, **body)
    assert r.status_code == 400
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert fragment in r.json()["message"]
