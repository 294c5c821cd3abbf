"""The event topic must keep every event forever: created that way, and refused on start
(with the reason and the fix) when retention or compaction would remove events. Real broker."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from runledger.ingest.topic import TopicLosesEvents, ensure_topic, topic_config


def _config(bootstrap: str, topic: str) -> dict[str, str | None]:
    async def read() -> dict[str, str | None]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return await topic_config(admin, topic)
        finally:
            await admin.close()
    return asyncio.run(read())


def _create(bootstrap: str, topic: str, config: dict[str, str]) -> None:
    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 1, 1, topic_configs=config)])
        finally:
            await admin.close()
    asyncio.run(create())


def test_a_new_topic_keeps_events_forever(kafka_bootstrap: str) -> None:
    topic = f"forever-{uuid.uuid4().hex[:8]}"
    assert asyncio.run(ensure_topic(kafka_bootstrap, topic, 2)) == [0, 1]
    assert _config(kafka_bootstrap, topic) == {"retention.ms": "-1", "retention.bytes": "-1",
                                               "cleanup.policy": "delete"}


@pytest.mark.parametrize("config, reason", [
    ({"retention.ms": "604800000"}, "retention.ms=604800000"),
    ({"retention.ms": "-1", "retention.bytes": "1073741824"}, "retention.bytes=1073741824"),
    ({"retention.ms": "-1", "cleanup.policy": "compact"}, "cleanup.policy=compact"),
    ({"retention.ms": "-1", "cleanup.policy": "compact,delete"}, "cleanup.policy=compact,delete"),
])
def test_a_topic_that_loses_events_is_refused_with_the_fix(kafka_bootstrap: str, config: dict[str, str],
                                                          reason: str) -> None:
    topic = f"lossy-{uuid.uuid4().hex[:8]}"
    _create(kafka_bootstrap, topic, config)
    with pytest.raises(TopicLosesEvents) as refused:
        asyncio.run(ensure_topic(kafka_bootstrap, topic, 1))
    message = str(refused.value)
    assert reason in message and f"--entity-name {topic}" in message
    assert "retention.ms=-1,retention.bytes=-1,cleanup.policy=delete" in message


def test_the_server_refuses_to_start_on_a_topic_with_retention(kafka_bootstrap: str, make_server) -> None:  # type: ignore[no-untyped-def]
    topic = f"lossy-{uuid.uuid4().hex[:8]}"
    _create(kafka_bootstrap, topic, {"retention.ms": "86400000"})
    with pytest.raises(RuntimeError) as failed:
        make_server(topic=topic)
    assert "Refusing to use topic" in str(failed.value) and "retention.ms=86400000" in str(failed.value)
