"""The embedded broker compacts node state changelogs with its small cleaner buffer: the last value per key stays."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streamforge.runtime.gateway.runners.changelog import read_state
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.kafka.broker import CLEANER_DEDUPE_BUFFER_BYTES
from streamforge.runtime.kafka.clients import BatchProducer
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from tests.conftest import create_topic

KEYS = 500
ROUNDS = 4


async def read_all(bootstrap: KafkaAccess, topic: str) -> list[tuple[bytes, bytes]]:
    """Every record still in the topic (read_state keeps only the last per key: it cannot show compaction)."""
    consumer = bootstrap.consumer(enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        out: list[tuple[bytes, bytes]] = []
        while await consumer.position(tp) < end:
            for messages in (await consumer.getmany(timeout_ms=1000)).values():
                out += [(m.key, m.value) for m in messages if m.key is not None and m.value is not None]
        return out
    finally:
        await consumer.stop()


async def test_a_changelog_is_compacted_to_the_last_value_of_each_key(kafka: EmbeddedKafka, unique: str) -> None:
    admin = kafka.access.admin()
    await admin.start()
    try:
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")])
        broker = {entry[0]: entry[1] for entry in described[0].resources[0][4]}
    finally:
        await admin.close()
    # Kafka's default (128 MiB) held half the broker's heap for good.
    assert broker["log.cleaner.dedupe.buffer.size"] == str(CLEANER_DEDUPE_BUFFER_BYTES)

    topic = await create_topic(kafka.access, f"{unique}.state", 1, **{
        "cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
        "min.compaction.lag.ms": "0"})  # fmt: skip
    async with BatchProducer(kafka.access) as producer:
        for round_ in range(ROUNDS):
            items = [(k, f"series-{k}".encode(), f"{round_}".encode()) for k in range(KEYS)]
            assert not (await producer.send_raw(topic, items)).failed
            await asyncio.sleep(0.2)  # past segment.ms: the next write rolls the segment, which makes it cleanable
        assert not (await producer.send_raw(topic, [(0, b"roll", b"-")])).failed

    written = ROUNDS * KEYS + 1
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60  # the cleaner looks for work every 15 s (log.cleaner.backoff.ms)
    records = await read_all(kafka.access, topic)
    while len(records) >= written and loop.time() < deadline:
        await asyncio.sleep(1)
        records = await read_all(kafka.access, topic)
    assert len(records) < written, "the cleaner never compacted the changelog"
    # What a node restoring its state reads: the last value of every key, none lost to compaction.
    restored = await read_state(kafka.access, topic)
    assert restored == {f"series-{k}": f"{ROUNDS - 1}".encode() for k in range(KEYS)} | {"roll": b"-"}
