"""scan_history of a finished run through its Parquet export (parquetHistory), with the unmodified
`wandb.Api` (0.31, its Go helper downloads and reads the file): the same rows as the paged path,
a new export when the history changes, and signed URLs that work only as issued."""

from __future__ import annotations

import base64
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

ENTITY = "runledger"
KEY = "local-" + "p" * 40
T0 = 1_700_000_000_000
PARQUET = ("query P($project: String!, $entity: String!, $run: String!) { project(name: $project, entityName: "
           "$entity) { run(name: $run) { parquetHistory(liveKeys: [\"_step\"]) { parquetUrls liveData } } } }")


def _points() -> list[Metric]:
    """Three keys at every step (one oddly named, integral values), a NaN, two points of one key
    at one step (the later wins), a tie on timestamp (the larger value wins)."""
    pts = [Metric("loss", 1.0 / (s + 1), T0 + s * 10, s) for s in range(2500)]
    pts += [Metric("acc", s / 3000, T0 + s * 10 + 5, s) for s in range(2500)]
    pts += [Metric("we ird/key", float(s % 4), T0 + s * 10, s) for s in range(2500)]
    pts += [Metric("acc", float("nan"), T0 + 70_000, 7), Metric("loss", 5.0, T0 + 99_999, 11),
            Metric("loss", 7.0, T0 + 120, 12), Metric("loss", 6.0, T0 + 120, 12)]
    return pts


def _sparse() -> list[Metric]:
    """acc only every 3rd step: rows hold different key sets."""
    return ([Metric("loss", 1.0 / (s + 1), T0 + s * 10, s) for s in range(300)]
            + [Metric("acc", s / 3000, T0 + s * 10 + 5, s) for s in range(0, 300, 3)])


def _log(client: MlflowClient, exp: str, name: str, finished: bool, pts: list[Metric] | None = None) -> str:
    run_id = client.create_run(exp, run_name=name, start_time=T0 - 500).info.run_id
    pts = pts or _points()
    for k in range(0, len(pts), 1000):
        client.log_batch(run_id, metrics=pts[k:k + 1000])
    if finished:
        client.set_terminated(run_id, "FINISHED")
    return run_id


@pytest.fixture(scope="module")
def world(server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("wandb-parquet-home")
    env = {"WANDB_API_KEY": KEY, "WANDB_BASE_URL": server.url, "WANDB_DIR": str(home),
           "WANDB_CONFIG_DIR": str(home / "config"), "WANDB_CACHE_DIR": str(home / "cache"),
           "WANDB_DATA_DIR": str(home / "data"), "WANDB_SILENT": "true", "WANDB_MODE": "online"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    client = MlflowClient(server.url)
    exp = client.create_experiment("wb-parquet")
    ids = {"running": _log(client, exp, "running", False), "finished": _log(client, exp, "finished", True),
           "sparse": _log(client, exp, "sparse", True, _sparse())}
    import wandb

    # The client's Go helper is one process per test session, started with the environment of
    # the first module that used wandb; its downloads land in that module's cache folder.
    caches = [tmp_path_factory.getbasetemp(), Path.home() / ".cache" / "wandb"]
    yield {"api": wandb.Api(timeout=60), "ids": ids, "client": client, "url": server.url, "caches": caches}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _gql(url: str, query: str, **variables: Any) -> dict[str, Any]:
    auth = {"Authorization": "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()}
    return httpx.post(f"{url}/graphql", headers=auth, timeout=30,
                      json={"query": query, "variables": variables, "operationName": ""}).json()


def _urls(world: dict, which: str) -> list[str]:
    answer = _gql(world["url"], PARQUET, project="wb-parquet", entity=ENTITY, run=world["ids"][which])
    return answer["data"]["project"]["run"]["parquetHistory"]["parquetUrls"]


def _typed(rows: list[dict[str, Any]]) -> list[list[tuple[str, str, Any]]]:
    """Rows with each value's type, NaN-safe, so 1 and 1.0 (or None and absent) differ."""
    return [sorted((k, type(v).__name__, "nan" if isinstance(v, float) and math.isnan(v) else v)
                   for k, v in r.items()) for r in rows]


def test_a_finished_run_is_exported_and_a_running_run_not(world: dict) -> None:
    assert len(_urls(world, "finished")) == 1
    assert _urls(world, "running") == []


def test_a_run_whose_rows_hold_different_keys_is_read_through_pages(world: dict) -> None:
    assert _urls(world, "sparse") == []
    run = world["api"].run(f"{ENTITY}/wb-parquet/{world['ids']['sparse']}")
    rows = list(run.scan_history())
    assert len(rows) == 300 and "acc" in rows[3] and "acc" not in rows[4]
    assert [r["_step"] for r in run.scan_history(keys=["acc"])] == list(range(0, 300, 3))


def test_scan_of_the_export_gives_the_same_rows_as_the_pages(world: dict) -> None:
    api = world["api"]
    paged = list(api.run(f"{ENTITY}/wb-parquet/{world['ids']['running']}").scan_history(use_cache=False))
    exported = list(api.run(f"{ENTITY}/wb-parquet/{world['ids']['finished']}").scan_history(use_cache=False))
    finished = world["ids"]["finished"]
    downloaded = [f for c in world["caches"] if c.exists() for f in c.rglob(f"*{finished}*.runhistory.parquet")]
    assert downloaded, "the helper read a downloaded export"
    assert len(paged) == 2500
    assert _typed(exported) == _typed(paged)
    by_step = {r["_step"]: r for r in exported}
    assert by_step[11]["loss"] == 5.0 and by_step[12]["loss"] == 7.0 and by_step[7]["acc"] is None
    assert by_step[1998]["we ird/key"] == 2 and by_step[3]["acc"] == pytest.approx(0.001)


def test_scan_with_keys_and_a_step_range_reads_the_export_by_url(world: dict) -> None:
    # With keys the helper reads the file remotely (HEAD and range requests), not a download.
    api = world["api"]
    for keys, lo, hi in ((["acc"], 100, 130), (["acc", "loss"], 0, 20)):
        args = {"keys": keys, "min_step": lo, "max_step": hi, "use_cache": False}
        paged = list(api.run(f"{ENTITY}/wb-parquet/{world['ids']['running']}").scan_history(**args))
        exported = list(api.run(f"{ENTITY}/wb-parquet/{world['ids']['finished']}").scan_history(**args))
        assert [r["_step"] for r in exported] == list(range(lo, hi))
        assert _typed(exported) == _typed(paged)


def test_a_url_works_only_as_signed(world: dict) -> None:
    url = _urls(world, "finished")[0]
    assert httpx.get(url, timeout=30).status_code == 200
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    forged = [{**query, "user": "someone-else"}, {**query, "expires": str(int(query["expires"]) + 3600)},
              {k: v for k, v in query.items() if k != "sig"}]
    for q in forged:
        assert httpx.get(urlunsplit(parts._replace(query=urlencode(q))), timeout=30).status_code == 404
    other_run = parts.path.replace(world["ids"]["finished"], world["ids"]["running"])
    assert httpx.get(urlunsplit(parts._replace(path=other_run)), timeout=30).status_code == 404


def test_a_changed_history_is_never_read_from_a_stale_export(world: dict) -> None:
    api, run_id = world["api"], world["ids"]["finished"]
    before = _urls(world, "finished")
    list(api.run(f"{ENTITY}/wb-parquet/{run_id}").scan_history())     # the client keeps the file
    world["client"].log_batch(run_id, metrics=[Metric(k, 0.5, T0 + 90_000, 3000) for k in ("loss", "acc", "we ird/key")])
    deadline = time.monotonic() + 10
    while _urls(world, "finished") == before and time.monotonic() < deadline:
        time.sleep(0.1)
    # The helper would read its cached copy of the first export under a new URL: pages instead.
    assert _urls(world, "finished") == []
    rows = list(api.run(f"{ENTITY}/wb-parquet/{run_id}").scan_history())
    assert rows[-1] == {"_step": 3000, "_timestamp": 1_700_000_090.0, "_runtime": 90.5, "loss": 0.5, "acc": 0.5,
                        "we ird/key": 0.5}
    assert len(rows) == 2501
