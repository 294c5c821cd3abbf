"""The event topic stamps records with the broker's append time (the fold's deadline check
needs it): a new topic is created that way, and an existing one is switched on start without
losing its other settings. Real broker."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from runledger.ingest.topic import ensure_topic


async def _own_settings(admin: AIOKafkaAdminClient, topic: str) -> dict[str, str]:
    [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    return {e[0]: e[1] for e in response.resources[0][4] if e[3] == 1}  # set on the topic itself


def test_new_and_existing_topics_stamp_the_append_time(kafka_bootstrap: str) -> None:
    async def check() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            new = f"test-ts-new-{uuid.uuid4().hex[:8]}"
            assert await ensure_topic(kafka_bootstrap, new, 2) == [0, 1]
            assert (await _own_settings(admin, new))["message.timestamp.type"] == "LogAppendTime"

            old = f"test-ts-old-{uuid.uuid4().hex[:8]}"
            await admin.create_topics([NewTopic(old, 1, 1, topic_configs={
                "retention.ms": "-1", "max.message.bytes": "1234567", "message.timestamp.type": "CreateTime"})])
            assert await ensure_topic(kafka_bootstrap, old, 4) == [0]  # an existing topic keeps its partitions
            for _ in range(50):  # the broker applies a change the controller accepted shortly after
                settings = await _own_settings(admin, old)
                if settings["message.timestamp.type"] == "LogAppendTime":
                    break
                await asyncio.sleep(0.1)
            assert settings["message.timestamp.type"] == "LogAppendTime"
            assert settings["retention.ms"] == "-1" and settings["max.message.bytes"] == "1234567"
        finally:
            await admin.close()

    asyncio.run(check())
