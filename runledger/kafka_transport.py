"""MetricStream straight to Kafka (`MetricStream(None, run_id, bootstrap_servers=...)`).

A chunk becomes the MetricsLogged event the server's stream endpoint would have appended (same
event id scheme, same encoding, same partition key), produced with the server's own producer
settings (idempotent, acks=all). What the server checks before appending (the run exists and
is active, its experiment is not deleted) is then only checked by the projector: points it
refuses are listed under GET /api/runledger/v1/rejections. And nothing holds the writer back
when the projector falls behind (the server's streaming backpressure): the log absorbs it.

aiokafka is asyncio-only; MetricStream's senders are threads, so the producer lives on an
event loop of its own in a background thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import getpass
import threading
from typing import Any, Callable

from runledger.ingest.errors import LogUnavailable
from runledger.ingest.contract.events import Envelope
from runledger.ingest.producer import EventLog
from runledger.ingest.writer import now_ms


class KafkaTransport:
    def __init__(self, bootstrap_servers: str, topic: str, timeout: float, user: str | None) -> None:
        self.topic = topic
        self.timeout = timeout
        self.user = user if user is not None else _login()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="runledger-stream-kafka", daemon=True)
        self._thread.start()
        async def started() -> EventLog:
            log = EventLog(bootstrap_servers, topic, send_timeout=timeout)  # binds to the running loop
            await log.start()
            return log
        try:
            self._log: EventLog = self._call(started())
        except BaseException:
            self._stop_loop()
            raise

    def prepare(self, run_id: str, event_id: str,
                chunk: tuple[list[str], list[float | None], list[int], list[int]]) -> Callable[[], str | None]:
        keys, values, timestamps, steps = chunk
        # The id the stream endpoint gives a one-event request (runledger.dialects.native.stream.log_event_ids).
        event = Envelope(event_id=f"{run_id}:{event_id}", type="MetricsLogged", experiment_id=None,
                         run_id=run_id, ingest_time=now_ms(), user=self.user,
                         payload={"keys": keys, "values": values, "timestamps": timestamps, "steps": steps})

        def attempt() -> str | None:
            try:
                self._call(self._log.append([event]))
            except (LogUnavailable, concurrent.futures.TimeoutError) as e:
                return f"{type(e).__name__}: {e}"
            return None
        return attempt

    def close(self) -> None:
        try:
            self._call(self._log.stop())
        finally:
            self._stop_loop()

    def _call(self, coro: Any) -> Any:
        # The producer's own send timeout ends a stuck append first; this bound is a backstop.
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout * 2 + 5)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return ""
