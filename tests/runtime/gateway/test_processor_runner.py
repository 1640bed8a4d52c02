"""The processor runner delivers a batch while it processes the next, in order, and a clean stop keeps what it
delivered."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from streamforge.engine.node_types import load_node_types
from streamforge.engine.plan import NO_CONFIG, InputPlan, NodePlan, OutputPlan, packed_config
from streamforge.engine.records import epoch_ms, telemetry
from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.sdk import Emitted, Message, NodeConfig, Port, PortType, ProcessorNode
from streamforge.engine.serde import encoder_for
from streamforge.nodes.validator import Validator
from streamforge.runtime.gateway.metrics import NodeMetrics
from streamforge.runtime.gateway.runners import RuntimeEnv, changelog_topic, runner_for
from streamforge.runtime.gateway.runners.outputs import DEAD_LETTER_TOPIC
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.kafka.clients import BatchProducer, node_headers
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from streamforge.runtime.kafka.topics import create_topics
from tests.eventually import eventually
from tests.kafka_reading import read_from

FLOW, SERIES, ROUNDS = "checkpoint", 50, 40
T0 = datetime(2026, 1, 29, 10, 0, tzinfo=UTC)


async def validator_plan(bootstrap: KafkaAccess, prefix: str) -> NodePlan:
    outputs = tuple(OutputPlan(port.name, port.type.value, f"{prefix}.{port.name}") for port in Validator.outputs)
    changelog = NewTopic(changelog_topic(FLOW, prefix), 1, 1, topic_configs={"cleanup.policy": "compact"})
    await create_topics(bootstrap, [NewTopic(f"{prefix}.raw", 12, 1), changelog]
                        + [NewTopic(o.topic, 12, 1) for o in outputs])  # fmt: skip
    return NodePlan(prefix, "validator", "processor", "gateway", prefix, f"{prefix}.group",
                    (InputPlan("in", f"{prefix}.raw", ("source",)),), outputs, packed_config('{"rules": []}'),
                    "")  # fmt: skip


async def committed(bootstrap: KafkaAccess, group: str, topic: str) -> int:
    consumer = bootstrap.consumer(group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        offsets = [await consumer.committed(TopicPartition(topic, p)) for p in range(12)]
        return sum(offset or 0 for offset in offsets)
    finally:
        await consumer.stop()


async def changelog_records(bootstrap: KafkaAccess, topic: str) -> int:
    consumer = bootstrap.consumer()
    await consumer.start()
    try:
        return sum((await consumer.end_offsets([TopicPartition(topic, 0)])).values())
    finally:
        await consumer.stop()


async def test_a_clean_stop_keeps_the_state_and_offsets_of_every_batch_delivered(
    kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str
) -> None:
    """40 batches validated, the last one's delivery possibly still in flight when the stop comes: the stop lets it
    land, saves its state and commits its offsets, so a restart replays nothing and knows every series' last
    reading (each batch saved its series' state, acknowledged first). Two deliveries overlap, yet every series'
    readings reach `clean` in the order they were read: one batch's outputs never overtake the one's before."""
    node_id = unique.replace("_", "-")[-60:]
    plan = await validator_plan(kafka.access, node_id)
    encoder = await encoder_for(registry, f"{node_id}.raw-value", SCHEMAS["telemetry"])
    async with BatchProducer(kafka.access) as producer:
        for n in range(ROUNDS):
            at = T0 + timedelta(seconds=n)
            readings = [telemetry(f"pump_{i}", "pressure", 5.0 + n / 10, device_time=at) for i in range(SERIES)]
            report = await producer.send_records(f"{node_id}.raw", readings, encoder, node_headers(FLOW, "source"))
            assert not report.failed and not report.rejected
    metrics = NodeMetrics()
    runner = runner_for(plan, FLOW, RuntimeEnv(kafka.access, registry, metrics, load_node_types(False),
                                               batch_size=SERIES))  # fmt: skip
    clean_out = metrics.records_out.labels(flow=FLOW, node=node_id, port="clean")
    task = asyncio.create_task(runner.run())
    processed = metrics.records_in.labels(flow=FLOW, node=node_id)
    await eventually(lambda: processed._value.get() >= SERIES * ROUNDS, 60, what="every reading processed")
    task.cancel()  # at once: the last delivery may still be in flight
    await asyncio.gather(task, return_exceptions=True)
    assert clean_out._value.get() == SERIES * ROUNDS
    device_times: dict[str, list[datetime]] = defaultdict(list)
    for record in await read_from(kafka, registry, f"{node_id}.clean", FLOW, node_id, SERIES * ROUNDS):
        device_times[record["asset_id"]].append(record["timestamps"]["device_time"])
    assert device_times == {f"pump_{i}": [T0 + timedelta(seconds=n) for n in range(ROUNDS)] for i in range(SERIES)}
    assert await changelog_records(kafka.access, changelog_topic(FLOW, node_id)) >= SERIES  # every batch's
    assert await committed(kafka.access, plan.consumer_group or "", f"{node_id}.raw") == SERIES * ROUNDS

    again = NodeMetrics()
    restarted = runner_for(plan, FLOW, RuntimeEnv(kafka.access, registry, again, load_node_types(False)))
    task = asyncio.create_task(restarted.run())
    try:
        await restarted.ready.wait()
        await asyncio.sleep(2)
        assert again.records_in.labels(flow=FLOW, node=node_id)._value.get() == 0  # nothing replayed
        assert isinstance(restarted.node, Validator)
        series = restarted.node._series[("pump_0", "pressure")]
        assert (series.last_ms, series.last_value) == (epoch_ms(T0 + timedelta(seconds=ROUNDS - 1)), 8.9)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class Relabel(ProcessorNode[NodeConfig]):
    """Emits each reading as it came, except every fifth, whose value it spoils: its port's schema refuses that one."""

    type = "relabel_for_test"
    inputs = (Port("in", PortType.TELEMETRY),)
    outputs = (Port("out", PortType.TELEMETRY),)

    async def process(self, batch: Sequence[Message]) -> Emitted:
        spoiled = ({**m.record, "value": "n/a"} if m.record["value"] % 5 == 0 else m.record for m in batch)
        return {"out": list(spoiled)}


async def test_an_output_its_schema_refuses_becomes_a_dead_letter_and_its_neighbours_go_out(
    kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str
) -> None:
    """A node's bad output record is not dropped and does not hold back the good ones of its batch: it goes to the
    DLQ with the reason and the record, the others to the output topic, and every input offset is committed."""
    node_id = unique.replace("_", "-")[-60:]
    outputs = (OutputPlan("out", "telemetry", f"{node_id}.out"),)
    changelog = NewTopic(changelog_topic(FLOW, node_id), 1, 1, topic_configs={"cleanup.policy": "compact"})
    await create_topics(kafka.access, [NewTopic(f"{node_id}.raw", 12, 1), NewTopic(f"{node_id}.out", 12, 1),
                                          NewTopic(DEAD_LETTER_TOPIC, 12, 1), changelog])  # fmt: skip
    plan = NodePlan(node_id, Relabel.type, "processor", "gateway", node_id, f"{node_id}.group",
                    (InputPlan("in", f"{node_id}.raw", ("source",)),), outputs, NO_CONFIG, "")  # fmt: skip
    readings = [
        telemetry(f"pump_{i % 7}", "pressure", float(i), device_time=T0 + timedelta(seconds=i)) for i in range(100)
    ]
    encoder = await encoder_for(registry, f"{node_id}.raw-value", SCHEMAS["telemetry"])
    async with BatchProducer(kafka.access) as producer:
        report = await producer.send_records(f"{node_id}.raw", readings, encoder, node_headers(FLOW, "source"))
        assert not report.failed and not report.rejected
    types = load_node_types(False)
    types.register(Relabel)
    metrics = NodeMetrics()
    runner = runner_for(plan, FLOW, RuntimeEnv(kafka.access, registry, metrics, types, batch_size=30))
    task = asyncio.create_task(runner.run())
    try:
        good = await read_from(kafka, registry, f"{node_id}.out", FLOW, node_id, 80)
        letters = await read_from(kafka, registry, DEAD_LETTER_TOPIC, FLOW, node_id, 20)

        async def all_committed() -> bool | None:
            return await committed(kafka.access, f"{node_id}.group", f"{node_id}.raw") == 100 or None

        await eventually(all_committed, 30, what="every input offset committed")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sorted(record["value"] for record in good) == [float(i) for i in range(100) if i % 5]
    assert len(letters) == 20 and all(letter["reasons"][0]["code"] == "encode_error" for letter in letters)
    assert all(letter["source_topic"] == f"{node_id}.out" for letter in letters)
    spoiled = sorted(json.loads(letter["payload"])["value"] for letter in letters)
    assert spoiled == ["n/a"] * 20 and sorted(letter["asset_id"] for letter in letters) == sorted(
        f"pump_{i % 7}" for i in range(0, 100, 5)
    )
    assert metrics.errors.labels(flow=FLOW, node=node_id, kind="encode")._value.get() == 20
    assert metrics.records_out.labels(flow=FLOW, node=node_id, port="out")._value.get() == 80


def test_a_runner_keeps_the_validated_config_not_the_text_beside_it(registry: CachedSchemaRegistry) -> None:
    """A 10,000-signal source's config is a megabyte of text: kept beside the validated one, it was so twice."""
    outputs = tuple(OutputPlan(port.name, port.type.value, f"kept.{port.name}") for port in Validator.outputs)
    config_json = json.dumps({"rules": [{"parameter": "pressure", "min": 0, "max": 10}]})
    plan = NodePlan("kept", "validator", "processor", "gateway", "kept", "kept.group",
                    (InputPlan("in", "kept.raw", ("source",)),), outputs, packed_config(config_json), "")  # fmt: skip
    runner = runner_for(
        plan, FLOW, RuntimeEnv(KafkaAccess("127.0.0.1:9"), registry, NodeMetrics(), load_node_types(False))
    )
    assert runner.plan.config_json == "{}" and runner.plan.inputs == plan.inputs
    assert runner.node.config.rules[0].parameter == "pressure"
