"""Creating the event topic: the log is forever, so nothing may expire it."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from runledger.ingest.producer import MAX_EVENT_BYTES

log = logging.getLogger(__name__)

TOPIC_CONFIG = {
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "max.message.bytes": str(MAX_EVENT_BYTES),
}


async def ensure_topic(bootstrap_servers: str, topic: str, partitions: int) -> list[int]:
    """Create `topic` with `partitions` partitions unless it exists (an existing one is kept as
    is); return its partition numbers once the broker's metadata lists them (bounded wait)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            try:
                await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=TOPIC_CONFIG)])
                log.info("created topic %s with %d partitions", topic, partitions)
            except TopicAlreadyExistsError:
                pass
        for _ in range(100):
            for t in await admin.describe_topics([topic]):
                found = sorted(p["partition"] for p in t.get("partitions") or [])
                if t.get("topic") == topic and found and not t.get("error_code"):
                    return found
            await asyncio.sleep(0.1)
        raise RuntimeError(f"topic {topic!r} has no partitions in the broker's metadata after 10s")
    finally:
        await admin.close()
