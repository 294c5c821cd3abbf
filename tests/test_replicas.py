"""Issue 21, replicas: two Runledger servers on one topic, each with its own DuckDB file.

- Once both have applied the log they answer identically: runs/search page by page, metric
  histories, and a checksum of every SQL view.
- A write answer carries X-Runledger-Log-Position; a read sent to the other replica with that
  header sees the write at once (read-your-writes across a load balancer).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import RunledgerServer

MLFLOW = "/api/2.0/mlflow"
NATIVE = "/api/runledger/v1"
HEADER = "X-Runledger-Log-Position"
VIEWS = ["experiments", "experiment_tags", "runs", "params", "tags", "metrics", "latest_metrics", "datasets",
         "logged_models", "logged_model_params", "logged_model_metrics", "events", "rejections"]


def _ok(r: httpx.Response) -> Any:
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
    return r.json()


def _caught_up(server: RunledgerServer) -> None:
    deadline = time.monotonic() + 60
    while _ok(httpx.get(f"{server.url}{NATIVE}/lag", timeout=10))["total_lag"]:
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.1)


def _carry_log_position(*clients: httpx.Client) -> None:
    """Make the clients behave like one caller behind a load balancer that passes back the
    log position of its last write, so a write sent to the other replica never outruns it
    (without this, runs/create on the second replica can miss the experiment just created on
    the first: the very race the header exists for)."""
    last: dict[str, str] = {}

    def remember(response: httpx.Response) -> None:
        if HEADER in response.headers:
            last["position"] = response.headers[HEADER]

    def pass_back(request: httpx.Request) -> None:
        if "position" in last:
            request.headers[HEADER] = last["position"]

    for client in clients:
        client.event_hooks = {"request": [pass_back], "response": [remember]}


def _populate(a: httpx.Client, b: httpx.Client) -> tuple[list[str], list[tuple[str, str]]]:
    """Writes through both replicas; returns experiment ids and (run id, metric key) pairs."""
    exp_ids, series = [], []
    for e, client in enumerate([a, b, a]):
        exp_id = _ok(client.post(f"{MLFLOW}/experiments/create", json={"name": f"replicas-{e}"}))["experiment_id"]
        exp_ids.append(exp_id)
        for r in range(9):
            writer = [a, b][r % 2]
            run_id = _ok(writer.post(f"{MLFLOW}/runs/create", json={"experiment_id": exp_id, "start_time": r,
                                                                     "run_name": f"r{e}-{r}"}))["run"]["info"]["run_id"]
            _ok(writer.post(f"{MLFLOW}/runs/log-batch", json={
                "run_id": run_id, "params": [{"key": "lr", "value": str(r / 10)}], "tags": [{"key": "t", "value": str(r % 3)}],
                "metrics": [{"key": "loss", "value": 1 / (s + 1 + r), "timestamp": s, "step": s} for s in range(50)]}))
            steps = list(range(500))
            _ok(writer.post(f"{NATIVE}/metrics/stream", json={"run_id": run_id, "keys": ["acc"] * 500,
                                                               "values": [s / 500 for s in steps], "timestamps": steps,
                                                               "steps": steps}))
            if r % 4 == 0:
                _ok(writer.post(f"{MLFLOW}/runs/update", json={"run_id": run_id, "status": "FINISHED", "end_time": 99}))
            series += [(run_id, "loss"), (run_id, "acc")]
    return exp_ids, series


def _search_pages(client: httpx.Client, exp_ids: list[str]) -> list[list[dict[str, Any]]]:
    pages, token = [], None
    while True:
        body: dict[str, Any] = {"experiment_ids": exp_ids, "max_results": 7, "order_by": ["params.lr DESC"]}
        if token:
            body["page_token"] = token
        page = _ok(client.post(f"{MLFLOW}/runs/search", json=body))
        pages.append(page["runs"])
        token = page.get("next_page_token")
        if not token:
            return pages


def _view_checksums(client: httpx.Client) -> dict[str, Any]:
    out = {}
    for view in VIEWS:
        answer = _ok(client.post(f"{NATIVE}/sql", json={"query": f"SELECT count(*), bit_xor(hash(v)) FROM {view} v"}))
        out[view] = answer["rows"][0]
    return out


def _everything(client: httpx.Client, exp_ids: list[str], series: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "search": _search_pages(client, exp_ids),
        "histories": [_ok(client.get(f"{MLFLOW}/metrics/get-history", params={"run_id": r, "metric_key": k}))
                      for r, k in series],
        "experiments": _ok(client.post(f"{MLFLOW}/experiments/search", json={"max_results": 1000})),
        "views": _view_checksums(client),
    }


def test_two_replicas_on_one_topic_answer_identically(make_server: Any) -> None:
    first: RunledgerServer = make_server()
    second: RunledgerServer = make_server(topic=first.topic)
    with httpx.Client(base_url=first.url, timeout=60) as a, httpx.Client(base_url=second.url, timeout=60) as b:
        _carry_log_position(a, b)
        exp_ids, series = _populate(a, b)
        _caught_up(first)
        _caught_up(second)
        answers_a, answers_b = _everything(a, exp_ids, series), _everything(b, exp_ids, series)
    assert sum(len(p) for p in answers_a["search"]) == 27 and len(answers_a["search"]) == 4
    assert answers_a["views"]["metrics"][0] == 27 * 550
    for part in answers_a:
        assert answers_a[part] == answers_b[part], part


def test_a_read_passing_the_write_position_sees_the_write_on_the_other_replica(make_server: Any) -> None:
    first: RunledgerServer = make_server()
    second: RunledgerServer = make_server(topic=first.topic)
    with httpx.Client(base_url=first.url, timeout=60) as a, httpx.Client(base_url=second.url, timeout=60) as b:
        exp = a.post(f"{MLFLOW}/experiments/create", json={"name": "ryw-replicas"})
        exp_id = _ok(exp)["experiment_id"]
        _ok(b.get(f"{MLFLOW}/experiments/get", params={"experiment_id": exp_id}, headers={HEADER: exp.headers[HEADER]}))
        for i in range(25):
            writer, reader = (a, b) if i % 2 else (b, a)
            created = writer.post(f"{MLFLOW}/runs/create", json={"experiment_id": exp_id, "start_time": i})
            run = _ok(created)["run"]
            got = reader.get(f"{MLFLOW}/runs/get", params={"run_id": run["info"]["run_id"]},
                             headers={HEADER: created.headers[HEADER]})
            assert _ok(got)["run"] == run
            logged = writer.post(f"{MLFLOW}/runs/log-metric", json={"run_id": run["info"]["run_id"], "key": "m",
                                                                    "value": i, "timestamp": 1, "step": i})
            _ok(logged)
            history = reader.get(f"{MLFLOW}/metrics/get-history", params={"run_id": run["info"]["run_id"], "metric_key": "m"},
                                 headers={HEADER: logged.headers[HEADER]})
            assert [(m["value"], m["step"]) for m in _ok(history)["metrics"]] == [(i, i)]
        streamed = a.post(f"{NATIVE}/metrics/stream", json={"run_id": run["info"]["run_id"], "keys": ["s"] * 3,
                                                            "values": [1, 2, 3], "timestamps": [1, 2, 3], "steps": [1, 2, 3]})
        _ok(streamed)
        history = b.get(f"{MLFLOW}/metrics/get-history", params={"run_id": run["info"]["run_id"], "metric_key": "s"},
                        headers={HEADER: streamed.headers[HEADER]})
        assert len(_ok(history)["metrics"]) == 3


def test_a_read_answer_carries_no_position_and_a_bad_position_is_a_400(server: RunledgerServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        read = c.get(f"{MLFLOW}/experiments/get", params={"experiment_id": "0"})
        assert read.status_code == 200 and HEADER not in read.headers
        for bad in ("3:7", '{"a": 1}', '{"0": -1}', "[1]", '{"0": 1.5}'):
            r = c.get(f"{MLFLOW}/experiments/get", params={"experiment_id": "0"}, headers={HEADER: bad})
            assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", (bad, r.text)


@pytest.mark.parametrize("ahead", [1_000_000])
def test_a_position_the_replica_never_reaches_is_a_504_after_the_sync_timeout(make_server: Any, ahead: int) -> None:
    server: RunledgerServer = make_server(RUNLEDGER_SYNC_TIMEOUT="2")
    r = httpx.get(f"{server.url}{MLFLOW}/experiments/get", params={"experiment_id": "0"},
                  headers={HEADER: f'{{"0": {ahead}}}'}, timeout=30)
    assert r.status_code == 504 and "has not applied the log up to" in r.json()["message"], r.text
