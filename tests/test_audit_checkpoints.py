"""As-of reads that start from checkpoints of a run's folded state (query/checkpoints.py) answer
exactly what runs/get answered then: at a checkpoint's position, before the first one and
between them, past a rewind (never folded across it) and on a read model replayed into a
fresh DuckDB. The server checkpoints a run every 3 events here, so a short history has many."""

from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

import httpx
import pytest

from tests.conftest import RunledgerServer

NATIVE = "/api/runledger/v1"
EVERY_3_EVENTS = {"RUNLEDGER_AUDIT_CHECKPOINT_EVENTS": "3", "RUNLEDGER_AUDIT_CHECKPOINT_POINTS": "0"}


@pytest.fixture(scope="module")
def ckpt_server(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunledgerServer]:
    s = RunledgerServer(kafka_bootstrap, tmp_path_factory.mktemp("data"), f"test-{uuid.uuid4().hex[:12]}",
                        **EVERY_3_EVENTS)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def mlflow_api(ckpt_server: RunledgerServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{ckpt_server.url}/api/2.0/mlflow", timeout=30) as client:
        yield client


@pytest.fixture
def native(ckpt_server: RunledgerServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{ckpt_server.url}{NATIVE}", timeout=60) as client:
        yield client


Record = tuple[int, str, dict[str, Any]]   # (time ms, trail position of the last event, runs/get answer)


def _record(api: httpx.Client, native: httpx.Client, run_id: str) -> Record:
    trail = native.get(f"/runs/{run_id}/events", params={"max_results": 1000}).json()["events"]
    answer = api.get("/runs/get", params={"run_id": run_id}).json()
    moment = time.time_ns() // 1_000_000
    time.sleep(0.003)  # the next write's ingest time is later than the moment recorded
    return moment, trail[-1]["position"], answer


def _history(api: httpx.Client, native: httpx.Client) -> tuple[str, list[Record]]:
    """A run changed many times (one rejected change among them), with what runs/get answered
    after each change, and one more change after the last record (so no moment is 'now')."""
    exp = api.post("/experiments/create", json={"name": f"ckpt-{time.time_ns()}"}).json()["experiment_id"]
    run_id = api.post("/runs/create", json={"experiment_id": exp}).json()["run"]["info"]["run_id"]
    recorded = [_record(api, native, run_id)]
    writes: list[tuple[str, dict[str, Any]]] = [
        ("/runs/log-parameter", {"key": "lr", "value": "0.1"}),
        ("/runs/log-parameter", {"key": "lr", "value": "0.2"}),   # rejected: params are immutable
    ]
    for i in range(12):
        writes.append(("/runs/set-tag", {"key": f"t{i % 4}", "value": str(i)}))
        writes.append(("/runs/log-metric", {"key": "loss", "value": 1.0 / (i + 1), "timestamp": 1000 + i, "step": i}))
    writes += [("/runs/delete-tag", {"key": "t0"}), ("/runs/update", {"status": "FINISHED", "end_time": 9000}),
               ("/runs/delete", {}), ("/runs/restore", {})]
    for path, body in writes:
        api.post(path, json={"run_id": run_id, **body})
        recorded.append(_record(api, native, run_id))
    api.post("/runs/set-tag", json={"run_id": run_id, "key": "after", "value": "the last record"})
    return run_id, recorded


def _as_of(native: httpx.Client, run_id: str, **params: Any) -> tuple[dict[str, Any], str]:
    answer = native.get(f"/runs/{run_id}", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json(), answer.headers["x-runledger-as-of-basis"]


def _wait_for_checkpoint(native: httpx.Client, run_id: str, moment: int, timeout: float = 30) -> str:
    """Until the run has a checkpoint at or before `moment` (its thread works in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        _, basis = _as_of(native, run_id, as_of=moment)
        if basis.startswith("checkpoint") or time.monotonic() > deadline:
            return basis
        time.sleep(0.2)


def test_as_of_from_checkpoints_equals_what_runs_get_answered_then(mlflow_api: httpx.Client,
                                                                   native: httpx.Client) -> None:
    run_id, recorded = _history(mlflow_api, native)
    assert _wait_for_checkpoint(native, run_id, recorded[-1][0]).startswith("checkpoint")
    bases = []
    for moment, position, expected in recorded:
        by_time, basis = _as_of(native, run_id, as_of=moment)
        assert by_time == expected, (moment, basis)
        by_position, basis_p = _as_of(native, run_id, as_of_position=position)
        assert by_position == expected, (position, basis_p)
        bases += [basis, basis_p]
    # Every kind of start was exercised: before the first checkpoint, exactly at one, after one.
    assert any(b.startswith("log start") for b in bases), bases
    assert any(b.startswith("checkpoint") and b.endswith("folded 0 events") for b in bases), bases
    assert any(b.startswith("checkpoint") and not b.endswith("folded 0 events") for b in bases), bases
    assert "live" not in bases


def test_now_is_answered_by_the_live_read_model(mlflow_api: httpx.Client, native: httpx.Client) -> None:
    run_id, _ = _history(mlflow_api, native)
    now = mlflow_api.get("/runs/get", params={"run_id": run_id}).json()
    answer, basis = _as_of(native, run_id, as_of=time.time_ns() // 1_000_000 + 1000)
    assert (answer, basis) == (now, "live")


def _until_checkpointed(api: httpx.Client, native: httpx.Client, run_id: str, timeout: float = 30) -> Record:
    """Tag the run until a past moment of it is read from a checkpoint (the checkpointer works
    on its own thread, at positions of its choosing); the record of that moment."""
    deadline = time.monotonic() + timeout
    i = 0
    while True:
        api.post("/runs/set-tag", json={"run_id": run_id, "key": f"pad{i}", "value": str(i)})
        record = _record(api, native, run_id)
        api.post("/runs/set-tag", json={"run_id": run_id, "key": f"pad{i}", "value": f"{i} again"})
        _, basis = _as_of(native, run_id, as_of_position=record[1])
        if basis.startswith("checkpoint"):
            return record
        assert time.monotonic() < deadline, f"no checkpoint within {timeout}s ({basis})"
        i += 1
        time.sleep(0.3)


def test_a_checkpoint_is_never_folded_across_a_rewind(mlflow_api: httpx.Client, native: httpx.Client) -> None:
    exp = mlflow_api.post("/experiments/create", json={"name": f"ckpt-rw-{time.time_ns()}"}).json()["experiment_id"]
    run_id = mlflow_api.post("/runs/create", json={"experiment_id": exp}).json()["run"]["info"]["run_id"]
    for s in range(10):
        mlflow_api.post("/runs/log-metric", json={"run_id": run_id, "key": "loss", "value": float(s),
                                                  "timestamp": 1000 + s, "step": s})
    before = _until_checkpointed(mlflow_api, native, run_id)
    rewind = native.post(f"/runs/{run_id}/rewind", json={"step": 4})
    assert rewind.status_code == 200, rewind.text
    after = _record(mlflow_api, native, run_id)
    mlflow_api.post("/runs/log-metric", json={"run_id": run_id, "key": "loss", "value": 50.0, "timestamp": 999,
                                              "step": 5})
    later = _record(mlflow_api, native, run_id)
    mlflow_api.post("/runs/set-tag", json={"run_id": run_id, "key": "y", "value": "2"})
    assert before[2]["run"]["data"]["metrics"] == [{"key": "loss", "value": 9.0, "timestamp": 1009, "step": 9}]
    assert after[2]["run"]["data"]["metrics"] == [{"key": "loss", "value": 4.0, "timestamp": 1004, "step": 4}]
    assert later[2]["run"]["data"]["metrics"] == [{"key": "loss", "value": 50.0, "timestamp": 999, "step": 5}]
    rewind_offset = int(after[1].split(":")[1])
    assert _as_of(native, run_id, as_of_position=before[1])[0] == before[2]
    for record in (after, later):
        for params in ({"as_of": record[0]}, {"as_of_position": record[1]}):
            got, basis = _as_of(native, run_id, **params)
            assert got == record[2], basis
            if basis.startswith("checkpoint"):
                # Only a checkpoint taken at or after the rewind may start a read past it.
                start = basis.split()[1].rstrip(";")
                assert int(start.split(":")[1]) >= rewind_offset, (basis, after[1])


def test_as_of_after_a_replay_into_a_fresh_duckdb(ckpt_server: RunledgerServer, mlflow_api: httpx.Client,
                                                  native: httpx.Client, make_server: Any) -> None:
    run_id, recorded = _history(mlflow_api, native)
    final = mlflow_api.get("/runs/get", params={"run_id": run_id}).json()
    # A second server folds the same log into an empty data folder, checkpointing as it goes.
    replica = make_server(topic=ckpt_server.topic, **EVERY_3_EVENTS)
    with httpx.Client(base_url=replica.url, timeout=60) as http:
        deadline = time.monotonic() + 60
        while http.get("/api/2.0/mlflow/runs/get", params={"run_id": run_id}).json() != final:
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.2)
        replayed = httpx.Client(base_url=f"{replica.url}{NATIVE}", timeout=60)
        replica_api = httpx.Client(base_url=f"{replica.url}/api/2.0/mlflow", timeout=60)
        # Its own checkpoints, at positions of its own: a later moment read from one of them.
        recorded.append(_until_checkpointed(replica_api, replayed, run_id))
        for moment, position, expected in recorded:
            assert _as_of(replayed, run_id, as_of=moment)[0] == expected
            assert _as_of(replayed, run_id, as_of_position=position)[0] == expected
        replayed.close()
        replica_api.close()
