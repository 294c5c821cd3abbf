"""aiokafka adapter: append events to the log with acks=all and an idempotent producer.

An idempotent producer numbers its batches per partition, and the broker accepts them only in
order. When a batch it had already numbered is given up (the broker was away longer than the
send timeout), the numbering has a gap and every later batch is refused with
OutOfOrderSequenceNumber; the producer cannot recover by itself. So any failed append retires
the producer and the next append starts a fresh one (a new producer id, numbering from zero).
Exactly-once effect does not rest on the producer alone: every event carries an id and the
fold applies an id once (docs/design.md, invariant 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from runledger.ingest.contract.codec import encode
from runledger.ingest.contract.events import Envelope
from runledger.ingest.errors import LogUnavailable, LogUnreachable

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 16 * 1024 * 1024


class EventLog:
    """Appends envelopes to `topic`, keyed so that each run's (or the catalog's) events stay in order."""

    def __init__(self, bootstrap_servers: str, topic: str, send_timeout: float = 30.0) -> None:
        self.topic = topic
        self.send_timeout = send_timeout
        self.bootstrap_servers = bootstrap_servers
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            enable_idempotence=True,  # implies acks=all; broker-side dedupe of producer retries
            linger_ms=0,
            max_request_size=MAX_EVENT_BYTES,
            request_timeout_ms=int(self.send_timeout * 1000),
        )

    async def start(self) -> None:
        await self._current(self.send_timeout * 3)

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            self._retire(producer)
        if self._retiring:
            await asyncio.wait(set(self._retiring), timeout=self.send_timeout + 5)

    async def _current(self, timeout: float) -> AIOKafkaProducer:
        """The producer in use, starting a new one if the last was retired."""
        async with self._starting:
            if self._producer is None:
                producer = self._new_producer()
                try:
                    await asyncio.wait_for(producer.start(), timeout)
                except BaseException:
                    self._retire(producer)
                    raise
                self._producer = producer
            return self._producer

    def _retire(self, producer: AIOKafkaProducer) -> None:
        """Stop using `producer`; close it in the background. Whatever it still holds may
        reach the log late: the fold refuses events past their deadline."""
        if self._producer is producer:
            self._producer = None
        task = asyncio.get_running_loop().create_task(self._close(producer))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _close(self, producer: AIOKafkaProducer) -> None:
        try:
            # stop() flushes; a broker that stays away would keep it waiting forever.
            await asyncio.wait_for(producer.stop(), self.send_timeout)
        except (KafkaError, asyncio.TimeoutError, OSError) as e:
            log.info("retired producer did not close cleanly: %r", e)
            sender = getattr(producer, "_sender", None)  # aiokafka has no public abort
            with contextlib.suppress(Exception):
                if sender is not None:
                    await sender.close()
                await producer.client.close()

    async def append(self, events: list[Envelope], timeout: float | None = None) -> list[tuple[int, int]]:
        """Return (partition, offset) of each event once Kafka has acknowledged every one
        within `timeout` seconds (default: the send timeout); raise LogUnavailable otherwise.

        Events sent in one call keep their order within a partition (same producer, same key).
        """
        return [(p, o) for p, o, _ in await self.append_stamped(events, timeout)]

    async def append_stamped(self, events: list[Envelope], timeout: float | None = None
                             ) -> list[tuple[int, int, int | None]]:
        """Like `append`, with each record's broker append time (Unix ms) when the topic
        stamps one (LogAppendTime), else None."""
        timeout = self.send_timeout if timeout is None else timeout
        if sum(_point_count(e) for e in events) >= _ENCODE_OFF_LOOP_POINTS:
            # Turning many points into Arrow takes milliseconds; the event loop serves every
            # other request meanwhile.
            records = await asyncio.to_thread(lambda: [encode(e) for e in events])
        else:
            records = [encode(e) for e in events]
        # One deadline for every step, without a task per step (asyncio.timeout, not wait_for):
        # when all is well none of them suspends for long.
        until = asyncio.get_running_loop().time() + timeout
        producer = None
        try:
            async with asyncio.timeout_at(until):
                producer = self._producer or await self._current(timeout)
                if not await self._leaders_reachable(producer, events):
                    raise LogUnreachable("no connection to the broker leading the events' partitions")
        except (KafkaError, TimeoutError, OSError, LogUnreachable) as e:
            log.warning("append to %s failed before sending: %r", self.topic, e)
            if producer is not None:
                self._retire(producer)
            raise LogUnreachable(f"The event log (Kafka) cannot be reached: {e!r}. Nothing was sent.") from e
        try:
            async with asyncio.timeout_at(until):
                futures = [await producer.send(self.topic, raw, key=e.partition_key) for e, raw in zip(events, records)]
                acks = await asyncio.gather(*futures)
            return [(a.partition, a.offset, a.timestamp if a.timestamp_type == _LOG_APPEND_TIME else None) for a in acks]
        except (KafkaError, TimeoutError, OSError) as e:
            log.warning("append to %s failed: %r", self.topic, e)
            if producer is not None:
                self._retire(producer)
            raise LogUnavailable(f"The event log (Kafka) did not acknowledge the write: {e!r}.") from e

    async def _leaders_reachable(self, producer: AIOKafkaProducer, events: list[Envelope]) -> bool:
        """False only when a broker that would take some of `events` certainly cannot be
        connected to now, so that handing them over is skipped and the caller knows for sure
        nothing was sent. Unknown metadata counts as reachable (the producer will find out)."""
        cluster = producer.client.cluster
        partitions = cluster.partitions_for_topic(self.topic)
        if not partitions:
            return True
        ordered, available = sorted(partitions), list(cluster.available_partitions_for_topic(self.topic) or ())
        leaders = {cluster.leader_for_partition(TopicPartition(self.topic, _PARTITIONER(e.partition_key, ordered,
                                                                                         available)))
                   for e in events}
        for leader in leaders - {None, -1}:
            if not await producer.client.ready(leader):
                return False
        return True


# The producer's own choice of partition for a key (murmur2), to know which broker takes an event.
_PARTITIONER = DefaultPartitioner()

# Kafka's record timestamp type for a broker-stamped append time.
_LOG_APPEND_TIME = 1

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
