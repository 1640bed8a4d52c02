"""Every record type goes through the real broker; our decoder and plain fastavro both read it back."""

from __future__ import annotations

import asyncio
import io
import json

import fastavro
import httpx
import pytest
from aiokafka import TopicPartition

from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.sdk import Message
from streamforge.engine.serde import Decoder, Encoder, encoder_for
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.kafka.clients import (
    CONSUMER_DEFAULTS,
    FETCH_SCALE_MAX,
    READ_PER_KEPT,
    BatchConsumer,
    BatchProducer,
    node_headers,
    recent_records,
)
from streamforge.runtime.kafka.groups import committed_offsets
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from tests.conftest import create_topic
from tests.engine.samples import SAMPLES


async def raw_values(bootstrap: KafkaAccess, topic: str, count: int) -> list[bytes]:
    """The stored bytes of the first `count` records, read with a plain aiokafka consumer."""
    raw = bootstrap.consumer(topic, auto_offset_reset="earliest")
    await raw.start()
    try:
        values: list[bytes] = []
        while len(values) < count:
            for messages in (await raw.getmany(timeout_ms=2000)).values():
                values += [m.value for m in messages]
        return values
    finally:
        await raw.stop()


@pytest.mark.parametrize("record_type", sorted(SCHEMAS))
async def test_round_trip_through_the_broker(
    kafka: EmbeddedKafka, registry: CachedSchemaRegistry, registry_url: str, unique: str, record_type: str
) -> None:
    topic = await create_topic(kafka.access, f"{unique}.{record_type}")
    encoder = await encoder_for(registry, f"{topic}-value", SCHEMAS[record_type])
    records = [dict(SAMPLES[record_type], asset_id=f"asset_{i}") for i in range(20)]
    async with BatchProducer(kafka.access) as producer:
        report = await producer.send_records(topic, records, encoder, node_headers("f1", "n1"))
    assert len(report.delivered) == 20 and not report.failed and not report.rejected

    async with BatchConsumer(kafka.access, f"{unique}.g", [topic], Decoder(registry)) as consumer:
        got: list[Message] = []
        while len(got) < 20:
            got += (await consumer.next_batch(timeout_ms=2000)).records
    assert sorted((c.record for c in got), key=lambda r: r["asset_id"]) == sorted(records, key=lambda r: r["asset_id"])
    assert {c.headers["sf-node"] for c in got} == {b"n1"}
    assert all(c.key == c.record["asset_id"].encode() for c in got)

    # Independently of our decoder: the schema as the registry serves it, plain fastavro, raw bytes.
    async with httpx.AsyncClient(base_url=registry_url) as http:
        served = (await http.get(f"/schemas/ids/{encoder.schema_id}")).json()["schema"]
    writer = fastavro.parse_schema(json.loads(served))
    values = await raw_values(kafka.access, topic, 20)
    for value in values:
        assert value[0] == 0 and int.from_bytes(value[1:5], "big") == encoder.schema_id
        plain = fastavro.schemaless_reader(io.BytesIO(value[5:]), writer, None)
        assert isinstance(plain, dict)
        assert plain == dict(SAMPLES[record_type], asset_id=plain["asset_id"])


async def test_bad_records_are_named_and_neighbours_are_sent(
    kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str
) -> None:
    topic = await create_topic(kafka.access, f"{unique}.telemetry")
    encoder = await encoder_for(registry, f"{topic}-value", SCHEMAS["telemetry"])
    records = [dict(SAMPLES["telemetry"], asset_id=f"a{i}", value=float(i)) for i in range(10)]
    records[3] = dict(records[3], value="three")
    del records[7]["parameter"]
    async with BatchProducer(kafka.access) as producer:
        report = await producer.send_records(topic, records, encoder)
    assert sorted(d.index for d in report.delivered) == [0, 1, 2, 4, 5, 6, 8, 9]
    errors = {e.index: str(e) for e in report.rejected}
    assert errors[3] == "record #3 (asset_id='a3'): field /value: expected null or double, got str 'three'"
    assert errors[7] == "record #7 (asset_id='a7'): field /parameter: missing; expected string"
    async with BatchConsumer(kafka.access, f"{unique}.g", [topic], Decoder(registry)) as consumer:
        got: list[float] = []
        while len(got) < 8:
            got += [c.record["value"] for c in (await consumer.next_batch(timeout_ms=2000)).records]
    assert sorted(got) == [0.0, 1.0, 2.0, 4.0, 5.0, 6.0, 8.0, 9.0]


async def telemetry_from(
    kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str, runs: list[tuple[str, int]]
) -> tuple[str, Encoder]:
    """A one-partition topic holding, in order, `count` readings from node `node` of flow "f" for each run."""
    topic = await create_topic(kafka.access, f"{unique}.telemetry", partitions=1)
    encoder = await encoder_for(registry, f"{topic}-value", SCHEMAS["telemetry"])
    async with BatchProducer(kafka.access) as producer:
        for node, count in runs:
            await producer.send_records(topic, [SAMPLES["telemetry"]] * count, encoder, node_headers("f", node))
    return topic, encoder


async def test_consumer_keeps_only_wired_nodes_and_commits_manually(
    kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str
) -> None:
    topic, _ = await telemetry_from(kafka, registry, unique, [("wired", 3), ("other", 2)])
    group = f"{unique}.g"
    async with BatchConsumer(kafka.access, group, [topic], Decoder(registry), upstream=[("f", "wired")]) as c:
        batch = await c.next_batch(timeout_ms=3000)
        while len(batch.records) + batch.skipped < 5:
            more = await c.next_batch(timeout_ms=2000)
            batch.records += more.records
            batch.skipped += more.skipped
        assert len(batch.records) == 3 and batch.skipped == 2
        # not committed: a new consumer in the same group sees everything again
    async with BatchConsumer(kafka.access, group, [topic], Decoder(registry)) as c:
        again: list[Message] = []
        while len(again) < 5:
            b = await c.next_batch(timeout_ms=2000)
            again += b.records
            await c.commit(b)
    async with BatchConsumer(kafka.access, group, [topic], Decoder(registry)) as c:
        assert (await c.next_batch(timeout_ms=1500)).records == []


async def send_as_one_batch(bootstrap: KafkaAccess, topic: str, value: bytes, origins: list[tuple[str, str]]) -> None:
    """One record per origin, all in one batch with their own headers and no one-origin mark: a writer that is not
    StreamForge's (a mirror of another cluster, an external producer)."""
    producer = bootstrap.producer()
    await producer.start()
    try:
        batch = producer.create_batch()
        for flow, node in origins:
            assert batch.append(key=None, value=value, timestamp=None, headers=node_headers(flow, node)) is not None
        await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()


async def test_a_batch_is_filled_by_records_kept_and_reads_at_most_read_per_kept_times_its_size(
    kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str
) -> None:
    """Flows share spec topics: where most records belong to other nodes, one batch polls on until it holds
    `max_records` of its own, but reads no more than READ_PER_KEPT x `max_records` to get there. (Records read one by
    one: written by another writer than StreamForge's, whose batches are passed over whole.)"""
    topic = await create_topic(kafka.access, f"{unique}.telemetry", partitions=1)
    encoder = await encoder_for(registry, f"{topic}-value", SCHEMAS["telemetry"])
    value = encoder.encode(SAMPLES["telemetry"])
    for _ in range(2):  # offsets 0-29 other, 30-39 wired, 40-69 other, 70-79 wired
        await send_as_one_batch(kafka.access, topic, value, [("f", "other")] * 30)
        await send_as_one_batch(kafka.access, topic, value, [("f", "wired")] * 10)
    tp = TopicPartition(topic, 0)
    upstream = [("f", "wired")]
    async with BatchConsumer(kafka.access, f"{unique}.g", [topic], Decoder(registry), upstream=upstream) as c:
        batch = await c.next_batch(timeout_ms=3000, max_records=10)
        assert [m.offset for m in batch.records] == list(range(30, 40))
        assert batch.skipped == 30 and batch.next_offsets == {tp: 40}
    # A batch of 2 reads at most 2 x READ_PER_KEPT records, even if none of them is its own.
    async with BatchConsumer(kafka.access, f"{unique}.g2", [topic], Decoder(registry), upstream=upstream) as c:
        batch = await c.next_batch(timeout_ms=3000, max_records=2)
        assert batch.records == [] and batch.skipped == 2 * READ_PER_KEPT
        assert batch.next_offsets == {tp: 2 * READ_PER_KEPT}


async def test_other_nodes_batches_are_passed_over_whole_and_a_batch_of_mixed_origins_is_read_record_by_record(
    kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str
) -> None:
    # offsets 0-29 other, 30-39 wired: one-origin batches
    topic, encoder = await telemetry_from(kafka, registry, unique, [("other", 30), ("wired", 10)])
    value = encoder.encode(SAMPLES["telemetry"])
    await send_as_one_batch(kafka.access, topic, value, [("f", "other"), ("f", "wired")])  # 40 other, 41 wired
    await send_as_one_batch(kafka.access, topic, value, [("f", "other")] * 30)  # 42-71, not marked
    tp = TopicPartition(topic, 0)
    upstream = [("f", "wired")]
    async with BatchConsumer(kafka.access, f"{unique}.g", [topic], Decoder(registry), upstream=upstream) as c:
        # 30 records passed over without being read: read one by one, a batch of 2 would stop at 2 x READ_PER_KEPT.
        batch = await c.next_batch(timeout_ms=3000, max_records=2)
        assert [m.offset for m in batch.records] == [30, 31]
        assert batch.skipped == 30 and batch.next_offsets == {tp: 32}
        kept = batch.records
        while batch.next_offsets.get(tp) != 72:
            batch = await c.next_batch(timeout_ms=3000, max_records=100)
            kept += batch.records
            await c.commit(batch)
        assert [m.offset for m in kept] == [*range(30, 40), 41]  # the wired record of the mixed batch is kept
        assert all(m.headers == {"sf-flow": b"f", "sf-node": b"wired"} for m in kept)  # the mark is not handed on
    async with BatchConsumer(kafka.access, f"{unique}.tap", [topic], Decoder(registry)) as tap:  # keeps all
        seen: list[Message] = []
        while len(seen) < 72:
            seen += (await tap.next_batch(timeout_ms=3000)).records
        assert [m.offset for m in seen] == list(range(72)) and not any("sf-batch" in m.headers for m in seen)
    admin = kafka.access.admin()
    await admin.start()
    try:  # what was passed over is committed past: a flow beside busy ones is not reported behind
        assert await committed_offsets(admin, f"{unique}.g") == {tp: 72}
    finally:
        await admin.close()


async def test_a_consumer_that_keeps_a_quarter_of_what_it_reads_fetches_four_times_as_much(
    kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str
) -> None:
    """Beside 3 more flows, a node's fetches bring about as many of its own records as they would alone."""
    topic, _ = await telemetry_from(kafka, registry, unique, [("other", 30), ("wired", 10)] * 20)
    base = CONSUMER_DEFAULTS["max_partition_fetch_bytes"]
    for upstream, scale in (([("f", "wired")], FETCH_SCALE_MAX), ([("f", "wired"), ("f", "other")], 1)):
        async with BatchConsumer(kafka.access, None, [topic], Decoder(registry), upstream=upstream) as c:
            assert c.partition_fetch_bytes == base
            read = 0
            while read < 800:
                batch = await c.next_batch(timeout_ms=3000, max_records=10)
                read += len(batch.records) + batch.skipped
            assert c.partition_fetch_bytes == base * scale


async def test_records_passed_through_are_sent_as_their_original_bytes(
    kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str
) -> None:
    topic = await create_topic(kafka.access, f"{unique}.telemetry", partitions=1)
    encoder = await encoder_for(registry, f"{topic}-value", SCHEMAS["telemetry"])
    original, changed = dict(SAMPLES["telemetry"]), dict(SAMPLES["telemetry"], value=1.5)
    marker = encoder.encode(original)[:5] + b"\x00" * 3  # not a valid body: proves the bytes were reused
    foreign = b"\x00\x00\x00\x03\x09" + encoder.encode(changed)[5:]  # another schema id: must be re-encoded
    async with BatchProducer(kafka.access) as producer:
        report = await producer.send_records(
            topic, [original, changed], encoder, encoded_as={id(original): marker, id(changed): foreign}
        )
    assert len(report.delivered) == 2
    values = await raw_values(kafka.access, topic, 2)
    assert values == [marker, encoder.encode(changed)]


async def test_recent_records_are_the_newest_and_move_no_group(
    kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str
) -> None:
    topic = await create_topic(kafka.access, f"{unique}-recent", partitions=3)
    encoder = await encoder_for(registry, f"{topic}-value", SCHEMAS["telemetry"])
    records = [{**SAMPLES["telemetry"], "asset_id": f"a{i % 3}", "value": float(i)} for i in range(30)]
    async with BatchProducer(kafka.access) as producer:
        await producer.send_records(topic, records, encoder)
    newest = await recent_records(kafka.access, topic, Decoder(registry), 4)
    assert len(newest) == 4
    values = sorted(record["value"] for _ts, _partition, record in newest)
    assert all(value >= 18 for value in values)  # from the newest four of each partition: no old ones
    # A topic that does not exist answers at once, not after the consumer's metadata timeout (about 40 s).
    async with asyncio.timeout(15):
        assert await recent_records(kafka.access, f"{unique}-absent", Decoder(registry), 4) == []
