"""docs/design.md, invariant 7: a bad record never stops the projector.

Poison records are produced straight into a real server's topic (tests/poison_records.py),
each followed by a good synchronous write that must be answered; every poison record must end
up in the rejections table with a reason, and a replay into a fresh data folder must agree.
A second test opens a hole in the fold's checks on purpose, so that DuckDB refuses a commit,
and checks the projector isolates the event instead of halting.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from runledger.projector import fold
from runledger.projector.store import Store
from tests.conftest import RunledgerServer
from tests.log_tools import dump_tables, fold_into, read_topic, without_offsets
from tests.poison_records import Raw, doc, poison_records, produce_sync, project_all

NATIVE = "/api/runledger/v1"


def _ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    return r.json()


def rss_mb(server: RunledgerServer) -> float:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _wait_caught_up(server: RunledgerServer, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{server.url}{NATIVE}/lag", timeout=10)
        if r.status_code == 200 and r.json()["total_lag"] == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"projector did not catch up: {server.log_tail()}")


def _rejections(server: RunledgerServer) -> dict[tuple[int, int], dict[str, Any]]:
    rows = _ok(httpx.get(f"{server.url}{NATIVE}/rejections", params={"max_results": 10000}, timeout=30))["rejections"]
    return {(r["partition"], r["offset"]): r for r in rows}


def test_poison_records_are_rejected_with_a_reason_and_the_projector_keeps_going(make_server: Any) -> None:
    server: RunledgerServer = make_server()
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=30) as api:
        exp_id = _ok(api.post("experiments/create", json={"name": "poison"}))["experiment_id"]
        run_id = _ok(api.post("runs/create", json={"experiment_id": exp_id, "start_time": 1}))["run"]["info"]["run_id"]
        model_id = _ok(api.post("logged-models", json={"experiment_id": exp_id, "name": "m"}))["model"]["info"]["model_id"]
        records = poison_records(exp_id, run_id, model_id)
        assert len(records) > 60
        positions: list[tuple[int, int]] = []
        rss_before_bomb = rss_after_bomb = 0.0
        for i, record in enumerate(records):
            if "bomb" in record.name:
                rss_before_bomb = rss_mb(server)
            positions += produce_sync(server.bootstrap, server.topic, [record])
            # A synchronous write after each: answered only once the projector got past the poison.
            r = api.post("runs/log-metric", json={"run_id": run_id, "key": "good", "value": i, "timestamp": i,
                                                  "step": i})
            assert r.status_code == 200, f"after {record.name!r}: {r.status_code} {r.text}\n{server.log_tail()}"
            if "bomb" in record.name:
                rss_after_bomb = rss_mb(server)
        history = _ok(api.get("metrics/get-history", params={"run_id": run_id, "metric_key": "good"}))["metrics"]
        assert sorted(m["step"] for m in history) == list(range(len(records)))
        run = _ok(api.get("runs/get", params={"run_id": run_id}))["run"]
        assert run["info"]["lifecycle_stage"] == "active" and "params" not in run["data"]
    _wait_caught_up(server)
    rejected = _rejections(server)
    for record, position in zip(records, positions):
        row = rejected.get(position)
        assert row is not None, f"{record.name!r} at {position} was not rejected"
        assert row["error_code"] == "MALFORMED_EVENT" and row["reason"], (record.name, row)
    assert rss_after_bomb - rss_before_bomb < 100, (rss_before_bomb, rss_after_bomb)
    # The reason says what was wrong, e.g. for the record of issue 11.
    issue = next(p for r, p in zip(records, positions) if r.name == f"RunCreated start_time {2 ** 64 - 1}")
    assert "out of the 64-bit range" in rejected[issue]["reason"]

    # Replay into a fresh data folder: the same rows and the same verdicts.
    server.stop()
    live = without_offsets(dump_tables(str(server.duckdb_path)))
    replica = RunledgerServer(server.bootstrap, server.data_dir.parent / f"{server.data_dir.name}-replay", server.topic)
    replica.data_dir.mkdir()
    replica.start()
    try:
        _wait_caught_up(replica)
        assert _rejections(replica).keys() == rejected.keys()
    finally:
        replica.stop()
    assert without_offsets(dump_tables(str(replica.duckdb_path))) == live


def _raw(d: dict[str, Any]) -> Raw:
    return Raw(d["type"], (d["run_id"] or "").encode(), orjson.dumps(d))


def test_a_commit_duckdb_refuses_is_isolated_to_its_event(kafka_bootstrap: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # A hole in the fold's checks, opened on purpose: it lets a start_time past int64 through,
    # which DuckDB refuses at commit time. The projector must reject that one event and commit
    # everything around it, in the live loop as in a replay.
    monkeypatch.setattr(fold, "INT64_MAX", 2 ** 64)
    topic = f"test-isolate-{uuid.uuid4().hex[:8]}"
    good_run, bad_run = uuid.uuid4().hex, uuid.uuid4().hex

    def created(run_id: str, start_time: int) -> dict[str, Any]:
        return doc("RunCreated", {"run_name": "r", "start_time": start_time, "user_id": "u", "artifact_uri": "a",
                                  "tags": []}, run_id=run_id, experiment_id="0")

    events = [
        doc("ExperimentCreated", {"name": "Default", "artifact_location": "a", "artifact_root": "a", "tags": []},
            experiment_id="0"),
        created(good_run, 1),
        created(bad_run, 2 ** 64 - 1),
        doc("TagsSet", {"tags": [["t", "v"]]}, run_id=good_run, experiment_id="0"),
        doc("TagsSet", {"tags": [["t", "v"]]}, run_id=bad_run, experiment_id="0"),
    ]
    events[0]["event_id"] = "default"
    records = [_raw(d) for d in events]
    records[0].key = b"experiments"

    async def project() -> dict[str, Any]:
        store = Store(tmp_path / "live.duckdb")
        verdicts: dict[str, Any] = {}
        try:
            await project_all(kafka_bootstrap, topic, records, store, verdicts.update)
        finally:
            store.close()
        return verdicts

    verdicts = asyncio.run(project())
    codes = [verdicts[d["event_id"]].error_code for d in events]
    assert codes == [None, None, "MALFORMED_EVENT", None, "RESOURCE_DOES_NOT_EXIST"]
    assert "cannot store this event" in verdicts[events[2]["event_id"]].message
    live = dump_tables(str(tmp_path / "live.duckdb"))
    assert [r[0] for r in live["runs"]] == [good_run]
    assert [(r[0], r[3]) for r in live["rejections"] if r[0] == events[2]["event_id"]] == [(events[2]["event_id"],
                                                                                         "RunCreated")]
    # A replay through the batch step (tests.log_tools) isolates the same event the same way.
    log = read_topic(kafka_bootstrap, topic)
    fold_into(str(tmp_path / "replay.duckdb"), topic, [[(0, o, v) for o, v in log[0]]])
    assert without_offsets(dump_tables(str(tmp_path / "replay.duckdb"))) == without_offsets(live)
