"""Topic bootstrap: the spec's topics, 12 partitions, retention, fsync for critical ones, priority metadata."""

from __future__ import annotations

import json

from streamforge.engine.topics import TOPIC_METADATA_TOPIC, TOPICS, Priority
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from streamforge.runtime.kafka.topics import ensure_topics
from tests.kafka_reading import topic_configs

SPEC_TOPICS = {
    "telemetry.raw", "telemetry.clean", "telemetry.1s", "telemetry.1min", "telemetry.1hour",
    "events.raw", "events.clean", "alarms.raw", "alarms.clean", "dlq.telemetry", "dlq.events",
}  # fmt: skip


async def test_catalogue_is_created_with_configs_and_metadata(kafka: EmbeddedKafka) -> None:
    await ensure_topics(kafka.access)
    assert await ensure_topics(kafka.access) == []  # idempotent
    admin = kafka.access.admin()
    await admin.start()
    try:
        described = {t["topic"]: t for t in await admin.describe_topics(sorted(SPEC_TOPICS))}
    finally:
        await admin.close()
    assert set(described) == SPEC_TOPICS
    assert all(len(t["partitions"]) == 12 for t in described.values())
    configs = await topic_configs(kafka.access, sorted(SPEC_TOPICS))
    for spec in TOPICS:
        got = configs[spec.name]
        assert got["retention.ms"] == str(spec.retention_ms)
        assert got["retention.bytes"] == str(spec.retention_bytes)
        assert got["unclean.leader.election.enable"] == "false"
        assert got["flush.messages"] == ("1" if spec.priority is Priority.CRITICAL else "9223372036854775807")
    assert configs["alarms.clean"]["retention.ms"] == "-1"  # alarms are never evicted

    consumer = kafka.access.consumer(TOPIC_METADATA_TOPIC, auto_offset_reset="earliest")
    await consumer.start()
    try:
        metadata: dict[str, dict[str, object]] = {}
        while len(metadata) < len(SPEC_TOPICS):
            for messages in (await consumer.getmany(timeout_ms=2000)).values():
                metadata.update({m.key.decode(): json.loads(m.value) for m in messages})
    finally:
        await consumer.stop()
    assert metadata["telemetry.raw"]["priority"] == "LOW"
    assert metadata["telemetry.1s"]["priority"] == "MEDIUM"
    assert metadata["telemetry.1min"]["priority"] == "HIGH"
    assert metadata["events.raw"]["priority"] == "HIGH"
    assert {metadata[t]["priority"] for t in SPEC_TOPICS if t.startswith(("alarms.", "dlq."))} == {"CRITICAL"}
