"""The live tail over a real server: every event of a run (or experiment) arrives once, in log
order, after it is queryable; a client that drops reconnects with Last-Event-ID and misses
nothing; silence is filled with keep-alive comments."""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any, Callable, Iterator

import httpx
import pytest

from tests.conftest import RunledgerServer


def _messages(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """SSE messages as {"id", "data"} (data parsed), and comments as {"comment"}."""
    current: dict[str, Any] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
        elif line.startswith("retry: "):
            yield {"retry": int(line[7:])}
        elif line.startswith("id: "):
            current["id"] = line[4:]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and "data" in current:
            yield current
            current = {}


def _reader(url: str, headers: dict[str, str], out: "queue.Queue[dict[str, Any]]", stop_after: int,
            ready: threading.Event, on_message: Callable[[dict[str, Any]], Any] | None = None) -> None:
    with httpx.stream("GET", url, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        got = 0
        for message in _messages(response):
            if "retry" in message:
                ready.set()  # sent once the stream is subscribed to new entries
                continue
            if on_message is not None and "data" in message:
                message["seen_on_receipt"] = on_message(message["data"])
            out.put(message)
            if "data" in message:
                got += 1
                if got >= stop_after:
                    return


def _start(url: str, stop_after: int, headers: dict[str, str] | None = None,
           on_message: Callable[[dict[str, Any]], Any] | None = None
           ) -> tuple[threading.Thread, "queue.Queue[dict[str, Any]]"]:
    out: queue.Queue[dict[str, Any]] = queue.Queue()
    ready = threading.Event()
    t = threading.Thread(target=_reader, args=(url, headers or {}, out, stop_after, ready, on_message), daemon=True)
    t.start()
    assert ready.wait(10)
    return t, out


def _data(out: "queue.Queue[dict[str, Any]]", n: int, timeout: float = 20) -> list[dict[str, Any]]:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < n:
        message = out.get(timeout=max(0.01, deadline - time.monotonic()))
        if "data" in message:
            got.append(message)
    return got


def _wait_for_trail(server: RunledgerServer, run_id: str, n: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(httpx.get(f"{server.url}/api/runledger/v1/runs/{run_id}/events").json()["events"]) < n:
        assert time.monotonic() < deadline, f"the trail of {run_id} did not reach {n} events"
        time.sleep(0.02)


def test_run_tail_in_order_queryable_and_resumable(server: RunledgerServer, api: httpx.Client) -> None:
    exp = api.post("/experiments/create", json={"name": f"tail-{time.time_ns()}"}).json()["experiment_id"]
    run_id = api.post("/runs/create", json={"experiment_id": exp}).json()["run"]["info"]["run_id"]
    url = f"{server.url}/api/runledger/v1/runs/{run_id}/tail"
    # The answer to runs/create comes after the log took it, not after the read model did: the
    # tail (which starts with what is committed after it subscribed) must open after RunCreated.
    _wait_for_trail(server, run_id, 1)
    thread, out = _start(url, stop_after=5)
    for i in range(12):
        api.post("/runs/log-metric", json={"run_id": run_id, "key": "m", "value": i, "timestamp": i, "step": i})
    api.post("/runs/log-parameter", json={"run_id": run_id, "key": "p", "value": "1"})
    api.post("/runs/log-parameter", json={"run_id": run_id, "key": "p", "value": "2"})  # rejected
    first = _data(out, 5)
    thread.join(10)
    # Dropped after 5; everything since is delivered on reconnection with Last-Event-ID.
    thread, out = _start(url, stop_after=9, headers={"Last-Event-ID": first[-1]["id"]})
    rest = _data(out, 9)
    received = [m["data"] for m in first + rest]
    trail = httpx.get(f"{server.url}/api/runledger/v1/runs/{run_id}/events").json()["events"]
    assert [(e["type"], e["offset"]) for e in received] == [(e["type"], e["offset"]) for e in trail][1:]
    assert received == trail[1:]
    assert [m["id"] for m in first + rest] == [e["position"] for e in trail[1:]]
    assert received[-1]["verdict"]["status"] == "rejected"
    thread.join(10)


def test_experiment_tail_pings_and_each_message_is_queryable_when_sent(server: RunledgerServer,
                                                                      api: httpx.Client) -> None:
    exp = api.post("/experiments/create", json={"name": f"tail-exp-{time.time_ns()}"}).json()["experiment_id"]
    url = f"{server.url}/api/runledger/v1/experiments/{exp}/tail?ping=0.2"

    def read_on_receipt(entry: dict[str, Any]) -> Any:
        # Sent only after the commit: a read made the moment it arrives already shows the change.
        run = httpx.get(f"{server.url}/api/2.0/mlflow/runs/get", params={"run_id": entry["run_id"]}).json()
        return {t["key"] for t in run["run"]["data"].get("tags", [])}

    thread, out = _start(url, stop_after=4, on_message=read_on_receipt)
    comments = []
    deadline = time.monotonic() + 5
    while not comments and time.monotonic() < deadline:
        message = out.get(timeout=5)
        comments += [message] if "comment" in message else []
    assert comments == [{"comment": "ping"}]
    runs = [api.post("/runs/create", json={"experiment_id": exp}).json()["run"]["info"]["run_id"] for _ in range(2)]
    for run_id in runs:
        api.post("/runs/set-tag", json={"run_id": run_id, "key": "k", "value": "v"})
    got = _data(out, 4)
    assert [(m["data"]["type"], m["data"]["run_id"]) for m in got] == [
        ("RunCreated", runs[0]), ("RunCreated", runs[1]), ("TagsSet", runs[0]), ("TagsSet", runs[1])]
    # The id is a cursor over partitions; each message's content is readable once it is sent.
    assert all(m["data"]["position"] in m["id"].split(",") for m in got)
    assert all("k" in m["seen_on_receipt"] for m in got if m["data"]["type"] == "TagsSet")
    thread.join(10)


def test_a_bad_last_event_id_is_a_400(server: RunledgerServer) -> None:
    answer = httpx.get(f"{server.url}/api/runledger/v1/runs/x/tail", headers={"Last-Event-ID": "yesterday"})
    assert answer.status_code == 400 and answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
