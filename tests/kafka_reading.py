"""Reading what a node wrote to Kafka, from a test: everything of one flow's node, or what arrives from now on."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.engine.sdk import Message
from streamforge.engine.serde import Decoder
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.kafka.clients import BatchConsumer
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from streamforge.runtime.kafka.topics import ensure_topics


async def read_from(
    kafka: EmbeddedKafka,
    registry: CachedSchemaRegistry,
    topic: str,
    flow: str,
    node: str,
    expected: int,
    timeout_s: float = 60,
) -> list[dict[str, Any]]:
    """Everything `node` of `flow` wrote to `topic`, waiting until `expected` records arrived."""
    records: list[dict[str, Any]] = []
    group = f"reader.{flow}.{node}.{topic}.{time.time_ns()}"
    async with BatchConsumer(kafka.access, group, [topic], Decoder(registry), upstream=[(flow, node)]) as consumer:
        deadline = time.monotonic() + timeout_s
        idle = 0
        while time.monotonic() < deadline and (len(records) < expected or idle < 2):
            batch = await consumer.next_batch(timeout_ms=500)
            records += [m.record for m in batch.records]
            idle = 0 if batch.records else idle + 1
    return records


@contextlib.asynccontextmanager
async def tail(
    kafka: EmbeddedKafka, registry: CachedSchemaRegistry, topics: list[str], flow: str, node: str
) -> AsyncIterator[list[Message]]:
    """Every record `node` of `flow` writes to `topics` from entry on, appended to the yielded list as it
    arrives. No consumer group, and nothing older is scanned: other tests' records do not slow it down."""
    arrived: list[Message] = []
    await ensure_topics(kafka.access)  # as the gateway does on deploy, which may come after
    async with BatchConsumer(kafka.access, None, topics, Decoder(registry), upstream=[(flow, node)]) as consumer:
        await consumer.start_at_end()

        async def follow() -> None:
            while True:
                arrived.extend((await consumer.next_batch(timeout_ms=200)).records)

        task = asyncio.create_task(follow())
        try:
            yield arrived
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def topic_configs(bootstrap: KafkaAccess, names: list[str]) -> dict[str, dict[str, str]]:
    """Each topic's configs as the broker describes them (defaults included)."""
    admin = bootstrap.admin()
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
    finally:
        await admin.close()
    return {resource["resource_name"]: {c["config_names"]: c["config_value"] for c in resource["config_entries"]}
            for response in responses for resource in response.to_object()["resources"]}  # fmt: skip
