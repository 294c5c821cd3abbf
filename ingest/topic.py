"""Creating the event topic: the log is forever, so nothing may expire it.

Records are stamped by the broker with their append time (LogAppendTime): the fold compares
that stamp with each event's deadline, so whether a write counts depends only on the log
(docs/design.md, invariants 2 and 14). A topic created before that setting existed is switched on
start; records already in it keep their producer timestamps and carry no deadline.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.protocol.metadata import MetadataRequest

from runledger.ingest.producer import MAX_EVENT_BYTES

log = logging.getLogger(__name__)

TOPIC_CONFIG = {
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "cleanup.policy": "delete",
    "max.message.bytes": str(MAX_EVENT_BYTES),
    "message.timestamp.type": "LogAppendTime",
}
_TIMESTAMP_TYPE = "message.timestamp.type"
_DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs' config_source for a setting made on the topic itself


async def ensure_topic(bootstrap_servers: str, topic: str, partitions: int) -> list[int]:
    """Create `topic` with `partitions` partitions unless it exists (an existing one is kept as
    is); return its partition numbers once the broker's metadata lists them (bounded wait)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            replicas, config = replication_for(len((await admin.describe_cluster())["brokers"]))
            try:
                await admin.create_topics([NewTopic(topic, partitions, replicas, topic_configs=config)])
                log.info("created topic %s with %d partitions, %d replicas each", topic, partitions, replicas)
            except TopicAlreadyExistsError:
                pass
        for _ in range(100):
            for t in await admin.describe_topics([topic]):
                found = sorted(p["partition"] for p in t.get("partitions") or [])
                if t.get("topic") == topic and found and not t.get("error_code"):
                    # Refused before anything of it is changed.
                    check_forever(topic, await topic_config(admin, topic), bootstrap_servers)
                    await _stamp_append_time(admin, topic)
                    return found
            await asyncio.sleep(0.1)
        raise RuntimeError(f"topic {topic!r} has no partitions in the broker's metadata after 10s")
    finally:
        await admin.close()


def replication_for(brokers: int) -> tuple[int, dict[str, str]]:
    """Replicas per partition and the topic's settings for a cluster of `brokers`: three copies
    when there are three brokers or more, and an append counts (acks=all) only once two of them
    have it, so one broker can die without losing an acknowledged event or stopping writes."""
    replicas = max(1, min(3, brokers))
    if replicas >= 3:
        return replicas, {**TOPIC_CONFIG, "min.insync.replicas": "2"}
    return replicas, dict(TOPIC_CONFIG)


async def _stamp_append_time(admin: AIOKafkaAdminClient, topic: str) -> None:
    """Make the broker stamp `topic`'s records with their append time, keeping the topic's
    other own settings: the AlterConfigs request aiokafka offers replaces the whole set."""
    [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    error_code, message, _, _, entries = response.resources[0]
    if error_code or response.API_VERSION < 1:
        log.error("cannot read the settings of topic %s (%s %s): late writes cannot be told apart, "
                  "set %s=LogAppendTime on it by hand", topic, error_code, message, _TIMESTAMP_TYPE)
        return
    own = {e[0]: e[1] for e in entries if e[3] == _DYNAMIC_TOPIC_CONFIG}
    if own.get(_TIMESTAMP_TYPE) == "LogAppendTime":
        return
    if any(e[3] == _DYNAMIC_TOPIC_CONFIG and e[4] for e in entries):
        log.error("topic %s has secret settings that cannot be carried over: set %s=LogAppendTime on it by hand",
                  topic, _TIMESTAMP_TYPE)
        return
    [altered] = await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                          configs={**own, _TIMESTAMP_TYPE: "LogAppendTime"})])
    error_code, message, *_ = altered.resources[0]
    if error_code:
        log.error("cannot set %s=LogAppendTime on topic %s (%s %s): late writes cannot be told apart",
                  _TIMESTAMP_TYPE, topic, error_code, message)
    else:
        log.info("topic %s now stamps records with the broker's append time", topic)
class TopicLosesEvents(RuntimeError):
    """The event topic is configured to delete or compact events: the log would stop being the truth."""


async def topic_config(admin: AIOKafkaAdminClient, topic: str) -> dict[str, str | None]:
    """The topic's effective settings that decide whether records are ever removed."""
    wanted = {"retention.ms": None, "retention.bytes": None, "cleanup.policy": None}
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, dict(wanted))])
    for response in responses:
        for resource in response.resources:
            error_code, error_message, _, name, entries = resource[:5]
            if error_code:
                raise RuntimeError(f"cannot read the settings of topic {topic!r}: {error_message} ({error_code})")
            if name == topic:
                for entry in entries:
                    if entry[0] in wanted:
                        wanted[entry[0]] = entry[1]
    return wanted


def check_forever(topic: str, config: dict[str, str | None], bootstrap_servers: str) -> None:
    """Refuse a topic that would lose events (docs/design.md, invariants 1 and 7), saying how to fix it."""
    problems = []
    if config.get("retention.ms") not in ("-1", None):
        problems.append(f"retention.ms={config['retention.ms']} deletes events older than that")
    if config.get("retention.bytes") not in ("-1", None):
        problems.append(f"retention.bytes={config['retention.bytes']} deletes the oldest events past that size")
    policy = {p.strip() for p in (config.get("cleanup.policy") or "delete").split(",")}
    if "compact" in policy:
        problems.append(f"cleanup.policy={config['cleanup.policy']} keeps only the last event per key "
                        "(a run's earlier events would vanish)")
    if problems:
        raise TopicLosesEvents(
            f"Refusing to use topic {topic!r}: " + "; ".join(problems) + ". Runledger's read model, audit trail and "
            "replays are folded from the whole log, so no event may ever expire. Fix it with: kafka-configs.sh "
            f"--bootstrap-server {bootstrap_servers} --alter --entity-type topics --entity-name {topic} "
            "--add-config retention.ms=-1,retention.bytes=-1,cleanup.policy=delete "
            "(events already deleted are gone: replay cannot bring them back).")


async def existing_partitions(bootstrap_servers: str, topic: str) -> list[int] | None:
    """The partitions of `topic`, or None if it does not exist (nothing is created)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return None
        for t in await admin.describe_topics([topic]):
            if t.get("topic") == topic and not t.get("error_code"):
                return sorted(p["partition"] for p in t.get("partitions") or [])
        return None
    finally:
        await admin.close()


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[int] | None:
    """The partitions of `topic`, or None if it does not exist (nothing is created), asked over a
    started consumer's own connection in one metadata request naming only this topic.

    `existing_partitions` lists every topic of the cluster first (as a metadata request for a
    topic that does not exist creates it on brokers with auto.create.topics.enable), on a
    connection of its own: against a broker holding ~1,400 topics that took 0.15-0.3 s of a
    replay's start, most of it decoding the listing in Python. This request says
    allow_auto_topic_creation=false instead (Metadata v4+, Kafka 1.0 and later)."""
    client = consumer._client  # noqa: SLF001 - aiokafka's consumer has no public call for one topic's metadata
    answer = (await client.send(client.get_random_node(),
                                MetadataRequest([topic], allow_auto_topic_creation=False))).to_object()
    for t in answer["topics"]:
        if t.get("topic") == topic and not t.get("error_code"):
            return sorted(p["partition"] for p in t.get("partitions") or [])
    return None
