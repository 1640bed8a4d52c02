"""A node's state in its compacted changelog topic: read whole on start, changed keys written before commits."""

from __future__ import annotations

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from streamforge.engine.node_types import NodeTypes
from streamforge.engine.plan import NodePlan
from streamforge.engine.sdk import Kind
from streamforge.engine.state import Changes, StateStore
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.kafka.clients import READ_TO_END_WAIT_MS, BatchProducer, read_to_end


def changelog_topic(flow_id: str, node_id: str) -> str:
    return f"_sf.{flow_id}.{node_id}.state"


def changelog_spec(flow_id: str, node: NodePlan, node_types: NodeTypes) -> NewTopic:
    """A node's changelog topic: one partition, compacted, and fsynced on every write where its state holds what no
    replay of its inputs can rebuild:
    - a sink's: the side effects it made outside Kafka (what an alert router paged, what a sink wrote and where);
    - a processor's that takes operator commands (an alarm rule): an acknowledgement or a shelving is in no input.
    Other state (a validator's last readings, an aggregator's open windows) is rebuilt from the inputs it was made
    of, so it is flushed as they are, by the OS, like the consumer offsets it pairs with. An fsync per state save
    holds up the node's next outputs, which share its connection, for as long as the disk takes to flush (a
    gateway's eMMC or SD card: tens of ms)."""
    durable = node.kind == Kind.SINK.value
    if node.kind == Kind.PROCESSOR.value:  # a source's or sink's class is not imported here (its worker's library)
        cls = node_types.get(node.type)
        durable = cls is not None and bool(cls.commands)
    configs = {"cleanup.policy": "compact", **({"flush.messages": "1"} if durable else {})}
    return NewTopic(changelog_topic(flow_id, node.node_id), 1, 1, topic_configs=configs)


class Changelog:
    """Between a node's StateStore and its changelog topic (one partition, compacted)."""

    def __init__(self, kafka: KafkaAccess, topic: str, store: StateStore) -> None:
        self.kafka, self.topic, self.store = kafka, topic, store

    async def load(self) -> None:
        self.store.load(await read_state(self.kafka, self.topic))

    async def save(self, producer: BatchProducer, changes: Changes | None = None) -> None:
        """Write the changed keys (or `changes`, taken from the store earlier) and wait for Kafka's ack: callers
        commit input offsets only after this."""
        changes = self.store.changes() if changes is None else changes
        if not changes:
            return
        # A generator: a checkpoint of 10,000 series' windows goes straight into the producer's batches.
        items = ((index, key, value) for index, (key, value) in enumerate(changes.encoded()))
        report = await producer.send_raw(self.topic, items)
        if report.failed:
            raise RuntimeError(f"state changelog {self.topic} not acknowledged: {report.failed[0][1]!r}")


async def read_state(kafka: KafkaAccess, topic: str) -> dict[str, bytes]:
    """The whole state in a compacted changelog (last value per key wins; empty value deletes)."""
    consumer = kafka.consumer(enable_auto_commit=False, fetch_max_wait_ms=READ_TO_END_WAIT_MS)
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            return {}
        state: dict[str, bytes] = {}
        # Changelogs are created with one partition (Gateway._ensure_topics).
        async for messages in read_to_end(consumer, [TopicPartition(topic, 0)]):
            for message in messages:
                key = message.key.decode()
                if message.value:
                    state[key] = message.value
                else:
                    state.pop(key, None)
        return state
    finally:
        await consumer.stop()
