"""A new flow's groups start at the end of the shared topics as of its first deploy; a flow that ran keeps its own."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import GroupLoadInProgressError, KafkaConnectionError, UnknownTopicOrPartitionError
from aiokafka.protocol.commit import OffsetFetchResponse_v1, OffsetFetchResponse_v3
from aiokafka.structs import OffsetAndMetadata

from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.serde import encoder_for
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.kafka.clients import BatchProducer, node_headers
from streamforge.runtime.kafka.groups import committed_offsets, offsets_in, start_new_flow_at_end
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from tests.conftest import create_topic
from tests.engine.samples import SAMPLES


async def committed(bootstrap: KafkaAccess, group: str) -> dict[TopicPartition, int]:
    admin = bootstrap.admin()
    await admin.start()
    try:
        return {tp: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(group)).items()}
    finally:
        await admin.close()


async def ends(bootstrap: KafkaAccess, topic: str, partitions: int) -> dict[TopicPartition, int]:
    consumer = bootstrap.consumer()
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
    raw = await create_topic(kafka.access, f"{unique}.raw", partitions=3)
    clean = await create_topic(kafka.access, f"{unique}.clean", partitions=3)
    encoder = await encoder_for(registry, f"{raw}-value", SCHEMAS["telemetry"])
    readings = [dict(SAMPLES["telemetry"], asset_id=f"asset_{i}") for i in range(40)]
    async with BatchProducer(kafka.access) as producer:
        await producer.send_records(raw, readings, encoder, node_headers("other_flow", "source"))
    history = await ends(kafka.access, raw, 3)
    assert sum(history.values()) == 40 and min(history.values()) > 0  # every partition has history to skip

    validator, sink = f"{unique}.validator", f"{unique}.sink"
    assert await start_new_flow_at_end(kafka.access, {validator: [raw], sink: [clean]})
    assert await committed(kafka.access, validator) == history
    # Every partition committed, the empty ones too (at 0): the flow is never taken for new again.
    assert await committed(kafka.access, sink) == {TopicPartition(clean, p): 0 for p in range(3)}

    async with BatchProducer(kafka.access) as producer:  # more history, then the flow is deployed again
        await producer.send_records(raw, readings, encoder, node_headers("other_flow", "source"))
    assert not await start_new_flow_at_end(kafka.access, {validator: [raw], sink: [clean]})
    assert await committed(kafka.access, validator) == history

    # A node added to a flow that already ran has no offsets of its own: it starts from the earliest record.
    added = f"{unique}.added"
    assert not await start_new_flow_at_end(kafka.access, {validator: [raw], added: [raw]})
    assert await committed(kafka.access, added) == {}


def test_an_offset_fetch_answer_with_an_error_is_an_error_never_no_offsets() -> None:
    # What the broker answered in the first ~200 ms after a SIGKILL and restart (measured, see committed_offsets):
    # the group's error at the top, no partitions. Read as offsets, it says "never committed".
    with pytest.raises(GroupLoadInProgressError):
        offsets_in(OffsetFetchResponse_v3(0, [], 14))
    with pytest.raises(UnknownTopicOrPartitionError, match=r"t \[1\]"):
        offsets_in(OffsetFetchResponse_v1([("t", [(0, 5, "", 0), (1, -1, "", 3)])]))
    clean = OffsetFetchResponse_v3(0, [("t", [(0, 5, "", 0), (1, -1, "", 0)])], 0)
    assert offsets_in(clean) == {TopicPartition("t", 0): 5}  # -1: nothing committed there


LOADING_COMMITS = 10_000  # x 12 partitions: ~100 ms of __consumer_offsets to load again after a restart


async def test_a_flow_that_ran_is_not_taken_for_new_while_the_restarted_broker_loads_its_offsets(
    tmp_path: Path, registry: CachedSchemaRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """The gateway and its broker are SIGKILLed with a backlog in raw; at restart the flow's group must keep the
    offsets it committed, or the deploy commits the end and the backlog is skipped."""
    async with EmbeddedKafka(tmp_path / "kafka", restart_backoff_s=0.1) as kafka:
        raw = await create_topic(kafka.access, "telemetry.raw", partitions=12)
        encoder = await encoder_for(registry, f"{raw}-value", SCHEMAS["telemetry"])
        readings = [dict(SAMPLES["telemetry"], asset_id=f"asset_{i}") for i in range(120)]
        async with BatchProducer(kafka.access) as producer:
            await producer.send_records(raw, readings, encoder, node_headers("flow", "source"))
        validator = "flow.validator"
        backlog = {TopicPartition(raw, p): 0 for p in range(12)}  # it committed, then read nothing more
        committer = kafka.access.consumer(group_id=validator, enable_auto_commit=False)
        await committer.start()
        committer.assign(list(backlog))
        for _ in range(0, LOADING_COMMITS, 500):  # enough commits that loading them again takes a while
            await asyncio.gather(*(committer.commit({tp: OffsetAndMetadata(0, "") for tp in backlog})
                                   for _ in range(500)))  # fmt: skip
        await committer.stop()

        caplog.set_level(logging.INFO, logger="streamforge.kafka.groups")
        seen_loading = 0
        for _ in range(5):  # a restart whose loading ends before the first request proves nothing: again
            kafka.kill()
            while True:  # asked as soon as the broker listens, as a restarted gateway does
                try:
                    assert not await start_new_flow_at_end(kafka.access, {validator: [raw]})
                    break
                except KafkaConnectionError:
                    await asyncio.sleep(0.02)
            # Only the loading answer counts: "not elected yet" is another retry that proves nothing here.
            seen_loading += sum(getattr(r, "error", "").startswith("GroupLoadInProgressError") for r in caplog.records)
            caplog.clear()
            await kafka.wait_healthy()
            if seen_loading:
                break
        assert seen_loading, "no restart answered COORDINATOR_LOAD_IN_PROGRESS: the case was not tried"
        admin = kafka.access.admin()
        await admin.start()
        try:
            assert await committed_offsets(admin, validator) == backlog
        finally:
            await admin.close()
