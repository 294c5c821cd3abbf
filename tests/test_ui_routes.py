"""The UI's list reads (`/ui/api/...`, query/run_table.py) and page routes, over HTTP against a
real server with runs logged by the mlflow client."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import mlflow
import pytest
from mlflow.entities import Metric, Param


@pytest.fixture(scope="module")
def table(server) -> dict[str, Any]:
    """Five finished runs: lr 0.5, 0.05, 5, 1e-3, 20 (as strings: they sort as numbers), acc
    rising with i; a run with no acc; a deleted run (never listed)."""
    mlflow.set_tracking_uri(server.url)
    client = mlflow.MlflowClient()
    name = f"ui-routes-{uuid.uuid4().hex[:6]}"
    exp = client.create_experiment(name)
    ids = []
    for i, lr in enumerate(["0.5", "0.05", "5", "1e-3", "20"]):
        run = client.create_run(exp, run_name=f"r{i}", start_time=1_700_000_000_000 + i)
        client.log_batch(run.info.run_id, metrics=[Metric("acc", 0.1 * i, 1, 0)], params=[Param("lr", lr)])
        client.set_terminated(run.info.run_id, "FINISHED", end_time=1_700_000_000_000 + 1000 * (5 - i))
        ids.append(run.info.run_id)
    bare = client.create_run(exp, run_name="bare", start_time=1_700_000_000_100)
    gone = client.create_run(exp, run_name="gone")
    client.delete_run(gone.info.run_id)
    return {"url": server.url, "exp": exp, "name": name, "ids": ids, "bare": bare.info.run_id}


def _runs(table: dict[str, Any], **params: Any) -> httpx.Response:
    return httpx.get(f"{table['url']}/ui/api/experiments/{table['exp']}/runs", params=params)


def _names(table: dict[str, Any], **params: Any) -> list[str]:
    r = _runs(table, **params)
    assert r.status_code == 200, r.text
    return [run["run_name"] for run in r.json()["runs"]]


def test_experiments_are_found_by_part_of_their_name_in_any_case_with_run_counts(table) -> None:
    body = httpx.get(f"{table['url']}/ui/api/experiments", params={"q": table["name"][3:].upper()}).json()
    assert [(e["name"], e["runs"], e["running"]) for e in body["experiments"]] == [(table["name"], 6, 1)]


def test_columns_list_the_param_and_metric_keys_of_the_experiment(table) -> None:
    body = httpx.get(f"{table['url']}/ui/api/experiments/{table['exp']}/columns").json()
    assert body["name"] == table["name"] and body["params"] == ["lr"] and body["metrics"] == ["acc"]


def test_the_table_sorts_by_a_metric_with_missing_values_last_in_both_directions(table) -> None:
    assert _names(table, sort="metric:acc", order="desc") == ["r4", "r3", "r2", "r1", "r0", "bare"]
    assert _names(table, sort="metric:acc", order="asc") == ["r0", "r1", "r2", "r3", "r4", "bare"]


def test_params_that_are_numbers_sort_as_numbers(table) -> None:
    assert _names(table, sort="param:lr", order="asc") == ["r3", "r1", "r0", "r2", "r4", "bare"]


def test_the_table_sorts_by_duration_and_shows_it(table) -> None:
    body = _runs(table, sort="duration", order="asc", param="lr", metric="acc").json()
    finished = [r for r in body["runs"] if r["status"] == "FINISHED"]
    assert [r["run_name"] for r in finished] == ["r4", "r3", "r2", "r1", "r0"]
    assert [r["duration_ms"] for r in finished] == [1000 * (5 - i) - i for i in (4, 3, 2, 1, 0)]
    assert finished[0]["params"] == {"lr": "20"} and finished[0]["metrics"] == {"acc": pytest.approx(0.4)}


def test_a_filter_narrows_the_table_and_the_total_counts_every_match(table) -> None:
    body = _runs(table, filter="metrics.acc >= 0.2", sort="name", order="asc", limit=2).json()
    assert body["total"] == 3 and [r["run_name"] for r in body["runs"]] == ["r2", "r3"]
    body = _runs(table, filter="metrics.acc >= 0.2", sort="name", order="asc", limit=2, offset=2).json()
    assert [r["run_name"] for r in body["runs"]] == ["r4"]


def test_a_bad_filter_is_a_400_with_the_grammars_message(table) -> None:
    r = _runs(table, filter="metrics.acc >>> 1")
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert r.json()["message"]


def test_an_unknown_sort_column_is_a_400_naming_the_choices(table) -> None:
    r = _runs(table, sort="colour")
    assert r.status_code == 400 and "param:<key>" in r.json()["message"]


def test_an_unknown_experiment_is_a_404(table) -> None:
    r = httpx.get(f"{table['url']}/ui/api/experiments/424242/runs")
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


@pytest.mark.parametrize("path", ["/", "/experiments/0", "/runs/x", "/compare", "/sql"])
def test_every_page_is_html_that_loads_only_local_scripts(table, path: str) -> None:
    r = httpx.get(table["url"] + path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "http://" not in r.text and "https://" not in r.text
    for script in ("/ui/static/common.js", "/ui/static/plot.js"):
        assert script in r.text and httpx.get(table["url"] + script).status_code == 200


def test_the_page_data_never_carries_markup_from_the_url(table) -> None:
    """The run id goes into the page as JSON inside a <script> element: no raw `<` there, so
    nothing taken from the URL can close it (a `/` cannot be part of the id: it is a path)."""
    r = httpx.get(table["url"] + "/runs/<b>x<!--")
    assert r.status_code == 200 and "<b>x" not in r.text and "\\u003cb>x" in r.text
