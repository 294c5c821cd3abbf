"""A Python client for Runledger's streaming metrics endpoint (docs/streaming.md).

    from runledger.client import MetricStream

    with MetricStream("http://127.0.0.1:5000", run_id) as stream:
        for step in range(100_000):
            stream.log("loss", loss, step=step)
    # leaving the block flushed everything: every point is in Kafka (acks=all)

`log` only appends to an in-memory buffer; background threads send it in chunks (when a
chunk is full, when the oldest buffered point is `flush_interval` seconds old, or when asked
to), up to `max_in_flight` requests at once so that building the next request overlaps the
server's wait for Kafka. Chunks may therefore reach the log out of order, which changes
nothing: metric history is ordered by step and timestamp, and the latest value by its rules.
Memory is bounded: at `max_buffered_points` unacknowledged points, `log` blocks until the
server has acknowledged some (backpressure, never an unbounded queue). A chunk gets its event
id once and keeps it on every retry, and the projector applies an event id once, so a retry
after a lost response cannot store points twice. A point is acknowledged when it is in the
log; the read model shows it a little later (GET /api/runledger/v1/lag says how much later).

Errors: a 4xx answer (the run was deleted, a bad key...) cannot succeed on retry; the chunk
is dropped and a `StreamError` is raised from the next `log`/`log_many`/`flush`/`close` call.
5xx answers and connection errors are retried with exponential backoff, up to `retries`
times, after which the chunk is dropped and reported the same way.
"""

from __future__ import annotations

import math
import operator
import random
import os
import threading
import time
import uuid
from types import TracebackType
from typing import Any, Callable, Iterable, Protocol

import httpx
import orjson

from runledger.client import limits
from runledger.client.limits import MAX_EVENT_POINTS, STREAM_PATH

# A chunk's body stays well below the endpoint's body cap whatever the key lengths.
MAX_CHUNK_BYTES = limits.MAX_STREAM_BODY_BYTES // 4
MAX_CHUNK_POINTS = limits.MAX_STREAM_REQUEST_POINTS
_RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))
_BACKOFF_BASE_S = 0.25
_BACKOFF_MAX_S = 8.0
_INF = math.inf
_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1


class StreamError(Exception):
    """Points the server refused (4xx) or that could not be delivered within the retries.

    `points` is how many logged points were dropped; `status_code` and `error_code` are the
    server's answer (None after connection errors).
    """

    def __init__(self, message: str, *, points: int, status_code: int | None = None,
                 error_code: str | None = None) -> None:
        super().__init__(message)
        self.points = points
        self.status_code = status_code
        self.error_code = error_code


class MetricStream:
    """Buffers metric points for one run and streams them to Runledger. Thread-safe."""

    def __init__(self, base_url: str | None, run_id: str, *, max_points: int = 50_000, flush_interval: float = 0.5,
                 max_buffered_points: int = 1_000_000, timeout: float = 30, retries: int = 5,
                 max_in_flight: int = 2, headers: dict[str, str] | None = None,
                 bootstrap_servers: str | None = None, topic: str = "runledger.events", user: str | None = None,
                 token: str | None = None) -> None:
        if not run_id:
            raise ValueError("run_id is required")
        if (base_url is None) == (bootstrap_servers is None):
            raise ValueError("give either base_url (through the server) or bootstrap_servers (straight to Kafka)")
        # Straight to Kafka, a chunk is one event, which must stay within the topic's message size.
        max_chunk = MAX_CHUNK_POINTS if bootstrap_servers is None else MAX_EVENT_POINTS
        if not 1 <= max_points <= max_chunk:
            raise ValueError(f"max_points must be between 1 and {max_chunk}")
        if max_buffered_points < 1 or flush_interval <= 0 or retries < 0 or max_in_flight < 1:
            raise ValueError("max_buffered_points, flush_interval and max_in_flight must be positive, "
                             "retries non-negative")
        self.run_id = run_id
        self.max_points = max_points
        self.flush_interval = flush_interval
        self.max_buffered_points = max_buffered_points
        self.retries = retries
        self._transport: _Transport
        if bootstrap_servers is not None:
            try:  # the server's event encoder and aiokafka, only when asked for
                from runledger.kafka_transport import KafkaTransport
            except ImportError as e:
                raise ImportError("MetricStream(bootstrap_servers=...) produces the server's own events and needs "
                                  "the server distribution (runledger-server) installed too") from e

            self._transport = KafkaTransport(bootstrap_servers, topic, timeout, user)
        else:
            assert base_url is not None
            # A server with authentication on (the server's docs/auth.md) takes an API token as
            # Bearer: `token`, else RUNLEDGER_TOKEN or MLFLOW_TRACKING_TOKEN from the environment.
            token = token or os.environ.get("RUNLEDGER_TOKEN") or os.environ.get("MLFLOW_TRACKING_TOKEN")
            if token and not any(k.lower() == "authorization" for k in (headers or {})):
                headers = {**(headers or {}), "Authorization": f"Bearer {token}"}
            self._transport = _HttpTransport(base_url, timeout, headers)
        self._cv = threading.Condition(threading.Lock())  # never re-entered; cheaper than an RLock
        # Points logged but not yet taken by the sender, as columns.
        self._keys: list[str] = []
        self._values: list[float | None] = []
        self._timestamps: list[int] = []
        self._steps: list[int] = []
        # Points are numbered in log order over the whole life of the stream. Senders take
        # chunks in that order: [0, sent) has been taken, and of those the chunks still in
        # flight are {start: size}; everything before the smallest start is acknowledged (or
        # reported as dropped). `resolved` counts acknowledged points, for the memory bound.
        self._logged = 0
        self._sent = 0
        self._resolved = 0
        self._in_flight: dict[int, int] = {}
        self._flush_upto = 0      # flush() wants everything up to here sent now
        self._space_waiters = 0   # log calls blocked on a full buffer: send without waiting
        self._oldest_at = 0.0     # monotonic time the oldest unsent point was logged
        self._closing = False
        self._errors: list[StreamError] = []
        self._known_keys: set[str] = set()
        self._max_key_bytes = 0
        self._chunk_limit = max_points
        self.high_water = 0       # the most points ever buffered at once (<= max_buffered_points)
        self.retried = 0          # requests sent again after a 5xx or a connection error
        self._threads = [threading.Thread(target=self._run, name=f"runledger-stream-{run_id[:8]}-{i}", daemon=True)
                         for i in range(max_in_flight)]
        for t in self._threads:
            t.start()

    # ----- the caller's side
    @property
    def buffered(self) -> int:
        """Points logged but not yet acknowledged by the server (or reported as dropped)."""
        with self._cv:
            return self._logged - self._resolved

    def log(self, key: str, value: float | None, step: int = 0, timestamp: int | None = None) -> None:
        """Buffer one point; `timestamp` defaults to now (Unix ms); None or NaN value is NaN.
        Raises ValueError for a point the server would refuse, before buffering it."""
        # The per-point path of a training loop: plain ints and floats take the short branches.
        if key.__class__ is not str or key not in self._known_keys:
            self._check_key(key)
        value = _float(value)
        timestamp = _now_ms() if timestamp is None else _timestamp(timestamp)
        if step.__class__ is not int or not _INT64_MIN <= step <= _INT64_MAX:
            step = _int(step, "step")
        with self._cv:
            if self._errors:
                self._raise_errors()
            if self._closing or self._logged - self._resolved >= self.max_buffered_points:
                self._wait_for_space(1)
            self._keys.append(key)
            self._values.append(value)
            self._timestamps.append(timestamp)
            self._steps.append(step)
            self._added(1)

    def log_many(self, keys: Iterable[str], values: Iterable[float | None], steps: Iterable[int] | None = None,
                 timestamps: Iterable[int] | None = None) -> None:
        """Buffer many points given as columns (steps default to 0, timestamps to now)."""
        keys, values = list(keys), list(values)
        n = len(keys)
        steps = [0] * n if steps is None else list(steps)
        timestamps = [_now_ms()] * n if timestamps is None else list(timestamps)
        if not len(values) == len(steps) == len(timestamps) == n:
            raise ValueError("keys, values, steps and timestamps must have the same length")
        try:
            distinct = set(keys)
        except TypeError:
            raise ValueError("metric keys must be strings") from None
        for k in distinct:
            self._check_key(k)
        values = _floats(values)
        steps = _ints(steps, "step")
        timestamps = _ints(timestamps, "timestamp")
        if timestamps and min(timestamps) < 0:
            raise ValueError("timestamps must be non-negative")
        done = 0
        with self._cv:
            self._raise_errors()
            while done < n:
                # Take what fits: a call larger than the whole buffer is taken in parts.
                room = self._wait_for_space(min(n - done, self.max_buffered_points))
                part = slice(done, done + room)
                self._keys += keys[part]
                self._values += values[part]
                self._timestamps += timestamps[part]
                self._steps += steps[part]
                self._added(room)
                done += room

    def flush(self) -> None:
        """Block until every point logged so far is acknowledged; raise what was dropped."""
        with self._cv:
            target = self._logged
            self._flush_upto = max(self._flush_upto, target)
            self._cv.notify_all()
            while self._done_upto() < target:
                self._cv.wait()
            self._raise_errors()

    def close(self) -> None:
        """Flush, stop the sender and release the connection. Calling it again does nothing."""
        with self._cv:
            if self._closing:
                return
            self._closing = True
            self._cv.notify_all()
        for t in self._threads:
            t.join()
        self._transport.close()
        with self._cv:
            self._raise_errors()

    def __enter__(self) -> "MetricStream":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
            return
        # The block already failed: still deliver what was logged, but let its error win.
        try:
            self.close()
        except StreamError:
            pass

    # ----- buffer bookkeeping (called with self._cv held)
    def _raise_errors(self) -> None:
        if self._errors:
            errors, self._errors = self._errors, []
            if len(errors) > 1:
                first = errors[0]
                raise StreamError(f"{first} (and {len(errors) - 1} more failed chunks)",
                                  points=sum(e.points for e in errors), status_code=first.status_code,
                                  error_code=first.error_code)
            raise errors[0]

    def _done_upto(self) -> int:
        """Every point numbered below this is acknowledged or reported as dropped."""
        return min(self._in_flight) if self._in_flight else self._sent

    def _wait_for_space(self, wanted: int) -> int:
        """Block until the buffer has room, then return how many of `wanted` points fit."""
        if self._closing:
            raise RuntimeError("the stream is closed")
        while self._logged - self._resolved >= self.max_buffered_points:
            self._space_waiters += 1
            self._cv.notify_all()
            try:
                self._cv.wait()
            finally:
                self._space_waiters -= 1
            if self._closing:
                raise RuntimeError("the stream is closed")
        return min(wanted, self.max_buffered_points - (self._logged - self._resolved))

    def _added(self, n: int) -> None:
        self._logged += n
        buffered = self._logged - self._resolved
        if buffered > self.high_water:
            self.high_water = buffered
        pending = self._logged - self._sent
        # Wake a sender only on the transitions that concern it, not on every point.
        if pending == n:
            self._oldest_at = time.monotonic()
            self._cv.notify_all()
        elif pending >= self._chunk_limit > pending - n:
            self._cv.notify_all()

    def _check_key(self, key: Any) -> None:
        if not isinstance(key, str):
            raise ValueError(f"metric key must be a string, got {type(key).__name__}")
        if key in self._known_keys:
            return
        problem = limits.key_problem(key)
        if problem is not None:
            raise ValueError(f"Invalid metric key {key!r}: {problem}")
        with self._cv:
            self._known_keys.add(key)
            # A chunk stays near MAX_CHUNK_BYTES whatever the keys: long keys, fewer points.
            self._max_key_bytes = max(self._max_key_bytes, len(key.encode()))
            by_bytes = MAX_CHUNK_BYTES // (self._max_key_bytes + limits.POINT_BYTES_BESIDES_KEY)
            self._chunk_limit = max(1, min(self.max_points, by_bytes))

    # ----- the sender thread
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._due():
                    if self._closing and self._logged == self._sent:
                        return
                    wait = None if self._logged == self._sent else \
                        max(0.0, self._oldest_at + self.flush_interval - time.monotonic())
                    self._cv.wait(wait)
                start, chunk = self._sent, self._take_chunk()
                self._in_flight[start] = len(chunk[0])
            try:
                error = self._send(chunk)
            except Exception as e:  # a dead sender would leave flush() waiting forever
                error = StreamError(f"{len(chunk[0])} points not sent: {e!r}", points=len(chunk[0]))
            with self._cv:
                if error is not None:
                    self._errors.append(error)
                del self._in_flight[start]
                self._resolved += len(chunk[0])
                self._cv.notify_all()

    def _due(self) -> bool:
        pending = self._logged - self._sent
        if pending == 0:
            return False
        return (pending >= self._chunk_limit or self._closing or self._space_waiters > 0
                or self._flush_upto > self._sent
                or time.monotonic() - self._oldest_at >= self.flush_interval)

    def _take_chunk(self) -> tuple[list[str], list[float | None], list[int], list[int]]:
        n = min(self._chunk_limit, self._logged - self._sent)
        if n == len(self._keys):
            chunk = (self._keys, self._values, self._timestamps, self._steps)
            self._keys, self._values, self._timestamps, self._steps = [], [], [], []
        else:
            chunk = (self._keys[:n], self._values[:n], self._timestamps[:n], self._steps[:n])
            del self._keys[:n], self._values[:n], self._timestamps[:n], self._steps[:n]
            self._oldest_at = time.monotonic()  # the rest waits at most one more interval
        self._sent += n
        return chunk

    def _send(self, chunk: tuple[list[str], list[float | None], list[int], list[int]]) -> StreamError | None:
        """Deliver one chunk, retrying with the same event id; return the error if it is dropped."""
        event_id = uuid.uuid4().hex  # chosen once: every retry of this chunk carries it
        attempt = self._transport.prepare(self.run_id, event_id, chunk)
        points = len(chunk[0])
        why = ""
        for n in range(self.retries + 1):
            if n:
                with self._cv:
                    self.retried += 1
                delay = min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * 2 ** (n - 1))
                time.sleep(delay * random.uniform(0.5, 1.0))  # jitter: restarted servers see no herd
            outcome = attempt()
            if outcome is None or isinstance(outcome, StreamError):
                return outcome
            why = outcome
        return StreamError(f"{points} points not delivered after {self.retries + 1} attempts; last: {why}",
                           points=points)


# One delivery attempt: None when delivered, a StreamError when it can never succeed, or the
# reason it may succeed on a retry.
Attempt = Callable[[], "StreamError | str | None"]


class _Transport(Protocol):
    def prepare(self, run_id: str, event_id: str,
                chunk: tuple[list[str], list[float | None], list[int], list[int]]) -> Attempt: ...

    def close(self) -> None: ...


class _HttpTransport:
    """Through the server's stream endpoint, which checks the run before appending."""

    def __init__(self, base_url: str, timeout: float, headers: dict[str, str] | None) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout,
                                  headers={"content-type": "application/json", **(headers or {})})

    def prepare(self, run_id: str, event_id: str,
                chunk: tuple[list[str], list[float | None], list[int], list[int]]) -> Attempt:
        keys, values, timestamps, steps = chunk
        body = orjson.dumps({"run_id": run_id, "event_id": event_id, "keys": keys, "values": values,
                             "timestamps": timestamps, "steps": steps})

        def attempt() -> StreamError | str | None:
            try:
                r = self._http.post(STREAM_PATH, content=body)
            except httpx.TransportError as e:  # refused, reset, timed out: the answer may be lost
                return f"{type(e).__name__}: {e}"
            if r.status_code < 300:
                return None
            error_code, message = _error_of(r)
            if r.status_code not in _RETRYABLE_STATUS:
                return StreamError(f"{len(keys)} points refused: {r.status_code} {error_code}: {message}",
                                   points=len(keys), status_code=r.status_code, error_code=error_code)
            return f"{r.status_code} {error_code}: {message}"
        return attempt

    def close(self) -> None:
        self._http.close()


def _error_of(r: httpx.Response) -> tuple[str | None, str]:
    try:
        doc = r.json()
        return doc.get("error_code"), str(doc.get("message", ""))
    except ValueError:
        return None, r.text[:500]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _float(value: Any) -> float | None:
    """A metric value as the server stores it: NaN as None (JSON null), infinities clamped
    (orjson would otherwise write them as null, which means NaN)."""
    if value.__class__ is float and value == value and value != _INF and value != -_INF:
        return value
    if value is None:
        return None
    if isinstance(value, (bool, str, bytes)):  # float("1.5") would pass; the server refuses strings
        raise ValueError(f"metric value must be a number, got {type(value).__name__}")
    try:
        v = float(value)  # numpy and torch scalars too
    except (TypeError, ValueError):
        raise ValueError(f"metric value must be a number, got {type(value).__name__}") from None
    if v != v:
        return None
    if v == _INF or v == -_INF:
        return limits.clamp_metric_value(v)
    return v


def _floats(values: list[Any]) -> list[float | None]:
    types = set(map(type, values))
    if types <= {float, type(None)} and not any(map(math.isinf, filter(None, values))):
        return [None if v != v else v for v in values] if any(v != v for v in values) else values
    return [_float(v) for v in values]


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got bool")
    try:
        v = operator.index(value)  # int, numpy integers; not floats
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {type(value).__name__}") from None
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise ValueError(f"{what} {v} is out of range for a 64-bit integer")
    return v


def _ints(values: list[Any], what: str) -> list[int]:
    if set(map(type, values)) <= {int}:
        if values and (min(values) < _INT64_MIN or max(values) > _INT64_MAX):
            raise ValueError(f"a {what} is out of range for a 64-bit integer")
        return values
    return [_int(v, what) for v in values]


def _timestamp(value: int | None) -> int:
    if value is None:
        return _now_ms()
    ts = _int(value, "timestamp")
    if ts < 0:
        raise ValueError("timestamp must be non-negative")
    return ts
