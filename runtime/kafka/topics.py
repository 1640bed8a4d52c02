"""Topic bootstrap: create the catalogue's topics and record their priority as Kafka-side metadata."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from streamforge.engine.topics import TOPIC_METADATA_TOPIC, TOPICS, TopicSpec
from streamforge.runtime.kafka.access import KafkaAccess


async def create_topics(
    kafka: KafkaAccess, topics: Sequence[NewTopic], timeout_s: float = 30.0, reconfigure: bool = False, **client: Any
) -> list[str]:
    """Create the missing ones of `topics` and wait until every partition has a leader. Returns those created.
    `reconfigure`: a topic that exists already gets the configs given here (all of them: a config not named
    returns to the broker's default), e.g. what an older release created differently.
    `client`: the admin client's settings, e.g. security options for another cluster than `kafka`'s login."""
    admin = AIOKafkaAdminClient(**{**kafka.client_options(), **client})
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        created = []
        if reconfigure:
            await _set_configs(admin, [topic for topic in topics if topic.name in existing])
        for topic in topics:  # one by one: a topic another process just made is not an error
            if topic.name in existing:
                continue
            try:
                await admin.create_topics([topic])
            except TopicAlreadyExistsError:
                continue
            created.append(topic.name)
        deadline = time.monotonic() + timeout_s
        while created:
            described = await admin.describe_topics(created)
            if all(t["error_code"] == 0 and all(p["leader"] >= 0 for p in t["partitions"]) for t in described):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {created} have no partition leaders after {timeout_s:.0f}s")
            await asyncio.sleep(0.1)
        return created
    finally:
        await admin.close()


async def _set_configs(admin: AIOKafkaAdminClient, topics: Sequence[NewTopic]) -> None:
    if not topics:
        return
    resources = [ConfigResource(ConfigResourceType.TOPIC, t.name, configs=t.topic_configs) for t in topics]
    for response in await admin.alter_configs(resources):
        for error_code, error_message, _, name in response.resources:
            if error_code:
                raise KafkaError(f"configs of topic {name} refused (error {error_code}): {error_message}")


async def ensure_topics(kafka: KafkaAccess, specs: Sequence[TopicSpec] = TOPICS) -> list[str]:
    """Create every missing catalogue topic with its configs; (re)write each one's metadata record. Idempotent."""
    wanted = [NewTopic(spec.name, spec.partitions, 1, topic_configs=spec.kafka_configs()) for spec in specs]
    wanted.append(
        NewTopic(TOPIC_METADATA_TOPIC, 1, 1, topic_configs={"cleanup.policy": "compact", "flush.messages": "1"})
    )
    created = await create_topics(kafka, wanted)
    producer = kafka.producer(acks="all", enable_idempotence=True)
    await producer.start()
    try:
        batch = producer.create_batch()
        for spec in specs:
            document = {
                "topic": spec.name,
                "priority": spec.priority.name,
                "record_type": spec.record_type,
                "subject": spec.subject,
                "retention_ms": spec.retention_ms,
                "retention_bytes_per_partition": spec.retention_bytes,
            }
            batch.append(key=spec.name.encode(), value=json.dumps(document).encode(), timestamp=None)
        await (await producer.send_batch(batch, TOPIC_METADATA_TOPIC, partition=0))
    finally:
        await producer.stop()
    return [name for name in created if name != TOPIC_METADATA_TOPIC]
