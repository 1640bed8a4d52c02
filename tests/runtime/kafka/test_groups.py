"""A new flow's groups start at the end of the shared topics as of its first deploy; a flow that ran keeps its own."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.serde import encoder_for
from streamforge.runtime.kafka.clients import BatchProducer, node_headers
from streamforge.runtime.kafka.groups import start_new_flow_at_end
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from tests.conftest import create_topic
from tests.engine.samples import SAMPLES


async def committed(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {tp: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(group)).items()}
    finally:
        await admin.close()


async def ends(bootstrap: str, topic: str, partitions: int) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        offsets: dict[TopicPartition, int] = await consumer.end_offsets(
            [TopicPartition(topic, p) for p in range(partitions)]
        )
        return offsets
    finally:
        await consumer.stop()


async def test_a_new_flow_starts_past_other_flows_history_and_a_flow_that_ran_keeps_its_offsets(
    kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str
) -> None:
    raw = await create_topic(kafka.bootstrap, f"{unique}.raw", partitions=3)
    clean = await create_topic(kafka.bootstrap, f"{unique}.clean", partitions=3)
    encoder = await encoder_for(registry, f"{raw}-value", SCHEMAS["telemetry"])
    readings = [dict(SAMPLES["telemetry"], asset_id=f"asset_{i}") for i in range(40)]
    async with BatchProducer(kafka.bootstrap) as producer:
        await producer.send_records(raw, readings, encoder, node_headers("other_flow", "source"))
    history = await ends(kafka.bootstrap, raw, 3)
    assert sum(history.values()) == 40 and min(history.values()) > 0  # every partition has history to skip

    validator, sink = f"{unique}.validator", f"{unique}.sink"
    assert await start_new_flow_at_end(kafka.bootstrap, {validator: [raw], sink: [clean]})
    assert await committed(kafka.bootstrap, validator) == history
    # Every partition committed, the empty ones too (at 0): the flow is never taken for new again.
    assert await committed(kafka.bootstrap, sink) == {TopicPartition(clean, p): 0 for p in range(3)}

    async with BatchProducer(kafka.bootstrap) as producer:  # more history, then the flow is deployed again
        await producer.send_records(raw, readings, encoder, node_headers("other_flow", "source"))
    assert not await start_new_flow_at_end(kafka.bootstrap, {validator: [raw], sink: [clean]})
    assert await committed(kafka.bootstrap, validator) == history

    # A node added to a flow that already ran has no offsets of its own: it starts from the earliest record.
    added = f"{unique}.added"
    assert not await start_new_flow_at_end(kafka.bootstrap, {validator: [raw], added: [raw]})
    assert await committed(kafka.bootstrap, added) == {}
