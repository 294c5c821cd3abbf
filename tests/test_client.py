"""runledger.client.MetricStream against a real server process (real Kafka, real DuckDB).

Faults are real too: the server is SIGKILLed and restarted mid-stream, a TCP proxy drops
responses after the server has acted on the request, and a socket that never answers makes
the buffer fill up.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from typing import Any, Callable, Iterator

import httpx
import pytest

from runledger.ingest.contract.codec import decode
from runledger.ingest.contract.events import Envelope
from runledger.client import MetricStream, StreamError
from tests.conftest import RunledgerServer
from tests.log_tools import read_topic

pytestmark = pytest.mark.kafka

TS = 1_700_000_000_000


# ----- helpers

def new_run(api: httpx.Client) -> tuple[str, str]:
    exp = api.post("experiments/create", json={"name": f"client-{uuid.uuid4().hex}"}).json()["experiment_id"]
    run = api.post("runs/create", json={"experiment_id": exp, "start_time": TS}).json()["run"]["info"]["run_id"]
    return exp, run


def history(base_url: str, run_id: str, key: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{base_url}/api/2.0/mlflow/metrics/get-history", params={"run_id": run_id, "metric_key": key},
                  timeout=60)
    assert r.status_code == 200, r.text
    return r.json().get("metrics", [])


def poll(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    value = fetch()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.2)
        value = fetch()
    return value


def wait_applied(base_url: str, timeout: float = 90) -> None:
    """Until the projector has applied everything in the log (GET /lag)."""
    lag = poll(lambda: httpx.get(f"{base_url}/api/runledger/v1/lag", timeout=30).json(),
               lambda b: b["total_lag"] == 0, timeout)
    assert lag["total_lag"] == 0, lag


class ResponseDroppingProxy:
    """A TCP proxy that forwards each request to the server but, for the first `drop`
    connections, closes the client's socket as soon as the server starts answering: the
    server has acted (Kafka acknowledged), the client never hears it and must retry."""

    def __init__(self, upstream_port: int, drop: int) -> None:
        self.upstream_port = upstream_port
        self.drop = drop
        self.dropped = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                drop = self.dropped < self.drop
                self.dropped += drop
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, drop), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, drop: bool) -> None:
        try:
            while data := src.recv(65536):
                if drop:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener.getsockname()[1]
    listener.close()


# ----- delivery

def test_200k_points_over_several_keys_are_all_queryable_after_close(server: RunledgerServer,
                                                                     api: httpx.Client) -> None:
    _, run = new_run(api)
    keys = [f"train/k{i}" for i in range(4)]
    with MetricStream(server.url, run, max_points=20_000) as stream:
        for step in range(50_000):
            stream.log_many(keys, [step * 0.5 + i for i in range(4)], [step] * 4, [TS + step] * 4)
    assert stream.buffered == 0
    for i, key in enumerate(keys):
        points = poll(lambda: history(server.url, run, key), lambda h: len(h) >= 50_000)
        assert len(points) == 50_000
        assert [m["step"] for m in points] == list(range(50_000))
        assert all(m["value"] == m["step"] * 0.5 + i and m["timestamp"] == TS + m["step"] for m in points)


def test_log_one_point_at_a_time_with_nan_and_infinity(server: RunledgerServer, api: httpx.Client) -> None:
    _, run = new_run(api)
    with MetricStream(server.url, run) as stream:
        for step, value in enumerate([1.5, float("nan"), float("inf"), float("-inf"), None, 7]):
            stream.log("m", value, step=step, timestamp=TS)
        stream.log("m", 0.25, step=6)  # timestamp: now
    points = poll(lambda: history(server.url, run, "m"), lambda h: len(h) >= 7)
    assert [m["value"] for m in points] == [1.5, "NaN", 1.7976931348623157e308, -1.7976931348623157e308, "NaN",
                                            7.0, 0.25]
    assert [(m["step"], m["timestamp"]) for m in points[:6]] == [(s, TS) for s in range(6)]
    assert points[-1]["step"] == 6 and abs(points[-1]["timestamp"] - time.time() * 1000) < 120_000


def test_chunks_go_out_on_size_and_flush_sends_the_rest(server: RunledgerServer, api: httpx.Client) -> None:
    _, run = new_run(api)
    stream = MetricStream(server.url, run, max_points=100, flush_interval=3600)
    try:
        stream.log_many(["m"] * 1050, [1.0] * 1050, list(range(1050)), [TS] * 1050)
        # Ten full chunks leave at once; the last 50 points wait (the interval is an hour).
        assert poll(lambda: stream.buffered, lambda b: b == 50, timeout=30) == 50
        wait_applied(server.url)
        assert len(history(server.url, run, "m")) == 1000
        stream.flush()
        assert stream.buffered == 0  # flush() returns once Kafka has acknowledged all of it
        assert len(poll(lambda: history(server.url, run, "m"), lambda h: len(h) >= 1050)) == 1050
        stream.flush()  # nothing pending: returns at once
    finally:
        stream.close()


def test_points_go_out_after_the_flush_interval_without_flush(server: RunledgerServer, api: httpx.Client) -> None:
    _, run = new_run(api)
    with MetricStream(server.url, run, max_points=50_000, flush_interval=0.2) as stream:
        stream.log("m", 1.0, step=0, timestamp=TS)
        assert poll(lambda: history(server.url, run, "m"), bool, timeout=30)
        assert stream.buffered == 0


def test_close_is_idempotent_and_logging_after_close_fails(server: RunledgerServer, api: httpx.Client) -> None:
    _, run = new_run(api)
    stream = MetricStream(server.url, run)
    stream.log("m", 1.0, timestamp=TS)
    stream.close()
    stream.close()
    with pytest.raises(RuntimeError, match="closed"):
        stream.log("m", 2.0)
    assert len(poll(lambda: history(server.url, run, "m"), bool)) == 1


def test_many_threads_share_one_stream(server: RunledgerServer, api: httpx.Client) -> None:
    _, run = new_run(api)
    with MetricStream(server.url, run, max_points=1000, max_buffered_points=5000) as stream:
        def worker(t: int) -> None:
            for i in range(5000):
                stream.log(f"t{t}", float(i), step=i, timestamp=TS)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for t in range(4):
        points = poll(lambda: history(server.url, run, f"t{t}"), lambda h: len(h) >= 5000)
        assert [m["step"] for m in points] == list(range(5000))


# ----- bounded memory

def test_the_buffer_never_holds_more_than_max_buffered_points(server: RunledgerServer, api: httpx.Client) -> None:
    _, run = new_run(api)
    samples: list[int] = []
    with MetricStream(server.url, run, max_points=100, max_buffered_points=500) as stream:
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append(stream.buffered)
                samples.append(len(stream._keys))
                time.sleep(0.001)

        sampler = threading.Thread(target=sample)
        sampler.start()
        for i in range(0, 20_000, 250):  # log_many calls of 250 points...
            stream.log_many(["m"] * 250, [1.0] * 250, list(range(i, i + 250)), [TS] * 250)
        stream.log_many(["m"] * 2000, [2.0] * 2000, list(range(20_000, 22_000)), [TS] * 2000)  # ...and 4x the bound
        done.set()
        sampler.join()
    assert stream.high_water <= 500
    assert max(samples) <= 500
    assert len(poll(lambda: history(server.url, run, "m"), lambda h: len(h) >= 22_000)) == 22_000


def test_log_blocks_while_the_buffer_is_full(silent_port: int) -> None:
    stream = MetricStream(f"http://127.0.0.1:{silent_port}", "some-run", max_points=100, max_buffered_points=300,
                          timeout=1.5, retries=0)
    stream.log_many(["m"] * 300, [1.0] * 300, [0] * 300, [TS] * 300)  # fills the buffer
    blocked = threading.Thread(target=stream.log, args=("m", 1.0))
    started = time.monotonic()
    blocked.start()
    blocked.join(0.7)
    assert blocked.is_alive(), "log() returned although the buffer was full"
    # The server never answers: after the timeout the chunks are given up, which frees room.
    blocked.join(30)
    assert not blocked.is_alive() and time.monotonic() - started >= 1.0
    assert stream.high_water <= 300
    with pytest.raises(StreamError) as failure:
        stream.close()
    assert failure.value.points >= 300 and failure.value.status_code is None


# ----- retries

def test_lost_responses_are_retried_with_the_same_event_id(server: RunledgerServer, api: httpx.Client,
                                                           kafka_bootstrap: str) -> None:
    _, run = new_run(api)
    proxy = ResponseDroppingProxy(server.port, drop=3)
    try:
        with MetricStream(f"http://127.0.0.1:{proxy.port}", run, max_points=1000, retries=10,
                          max_in_flight=1) as stream:
            for chunk in range(3):
                stream.log_many(["m"] * 1000, [float(chunk)] * 1000, list(range(chunk * 1000, chunk * 1000 + 1000)),
                                [TS] * 1000)
                stream.flush()
    finally:
        proxy.close()
    assert proxy.dropped == 3 and stream.retried == 3
    # The log holds every attempt the server acknowledged: the first chunk four times, always
    # under one event id (exact duplicate points would be stored once anyway, so the ids are
    # what shows the retries cannot duplicate).
    ids = [e.event_id for e in _run_events(kafka_bootstrap, server.topic, run) if e.type == "MetricsLogged"]
    assert len(ids) == 6 and [ids.count(i) for i in dict.fromkeys(ids)] == [4, 1, 1]
    wait_applied(server.url)
    points = history(server.url, run, "m")
    assert [(m["step"], m["value"]) for m in points] == [(s, float(s // 1000)) for s in range(3000)]


def _run_events(bootstrap: str, topic: str, run_id: str) -> list[Envelope]:
    events = [decode(value) for records in read_topic(bootstrap, topic).values() for _, value in records]
    return [e for e in events if e.run_id == run_id]


def test_server_killed_and_restarted_mid_stream_loses_and_duplicates_nothing(make_server: Any) -> None:
    server: RunledgerServer = make_server()
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=30) as api:
        _, run = new_run(api)
    n = 100_000
    errors: list[BaseException] = []

    def produce(stream: MetricStream) -> None:
        try:
            for i in range(0, n, 500):
                stream.log_many(["loss"] * 500, [float(s) for s in range(i, i + 500)], list(range(i, i + 500)),
                                [TS + i // 500] * 500)
                time.sleep(0.01)
        except BaseException as e:  # surfaced below
            errors.append(e)

    with MetricStream(server.url, run, max_points=2000, flush_interval=0.05, retries=40) as stream:
        producer = threading.Thread(target=produce, args=(stream,))
        producer.start()
        for delay in (0.5, 0.8):
            time.sleep(delay)
            server.kill()
            server.start()
        producer.join(180)
        assert not producer.is_alive() and not errors, errors
    assert stream.retried > 0  # the kills did hit requests
    wait_applied(server.url)
    points = history(server.url, run, "loss")
    assert len(points) == n
    assert [m["step"] for m in points] == list(range(n))
    assert all(m["value"] == m["step"] for m in points)


# ----- errors reach the caller

def test_a_4xx_is_raised_from_the_next_call(server: RunledgerServer, api: httpx.Client) -> None:
    stream = MetricStream(server.url, uuid.uuid4().hex, flush_interval=0.05)
    stream.log("m", 1.0)
    with pytest.raises(StreamError) as failure:
        stream.flush()
    assert failure.value.status_code == 404 and failure.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert failure.value.points == 1
    stream.close()  # the error was reported once; nothing else is pending

    _, run = new_run(api)
    assert api.post("runs/delete", json={"run_id": run}).status_code == 200
    stream = MetricStream(server.url, run, flush_interval=0.05)
    stream.log("m", 1.0)
    poll(lambda: stream.buffered, lambda b: b == 0, timeout=30)
    with pytest.raises(StreamError, match="INVALID_PARAMETER_VALUE"):
        stream.log("m", 2.0)  # raised before this point is taken: it is not buffered
    assert stream.buffered == 0
    stream.log("m", 3.0)
    with pytest.raises(StreamError) as failure:
        stream.close()
    assert failure.value.status_code == 400 and failure.value.points == 1


def test_points_the_server_would_refuse_are_refused_at_the_call(server: RunledgerServer, api: httpx.Client) -> None:
    _, run = new_run(api)
    with MetricStream(server.url, run) as stream:
        for bad in ({"key": "../up", "value": 1.0}, {"key": "bad key!", "value": 1.0}, {"key": "m", "value": True},
                    {"key": "m", "value": "1.0"}, {"key": "m", "value": 1.0, "step": 1.5},
                    {"key": "m", "value": 1.0, "timestamp": -1}):
            with pytest.raises(ValueError):
                stream.log(**bad)
        with pytest.raises(ValueError):
            stream.log_many(["a", "b"], [1.0], [0, 0], [TS, TS])
        stream.log("m", 1.0, timestamp=TS)
    assert len(poll(lambda: history(server.url, run, "m"), bool)) == 1


def test_the_with_block_error_wins_and_logged_points_are_still_delivered(server: RunledgerServer,
                                                                          api: httpx.Client) -> None:
    _, run = new_run(api)
    with pytest.raises(KeyError):
        with MetricStream(server.url, run) as stream:
            stream.log("m", 1.0, timestamp=TS)
            raise KeyError("training failed")
    assert len(poll(lambda: history(server.url, run, "m"), bool)) == 1
