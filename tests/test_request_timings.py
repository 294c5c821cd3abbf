"""GET /api/runledger/v1/request-timings: recent requests phase by phase, with the server's own
work that overlapped them (runledger.request_timing), on a real server; and the projector's
wake-up for reads waiting on a log position (Projector.next_commit)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from runledger.projector.consumer import Projector
from runledger.projector.store import Store
from tests.test_openapi import MLFLOW, NATIVE, Checked

GET_RUN = f"{MLFLOW}/runs/get"


def _run(check: Checked) -> str:
    exp = check("POST", f"{MLFLOW}/experiments/create", json={"name": f"timings-{uuid.uuid4().hex[:8]}"})["experiment_id"]
    return check("POST", f"{MLFLOW}/runs/create", json={"experiment_id": exp, "start_time": 1})["run"]["info"]["run_id"]


def _timed(check: Checked, rid: str, **params: str) -> dict:
    listed = check("GET", f"{NATIVE}/request-timings", params={"path": GET_RUN, **params})
    found = [r for r in listed["requests"] if r["request_id"] == rid]
    assert len(found) == 1, listed["requests"][-3:]
    return found[0]


def test_a_get_run_is_listed_under_its_request_id_with_its_phases_in_order(server) -> None:  # type: ignore[no-untyped-def]
    check = Checked(server.url)
    run_id = _run(check)
    rid = f"timing-{uuid.uuid4().hex[:10]}"
    check("GET", GET_RUN, params={"run_id": run_id}, headers={"X-Request-Id": rid})
    timed = _timed(check, rid)
    assert timed["method"] == "GET" and timed["path"] == GET_RUN
    marks = timed["marks"]
    assert (timed["arrived"] <= timed["entered"] <= marks["routing"] <= marks["handler"] <= marks["handler_end"]
            <= timed["response_started"] <= timed["done"])
    phases = timed["phases_ms"]
    assert set(phases) >= {"queued", "middleware", "dispatch", "handler", "from_handler", "total"}
    parts = phases["queued"] + phases["middleware"] + phases["dispatch"] + phases["handler"] + phases["from_handler"]
    assert parts == pytest.approx(phases["total"], abs=0.01)


def test_the_commit_of_a_write_shows_as_server_activity(server) -> None:  # type: ignore[no-untyped-def]
    check = Checked(server.url)
    run_id = _run(check)
    rid = f"timing-{uuid.uuid4().hex[:10]}"
    check("GET", GET_RUN, params={"run_id": run_id}, headers={"X-Request-Id": rid})
    since = _timed(check, rid)["arrived"] - 1e-6
    check("POST", f"{MLFLOW}/runs/log-metric", json={"run_id": run_id, "key": "loss", "value": 1.0,
                                                      "timestamp": int(time.time() * 1000), "step": 1})
    deadline = time.monotonic() + 30
    while True:   # the commit lands after the write's answer: ask until it has
        activity = check("GET", f"{NATIVE}/request-timings", params={"path": GET_RUN, "since": str(since)})["activity"]
        if activity.get("commit", {}).get("count", 0) >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert activity["commit"]["count"] >= 1
    assert activity["fold"]["count"] >= 1


def test_since_leaves_out_the_requests_that_arrived_before_it(server) -> None:  # type: ignore[no-untyped-def]
    check = Checked(server.url)
    run_id = _run(check)
    early, late = f"early-{uuid.uuid4().hex[:8]}", f"late-{uuid.uuid4().hex[:8]}"
    check("GET", GET_RUN, params={"run_id": run_id}, headers={"X-Request-Id": early})
    now = check("GET", f"{NATIVE}/request-timings", params={"limit": "0"})["now"]
    check("GET", GET_RUN, params={"run_id": run_id}, headers={"X-Request-Id": late})
    listed = check("GET", f"{NATIVE}/request-timings", params={"path": GET_RUN, "since": str(now)})["requests"]
    assert [r["request_id"] for r in listed] == [late]


def test_a_since_that_is_not_a_number_is_refused(server) -> None:  # type: ignore[no-untyped-def]
    check = Checked(server.url)
    body = check("GET", f"{NATIVE}/request-timings", status=400, params={"since": "yesterday"})
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "since" in body["message"]


def test_next_commit_is_done_once_a_commit_lands_and_a_new_one_is_handed_out_after(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = Store(tmp_path / "rm.duckdb")
        # not started: no broker is contacted; the commit arrives as the committer reports it
        projector = Projector(store, "127.0.0.1:9", "t", lambda verdicts: None)
        try:
            waiting = projector.next_commit()
            assert projector.next_commit() is waiting and not waiting.done()
            projector._committed_batch(1, {0: 7}, 0)
            assert waiting.done() and projector.applied_offsets == {0: 7}
            assert not projector.next_commit().done()
        finally:
            await projector.close()
            store.close()

    asyncio.run(scenario())
