"""Topic bootstrap: create the catalogue's topics and record their priority as Kafka-side metadata."""

from __future__ import annotations

import json
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streamforge.engine.topics import TOPIC_METADATA_TOPIC, TOPICS, TopicSpec


async def ensure_topics(bootstrap: str, specs: Sequence[TopicSpec] = TOPICS) -> list[str]:
    """Create every missing topic with its configs; (re)write each one's metadata record. Idempotent."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(spec.name, spec.partitions, 1, topic_configs=spec.kafka_configs())
            for spec in specs
            if spec.name not in existing
        ]
        if TOPIC_METADATA_TOPIC not in existing:
            wanted.append(
                NewTopic(TOPIC_METADATA_TOPIC, 1, 1, topic_configs={"cleanup.policy": "compact", "flush.messages": "1"})
            )
        created = []
        for topic in wanted:  # one by one: a topic another gateway process just made is not an error
            try:
                await admin.create_topics([topic])
            except TopicAlreadyExistsError:
                continue
            created.append(topic.name)
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
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
    return created
