"""The runs/search first-page cache (query.search_cache): a repeated search is answered from it
only while nothing was committed since, so every search right after a write sees that write,
and a cached answer pages exactly like a fresh one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from runledger.query import reader
from runledger.query.run_cache import RunCache
from runledger.query.search_cache import SearchCache
from tests.test_fold import log_params
from tests.test_read_after_write import scenario


def _names(api: httpx.Client, exp: str, **body: Any) -> tuple[list[str], dict[str, Any]]:
    r = api.post("runs/search", json={"experiment_ids": [exp], **body})
    assert r.status_code == 200, r.text
    doc = r.json()
    return [run["info"]["run_name"] for run in doc.get("runs", [])], doc


def _run(api: httpx.Client, exp: str, name: str, start: int, **batch: Any) -> str:
    r = api.post("runs/create", json={"experiment_id": exp, "run_name": name, "start_time": start})
    run_id = r.json()["run"]["info"]["run_id"]
    if batch:
        assert api.post("runs/log-batch", json={"run_id": run_id, **batch}).status_code == 200
    return run_id


@pytest.fixture
def exp(api: httpx.Client, request: pytest.FixtureRequest) -> str:
    return api.post("experiments/create", json={"name": f"cache-{request.node.name}"}).json()["experiment_id"]


def test_repeated_search_returns_the_same_runs_and_a_working_page_token(api: httpx.Client, exp: str) -> None:
    for i in range(5):
        _run(api, exp, f"r{i}", 1000 + i, params=[{"key": "opt", "value": "adam"}])
    first, doc1 = _names(api, exp, filter="params.opt = 'adam'", max_results=2)
    again, doc2 = _names(api, exp, filter="params.opt = 'adam'", max_results=2)
    assert first == again == ["r4", "r3"]
    # each answer has its own snapshot, and both page through the same runs
    for doc in (doc1, doc2):
        rest, _ = _names(api, exp, filter="params.opt = 'adam'", max_results=2, page_token=doc["next_page_token"])
        assert rest == ["r2", "r1"]


def test_search_right_after_logging_a_param_sees_the_run(api: httpx.Client, exp: str) -> None:
    run_id = _run(api, exp, "late", 1000)
    for _ in range(2):   # the second answer is the cached one
        assert _names(api, exp, filter="params.opt = 'sgd'")[0] == []
    assert api.post("runs/log-batch", json={"run_id": run_id, "params": [{"key": "opt", "value": "sgd"}]}
                    ).status_code == 200
    assert _names(api, exp, filter="params.opt = 'sgd'")[0] == ["late"]


def test_search_right_after_overwriting_a_tag_sees_the_new_value(api: httpx.Client, exp: str) -> None:
    run_id = _run(api, exp, "tagged", 1000, tags=[{"key": "model", "value": "resnet-1"}])
    for _ in range(2):
        found, doc = _names(api, exp, filter="tags.model LIKE 'resnet%'")
        assert found == ["tagged"]
    assert api.post("runs/set-tag", json={"run_id": run_id, "key": "model", "value": "vit-1"}).status_code == 200
    assert _names(api, exp, filter="tags.model LIKE 'resnet%'")[0] == []
    found, doc = _names(api, exp)
    assert [t["value"] for t in doc["runs"][0]["data"]["tags"] if t["key"] == "model"] == ["vit-1"]


def test_search_right_after_a_new_run_and_a_delete_sees_both(api: httpx.Client, exp: str) -> None:
    old = _run(api, exp, "old", 1000)
    for _ in range(2):
        assert _names(api, exp)[0] == ["old"]
    _run(api, exp, "new", 2000)
    assert _names(api, exp)[0] == ["new", "old"]
    assert api.post("runs/delete", json={"run_id": old}).status_code == 200
    assert _names(api, exp)[0] == ["new"]


def test_a_commit_makes_every_kept_search_unusable() -> None:
    runs = RunCache(1 << 20)
    cache = SearchCache(runs)
    token = cache.token()
    cache.put("k", token, ["a"], ["1"], [b"{}"])
    assert cache.get("k") is not None
    runs.drop(["some-other-run"])          # any commit, to any run
    assert cache.get("k") is None


def test_a_search_read_before_a_commit_is_not_kept() -> None:
    runs = RunCache(1 << 20)
    cache = SearchCache(runs)
    token = cache.token()
    runs.drop([], ["experiment-1"])         # a commit lands while the search reads
    cache.put("k", token, ["a"], ["1"], [b"{}"])
    assert cache.get("k") is None and len(cache) == 0


def test_no_search_is_kept_when_the_run_cache_is_off() -> None:
    cache = SearchCache(RunCache(0))
    cache.put("k", cache.token(), ["a"], ["1"], [b"{}"])
    assert not cache.enabled and cache.get("k") is None


def test_not_settled_while_an_answered_write_waits_for_its_commit(tmp_path: Path) -> None:
    """The condition under which runs/search answers from the cache without a cursor's wait."""
    async def body(h: Any) -> None:
        service = h.services["latest_metrics"]
        assert service.settled()
        h.store.gate.clear()          # the write is folded and answered, its commit held
        try:
            await h.fold(log_params(("lr", "0.1")))
            assert not service.settled()
        finally:
            h.store.gate.set()
            await h.projector.drain()
        assert service.settled()

    scenario(tmp_path, body)


def test_a_kept_search_is_not_served_for_later_pages_or_a_stale_generation(tmp_path: Path) -> None:
    async def body(h: Any) -> None:
        service = h.services["latest_metrics"]
        ask = dict(experiment_ids=["1"], filter_string=None, run_view_type=None, max_results=1, order_by=[],
                   latest_table="latest_metrics")
        with service.cursor() as cur:
            fresh = reader.search_runs(cur, **ask, page_token=None, cursors=service.search_cursors,
                                       cache=h.cache, results=service.search_cache)
        kept = reader.kept_search_runs(service.search_cache, service.search_cursors, **ask, page_token=None)
        assert kept is not None and orjson.dumps(kept["runs"]) == orjson.dumps(fresh["runs"])
        assert reader.kept_search_runs(service.search_cache, service.search_cursors, **ask,
                                       page_token=kept["next_page_token"]) is None
        await h.fold(log_params(("lr", "0.1")))
        await h.projector.drain()
        assert reader.kept_search_runs(service.search_cache, service.search_cursors, **ask, page_token=None) is None

    scenario(tmp_path, body)
