"""aiokafka adapter: append events to the log with acks=all and an idempotent producer."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from runledger.ingest.contract.codec import encode
from runledger.ingest.errors import LogUnavailable
from runledger.ingest.contract.events import Envelope

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 16 * 1024 * 1024


class EventLog:
    """Appends envelopes to `topic`, keyed so that each run's (or the catalog's) events stay in order."""

    def __init__(self, bootstrap_servers: str, topic: str, send_timeout: float = 30.0) -> None:
        self.topic = topic
        self.send_timeout = send_timeout
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            enable_idempotence=True,  # implies acks=all; broker-side dedupe of producer retries
            linger_ms=0,
            max_request_size=MAX_EVENT_BYTES,
            request_timeout_ms=int(send_timeout * 1000),
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def append(self, events: list[Envelope]) -> list[tuple[int, int]]:
        """Return (partition, offset) of each event once Kafka has acknowledged every one;
        raise LogUnavailable otherwise.

        Events sent in one call keep their order within a partition (same producer, same key).
        """
        if sum(_point_count(e) for e in events) >= _ENCODE_OFF_LOOP_POINTS:
            # Turning many points into Arrow takes milliseconds; the event loop serves every
            # other request meanwhile.
            records = await asyncio.to_thread(lambda: [encode(e) for e in events])
        else:
            records = [encode(e) for e in events]
        try:
            futures = [await self._producer.send(self.topic, raw, key=e.partition_key)
                       for e, raw in zip(events, records)]
            acks = await asyncio.wait_for(asyncio.gather(*futures), self.send_timeout)
            return [(a.partition, a.offset) for a in acks]
        except (KafkaError, asyncio.TimeoutError) as e:
            log.warning("append to %s failed: %r", self.topic, e)
            raise LogUnavailable(f"The event log (Kafka) did not acknowledge the write: {e!r}. "
                                 "Nothing was acknowledged; retrying is safe.") from e


# Events carrying at least this many points in all are encoded on a worker thread.
_ENCODE_OFF_LOOP_POINTS = 5000


def _point_count(event: Envelope) -> int:
    cols = event.payload if event.type == "MetricsLogged" else event.payload.get("metrics")
    if not isinstance(cols, dict):
        return 0
    if "points_table" in cols:
        return cols["points_table"].num_rows
    keys = cols.get("keys")
    return len(keys) if isinstance(keys, list) else 0
