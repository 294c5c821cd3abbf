"""The streaming path: POST /api/runledger/v1/metrics/stream, GET /rejections, GET /lag.

Real Kafka, real DuckDB, a real server process (docs/design.md, "Tests"). The stream endpoint
answers on Kafka's acknowledgement, so every read here polls until the projector caught up.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Callable, Iterator

import httpx
import pytest

from runledger.ingest.contract.events import Envelope, metrics_columns
from runledger.ingest.topic import ensure_topic
from runledger.projector.consumer import Projector
from runledger.projector.store import Store
from runledger.dialects.native.ops import _oldest_timestamp
from tests.conftest import RunledgerServer
from tests.log_tools import append_events

pytestmark = pytest.mark.kafka

MAX_DOUBLE = 1.7976931348623157e308
TS = 1_700_000_000_000


# ----- helpers

@pytest.fixture(scope="module")
def rl(server: RunledgerServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.url}/api/runledger/v1", timeout=60) as client:
        yield client


def new_run(api: httpx.Client) -> tuple[str, str]:
    exp = api.post("experiments/create", json={"name": f"stream-{uuid.uuid4().hex}"}).json()["experiment_id"]
    run = api.post("runs/create", json={"experiment_id": exp, "start_time": TS}).json()["run"]["info"]["run_id"]
    return exp, run


def stream(rl: httpx.Client, run_id: str, **columns: Any) -> httpx.Response:
    return rl.post("metrics/stream", json={"run_id": run_id, **columns})


def history(api: httpx.Client, run_id: str, key: str) -> list[dict[str, Any]]:
    r = api.get("metrics/get-history", params={"run_id": run_id, "metric_key": key})
    assert r.status_code == 200, r.text
    return r.json().get("metrics", [])


def poll(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    value = fetch()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.1)
        value = fetch()
    return value


def applied_through_marker(rl: httpx.Client, api: httpx.Client, run_id: str) -> None:
    """Stream one marker point and wait for it: the run's events share a partition, so every
    event acknowledged before the marker has then been folded too."""
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    assert stream(rl, run_id, keys=[marker], values=[1], timestamps=[TS]).status_code == 200
    assert poll(lambda: history(api, run_id, marker), bool), "marker never applied"


def assert_the_eight_points_stored(api: httpx.Client, run: str) -> None:
    """The eight points both stream bodies send (loss: 0.5, -3, null, NaN at steps 10-13; acc:
    +inf, -inf, 1e308, 0.1 at steps 0-3) as get-history returns them: null and NaN as "NaN",
    infinities clamped to the largest double."""
    loss = poll(lambda: history(api, run, "loss"), lambda h: len(h) >= 4)
    acc = poll(lambda: history(api, run, "acc"), lambda h: len(h) >= 4)
    assert [(m["step"], m["timestamp"], m["value"]) for m in loss] == [
        (10, TS, 0.5), (11, TS + 1, -3.0), (12, TS + 2, "NaN"), (13, TS + 3, "NaN")]
    assert [(m["step"], m["value"]) for m in acc] == [(0, MAX_DOUBLE), (1, -MAX_DOUBLE), (2, 1e308), (3, 0.1)]


def error(resp: httpx.Response, status: int, code: str, *fragments: str) -> None:
    assert resp.status_code == status, f"{resp.status_code} {resp.text[:500]}"
    body = resp.json()
    assert body["error_code"] == code, body
    for fragment in fragments:
        assert fragment in body["message"], body["message"]


# ----- the happy path

def test_streamed_points_become_visible_with_exact_values(api: httpx.Client, rl: httpx.Client) -> None:
    _, run = new_run(api)
    values = [0.5, -3, None, "NaN", "Infinity", "-Infinity", 1e308, 0.1]
    r = stream(rl, run, keys=["loss"] * 4 + ["acc"] * 4, values=values,
               timestamps=[TS + i for i in range(8)], steps=[10, 11, 12, 13, 0, 1, 2, 3])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["points"] == 8
    assert len(body["event_id"]) == 32  # generated when the caller sends none

    assert_the_eight_points_stored(api, run)


def test_an_integer_value_beyond_double_precision_is_stored_as_the_nearest_double(api: httpx.Client,
                                                                                   rl: httpx.Client) -> None:
    _, run = new_run(api)
    assert stream(rl, run, keys=["m", "m"], values=[2 ** 53 + 1, 1], timestamps=[TS, TS + 1]).status_code == 200
    points = poll(lambda: history(api, run, "m"), lambda h: len(h) >= 2)
    assert [m["value"] for m in points] == [float(2 ** 53), 1.0]


def test_steps_default_to_zero_and_whole_number_floats_are_integers(api: httpx.Client, rl: httpx.Client) -> None:
    _, run = new_run(api)
    assert stream(rl, run, keys=["m", "m"], values=[1, 2], timestamps=[float(TS), TS + 1]).status_code == 200
    points = poll(lambda: history(api, run, "m"), lambda h: len(h) >= 2)
    assert [(m["step"], m["timestamp"]) for m in points] == [(0, TS), (0, TS + 1)]


def test_the_answer_is_the_kafka_acknowledgement_with_the_callers_event_id(api: httpx.Client,
                                                                           rl: httpx.Client) -> None:
    _, run = new_run(api)
    r = stream(rl, run, event_id="train-step_0001", keys=["m"], values=[1], timestamps=[TS])
    assert r.json() == {"event_id": "train-step_0001", "points": 1}
    # Acknowledged by Kafka, so the projector will apply it; the answer did not depend on that.
    assert poll(lambda: history(api, run, "m"), bool)


def test_a_large_request_is_split_into_events_and_applied_whole(api: httpx.Client, rl: httpx.Client) -> None:
    _, run = new_run(api)
    n = 100_000  # the per-request maximum: two events of 50k points
    r = stream(rl, run, event_id="big-request", keys=["m"] * n, values=[float(i) for i in range(n)],
               timestamps=[TS] * n, steps=list(range(n)))
    assert r.json() == {"event_id": "big-request", "points": n}
    points = poll(lambda: history(api, run, "m"), lambda h: len(h) >= n)
    assert [m["step"] for m in points] == list(range(n))
    assert all(m["value"] == m["step"] for m in points)


# ----- idempotence

def test_retrying_an_event_id_stores_its_points_once(api: httpx.Client, rl: httpx.Client) -> None:
    _, run = new_run(api)
    body = {"event_id": "retry-me-0001", "keys": ["m"] * 3, "values": [1, 2, 3], "timestamps": [TS] * 3,
            "steps": [0, 1, 2]}
    for _ in range(3):
        assert stream(rl, run, **body).json() == {"event_id": "retry-me-0001", "points": 3}
    # A "retry" with other content proves the event id, not the points' equality, decides:
    # the projector applies an event id once and ignores later copies.
    assert stream(rl, run, **{**body, "values": [7, 8, 9]}).status_code == 200
    applied_through_marker(rl, api, run)
    assert [(m["step"], m["value"]) for m in history(api, run, "m")] == [(0, 1.0), (1, 2.0), (2, 3.0)]


def test_retrying_a_split_request_stores_every_part_once(api: httpx.Client, rl: httpx.Client) -> None:
    _, run = new_run(api)
    n = 60_000  # two events
    body = {"event_id": "split-retry-1", "keys": ["m"] * n, "timestamps": [TS] * n, "steps": list(range(n))}
    assert stream(rl, run, values=[1.0] * n, **body).status_code == 200
    assert stream(rl, run, values=[2.0] * n, **body).status_code == 200
    applied_through_marker(rl, api, run)
    points = history(api, run, "m")
    assert len(points) == n and {m["value"] for m in points} == {1.0}


def test_event_ids_are_scoped_by_run(api: httpx.Client, rl: httpx.Client) -> None:
    """Two runs' clients numbering their requests alike must not drop each other's points."""
    runs = [new_run(api)[1] for _ in range(2)]
    for run in runs:
        assert stream(rl, run, event_id="chunk-000001", keys=["m"], values=[1], timestamps=[TS]).status_code == 200
    for run in runs:
        assert len(poll(lambda: history(api, run, "m"), bool)) == 1


# ----- bad input

N_TOO_MANY = 100_001


@pytest.mark.parametrize("columns, fragment", [
    ({"keys": ["a", "b"], "values": [1], "timestamps": [TS, TS]}, "same length"),
    ({"keys": ["a"], "values": [1], "timestamps": [TS], "steps": [1, 2]}, "same length"),
    ({"keys": ["a", "../up"], "values": [1, 2], "timestamps": [TS, TS]}, "keys[1]"),
    ({"keys": ["bad key!"], "values": [1], "timestamps": [TS]}, "Names may only contain"),
    ({"keys": ["k" * 251], "values": [1], "timestamps": [TS]}, "maximum length of 250"),
    ({"keys": [7], "values": [1], "timestamps": [TS]}, "keys[0]"),
    ({"keys": [["x"]], "values": [1], "timestamps": [TS]}, "keys[0]"),
    ({"keys": ["a", "a"], "values": [1, True], "timestamps": [TS, TS]}, "values[1]"),
    ({"keys": ["a"], "values": ["1.5"], "timestamps": [TS]}, "values[0]"),
    ({"keys": ["a"], "values": [{"v": 1}], "timestamps": [TS]}, "values[0]"),
    ({"keys": ["a", "a"], "values": [1, 2], "timestamps": [TS, -1]}, "non-negative"),
    ({"keys": ["a"], "values": [1], "timestamps": [1.5]}, "timestamps[0]"),
    ({"keys": ["a"], "values": [1], "timestamps": [None]}, "timestamps[0]"),
    ({"keys": ["a"], "values": [1], "timestamps": [True]}, "timestamps[0]"),
    ({"keys": ["a"], "values": [1], "timestamps": [2 ** 63]}, "64-bit"),
    ({"keys": ["a"], "values": [1], "timestamps": [TS], "steps": ["1"]}, "steps[0]"),
    ({"keys": [], "values": [], "timestamps": []}, "between 1 and 100000"),
    ({"keys": ["a"] * N_TOO_MANY, "values": [1] * N_TOO_MANY, "timestamps": [TS] * N_TOO_MANY},
     "between 1 and 100000"),
    ({"values": [1], "timestamps": [TS]}, "Missing value for required parameter 'keys'"),
    ({"keys": "a", "values": [1], "timestamps": [TS]}, "Expected a list"),
    ({"keys": ["a"], "values": [1], "timestamps": [TS], "event_id": "short"}, "event_id"),
    ({"keys": ["a"], "values": [1], "timestamps": [TS], "event_id": "has:colon-1"}, "event_id"),
    ({"keys": ["a"], "values": [1], "timestamps": [TS], "event_id": "x" * 65}, "event_id"),
])
def test_bad_columns_are_refused_with_invalid_parameter_value(api: httpx.Client, rl: httpx.Client,
                                                              columns: dict[str, Any], fragment: str) -> None:
    _, run = new_run(api)
    error(stream(rl, run, **columns), 400, "INVALID_PARAMETER_VALUE", fragment)
    applied_through_marker(rl, api, run)  # nothing of the refused request reached the log
    assert all(history(api, run, k) == [] for k in ("a", "b", "k" * 251))


def test_unknown_run_is_404(rl: httpx.Client) -> None:
    error(stream(rl, uuid.uuid4().hex, keys=["a"], values=[1], timestamps=[TS]), 404, "RESOURCE_DOES_NOT_EXIST",
          "not found")


def test_missing_run_id_and_wrong_content_type_are_400(rl: httpx.Client) -> None:
    error(rl.post("metrics/stream", json={"keys": ["a"], "values": [1], "timestamps": [TS]}), 400,
          "INVALID_PARAMETER_VALUE", "'run_id'")
    error(rl.post("metrics/stream", content=b"{}", headers={"content-type": "text/plain"}), 400,
          "INVALID_PARAMETER_VALUE", "Content-Type")


def test_deleted_run_and_run_of_deleted_experiment_are_400(api: httpx.Client, rl: httpx.Client) -> None:
    _, run = new_run(api)
    assert api.post("runs/delete", json={"run_id": run}).status_code == 200
    error(stream(rl, run, keys=["a"], values=[1], timestamps=[TS]), 400, "INVALID_PARAMETER_VALUE", "'active'")
    exp, run = new_run(api)
    assert api.post("experiments/delete", json={"experiment_id": exp}).status_code == 200
    error(stream(rl, run, keys=["a"], values=[1], timestamps=[TS]), 400, "INVALID_PARAMETER_VALUE", "'active'")


# ----- rejections

def _metrics_event(run_id: str, exp_id: str | None, ingest_time: int) -> Envelope:
    return Envelope(event_id=uuid.uuid4().hex, type="MetricsLogged", experiment_id=exp_id, run_id=run_id,
                    ingest_time=ingest_time, user="test", payload=metrics_columns([("m", 1.0, TS, 0)]))


def test_rejected_events_are_listed_newest_first(server: RunledgerServer, kafka_bootstrap: str,
                                                 rl: httpx.Client, api: httpx.Client) -> None:
    ghost = uuid.uuid4().hex  # no such run: the projector rejects its points
    exp, run = new_run(api)
    older, newer = _metrics_event(ghost, None, TS), _metrics_event(ghost, None, TS + 5)
    # The streaming race made deterministic: the run is deleted before its points are folded.
    deleted = Envelope(event_id=uuid.uuid4().hex, type="RunDeleted", experiment_id=exp, run_id=run,
                       ingest_time=TS, user="test", payload={})
    late = _metrics_event(run, exp, TS + 1)
    append_events(kafka_bootstrap, server.topic, [older, newer, deleted, late])

    got = poll(lambda: rl.get("rejections", params={"run_id": ghost}).json()["rejections"],
               lambda r: len(r) >= 2)
    assert [r["event_id"] for r in got] == [newer.event_id, older.event_id]
    first = got[0]
    assert set(first) == {"event_id", "partition", "offset", "type", "run_id", "experiment_id", "ingest_time",
                          "error_code", "reason"}
    assert first["type"] == "MetricsLogged" and first["run_id"] == ghost and first["ingest_time"] == TS + 5
    assert first["error_code"] == "RESOURCE_DOES_NOT_EXIST" and ghost in first["reason"]
    assert isinstance(first["partition"], int) and isinstance(first["offset"], int)

    late_rejection = poll(lambda: rl.get("rejections", params={"run_id": run}).json()["rejections"], bool)
    assert [(r["event_id"], r["error_code"]) for r in late_rejection] == [(late.event_id, "INVALID_PARAMETER_VALUE")]
    assert "'active'" in late_rejection[0]["reason"]

    assert len(rl.get("rejections", params={"run_id": ghost, "max_results": 1}).json()["rejections"]) == 1
    assert len(rl.get("rejections").json()["rejections"]) >= 3
    error(rl.get("rejections", params={"max_results": 0}), 400, "INVALID_PARAMETER_VALUE", "max_results")


# ----- lag

def test_lag_reports_every_partition_and_reaches_zero(api: httpx.Client, rl: httpx.Client) -> None:
    _, run = new_run(api)
    n = 50_000
    assert stream(rl, run, keys=["m"] * n, values=[0.5] * n, timestamps=[TS] * n,
                  steps=list(range(n))).status_code == 200
    body = rl.get("lag").json()
    assert set(body) == {"partitions", "total_lag", "oldest_unapplied_age_ms"}
    assert [p["partition"] for p in body["partitions"]] == [0, 1, 2, 3]
    for p in body["partitions"]:
        assert set(p) == {"partition", "end_offset", "applied_offset", "lag"}
        assert p["lag"] == p["end_offset"] - p["applied_offset"] >= 0
    assert body["total_lag"] == sum(p["lag"] for p in body["partitions"])
    assert body["oldest_unapplied_age_ms"] >= 0 and (body["total_lag"] > 0 or body["oldest_unapplied_age_ms"] == 0)

    caught_up = poll(lambda: rl.get("lag").json(), lambda b: b["total_lag"] == 0)
    assert caught_up["total_lag"] == 0 and caught_up["oldest_unapplied_age_ms"] == 0
    assert all(p["end_offset"] == p["applied_offset"] for p in caught_up["partitions"])
    assert len(history(api, run, "m")) == n  # lag 0 means the acknowledged points are readable


def test_projector_lag_counts_records_not_yet_applied(kafka_bootstrap: str, tmp_path: Any) -> None:
    """Projector.lag against a real broker and DuckDB file, with the fold driven by hand so
    that the unapplied state is not a race."""
    topic = f"test-lag-{uuid.uuid4().hex[:12]}"

    async def scenario() -> list[dict[int, tuple[int, int]]]:
        partitions = await ensure_topic(kafka_bootstrap, topic, 2)
        store = Store(tmp_path / "lag.duckdb")
        projector = Projector(store, kafka_bootstrap, topic, lambda verdicts: None)
        await projector.start(partitions)
        try:
            seen = [await projector.lag()]
            await asyncio.to_thread(append_events, kafka_bootstrap, topic,
                                    [_metrics_event("run-a", None, TS) for _ in range(5)])
            seen.append(await projector.lag())
            applied = 0
            while applied < 5:
                batch = await projector._consumer.getmany(timeout_ms=1000)
                applied += sum(len(records) for records in batch.values())
                if batch:
                    await projector.process(batch)
            seen.append(await projector.lag())
            return seen
        finally:
            await projector.close()
            store.close()

    empty, behind, caught_up = asyncio.run(scenario())
    assert empty == {0: (0, 0), 1: (0, 0)}
    assert sum(end - applied for end, applied in behind.values()) == 5
    assert all(applied == 0 for _, applied in behind.values())
    assert caught_up == {p: (end, end) for p, (end, _) in behind.items()}


def test_oldest_unapplied_timestamp_is_that_of_the_first_unapplied_record(kafka_bootstrap: str) -> None:
    topic = f"test-age-{uuid.uuid4().hex[:12]}"
    asyncio.run(ensure_topic(kafka_bootstrap, topic, 1))
    before = time.time_ns() // 1_000_000
    append_events(kafka_bootstrap, topic, [_metrics_event("run-a", None, TS) for _ in range(3)])
    time.sleep(0.05)
    middle = time.time_ns() // 1_000_000
    append_events(kafka_bootstrap, topic, [_metrics_event("run-a", None, TS) for _ in range(3)])
    after = time.time_ns() // 1_000_000
    assert before <= asyncio.run(_oldest_timestamp(kafka_bootstrap, topic, {0: 0})) <= middle
    assert middle <= asyncio.run(_oldest_timestamp(kafka_bootstrap, topic, {0: 4})) <= after
    assert asyncio.run(_oldest_timestamp(kafka_bootstrap, topic, {})) is None
