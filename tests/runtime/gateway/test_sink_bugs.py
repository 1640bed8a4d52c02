"""A sink whose own code is wrong fails with its traceback; it is not retried as if its destination were down (#42:
a TypeError used to sit behind the circuit breaker forever, looking like an outage, the node only DEGRADED)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka.admin import NewTopic

from streamforge.engine.node_types import load_node_types
from streamforge.engine.plan import InputPlan, NodePlan, packed_config
from streamforge.engine.records import telemetry
from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.serde import encoder_for
from streamforge.runtime.gateway.metrics import NodeMetrics
from streamforge.runtime.gateway.runners import RuntimeEnv, changelog_topic, runner_for
from streamforge.runtime.kafka.clients import BatchProducer, node_headers
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from streamforge.runtime.kafka.topics import create_topics
from streamforge.sdk import Message, Port, PortType, Record, SinkConfig, SinkNode

FLOW = "sink_bugs"


class Typo(SinkNode[SinkConfig]):
    """Writes with a bug: every batch raises TypeError."""

    type = "test_typo_sink"
    inputs = (Port("in", PortType.TELEMETRY),)

    async def write(self, batch: Sequence[Message]) -> Sequence[Record] | None:
        records: Any = batch
        return records["first"]  # type: ignore[no-any-return]  # a list indexed by a string: TypeError


async def test_a_sinks_type_error_fails_the_node_instead_of_retrying_it_as_an_outage(
    kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str
) -> None:
    node_id = unique.replace("_", "-")[-60:]
    await create_topics(kafka.access, [NewTopic(f"{node_id}.raw", 1, 1), NewTopic(changelog_topic(FLOW, node_id),
                        1, 1, topic_configs={"cleanup.policy": "compact"})])  # fmt: skip
    encoder = await encoder_for(registry, f"{node_id}.raw-value", SCHEMAS["telemetry"])
    async with BatchProducer(kafka.access) as producer:
        report = await producer.send_records(f"{node_id}.raw", [telemetry("pump_1", "pressure", 5.0)], encoder,
                                             node_headers(FLOW, "source"))  # fmt: skip
        assert not report.failed
    plan = NodePlan(node_id, "test_typo_sink", "sink", "gateway", node_id, f"{node_id}.group",
                    (InputPlan("in", f"{node_id}.raw", ("source",)),), (), packed_config("{}"), "")  # fmt: skip
    types = load_node_types(include_plugins=False)
    types.register(Typo, "test")
    metrics = NodeMetrics()
    runner = runner_for(plan, FLOW, RuntimeEnv(kafka.access, registry, metrics, types))
    with pytest.raises(TypeError, match="list indices must be integers"):  # the supervisor restarts, then FAILED
        await asyncio.wait_for(runner.run(), 60)
    assert metrics.records_out.labels(flow=FLOW, node=node_id, port="write")._value.get() == 0
