"""Kafka client helpers: idempotent acks=all batch producer, manual-commit batch consumer."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from streamforge.engine.serde import Decoder, Encoder, Record, RecordError

Headers = list[tuple[str, bytes]]

# Batches up to 512 KiB; a record over the request limit is reported, not retried forever.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable_idempotence": True,
    "acks": "all",
    "linger_ms": 5,
    "max_batch_size": 512 * 1024,
    "request_timeout_ms": 30_000,
}

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": False,  # offsets are committed only after the batch's output is safe
    "auto_offset_reset": "earliest",
    "isolation_level": "read_committed",
    "max_poll_records": 2000,
}


def node_headers(flow_id: str, node_id: str) -> Headers:
    """The provenance headers every record carries (DESIGN.md §3)."""
    return [("sf-flow", flow_id.encode()), ("sf-node", node_id.encode())]


@dataclass(frozen=True)
class Delivered:
    """A record Kafka acknowledged: where it now lives."""

    index: int
    partition: int
    offset: int


@dataclass
class ProduceReport:
    """Outcome of one send_batch: what Kafka acknowledged, what was refused and why."""

    delivered: list[Delivered] = field(default_factory=list)
    rejected: list[RecordError] = field(default_factory=list)  # bad records, never sent
    failed: list[tuple[int, BaseException]] = field(default_factory=list)  # sent, not acknowledged


class BatchProducer:
    """Encodes and sends whole batches: one await per partition batch, never per record.

    Guarantee: a record counts as sent only once Kafka acknowledged it (acks=all, idempotent
    producer, so retries after a broker restart create no duplicates).
    """

    def __init__(self, bootstrap: str, **overrides: Any) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **{**PRODUCER_DEFAULTS, **overrides})
        self._partitioner = DefaultPartitioner()

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def __aenter__(self) -> BatchProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def send_records(
        self,
        topic: str,
        records: Sequence[Record],
        encoder: Encoder,
        headers: Headers | None = None,
        key_of: Callable[[Record], str] = lambda record: str(record["asset_id"]),
    ) -> ProduceReport:
        """Encode and send `records`; a bad record is rejected alone and the others are sent."""
        encoded = encoder.encode_batch(records)
        items = [(index, key_of(records[index]).encode(), value) for index, value in encoded.ok]
        report = await self.send_raw(topic, items, headers)
        report.rejected.extend(encoded.errors)
        return report

    async def send_raw(
        self, topic: str, items: Iterable[tuple[int, bytes | None, bytes]], headers: Headers | None = None
    ) -> ProduceReport:
        """Send pre-encoded (index, key, value) items, partitioned by key like the Java client."""
        partitions = sorted(await self.producer.partitions_for(topic))
        by_partition: dict[int, list[tuple[int, bytes | None, bytes]]] = defaultdict(list)
        for item in items:
            by_partition[self._partitioner(item[1], partitions, partitions)].append(item)
        pending: list[tuple[asyncio.Future[Any], list[int]]] = []
        record_headers = headers or []
        for partition, chunk in by_partition.items():
            builder = self.producer.create_batch()
            indexes: list[int] = []
            for index, key, value in chunk:
                if builder.append(key=key, value=value, timestamp=None, headers=record_headers) is None:
                    pending.append((await self.producer.send_batch(builder, topic, partition=partition), indexes))
                    builder, indexes = self.producer.create_batch(), []
                    if builder.append(key=key, value=value, timestamp=None, headers=record_headers) is None:
                        raise ValueError(f"record #{index} for {topic} is larger than max_batch_size")
                indexes.append(index)
            pending.append((await self.producer.send_batch(builder, topic, partition=partition), indexes))
        outcomes = await asyncio.gather(*(future for future, _ in pending), return_exceptions=True)
        report = ProduceReport()
        for (_, indexes), outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                report.failed.extend((index, outcome) for index in indexes)
            else:
                report.delivered.extend(
                    Delivered(index, outcome.partition, outcome.offset + position)
                    for position, index in enumerate(indexes)
                )
        return report


@dataclass(frozen=True)
class Consumed:
    """One decoded record and where it came from."""

    record: Record
    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: dict[str, bytes]


@dataclass
class ConsumedBatch:
    """A poll's worth of records; commit it once its output is safe."""

    records: list[Consumed] = field(default_factory=list)
    undecodable: list[tuple[ConsumerRecord, str]] = field(default_factory=list)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    skipped: int = 0  # records from nodes not wired to this consumer


class BatchConsumer:
    """Manual-commit consumer that decodes whole batches and keeps only records from wired nodes."""

    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        topics: Sequence[str],
        decoder: Decoder,
        upstream_nodes: Iterable[str] | None = None,
        **overrides: Any,
    ) -> None:
        self.consumer = AIOKafkaConsumer(
            *topics, bootstrap_servers=bootstrap, group_id=group_id, **{**CONSUMER_DEFAULTS, **overrides}
        )
        self.decoder = decoder
        self.upstream = None if upstream_nodes is None else {node.encode() for node in upstream_nodes}

    async def start(self) -> None:
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()

    async def __aenter__(self) -> BatchConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def next_batch(self, timeout_ms: int = 1000, max_records: int | None = None) -> ConsumedBatch:
        polled = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        batch = ConsumedBatch()
        messages: list[ConsumerRecord] = []
        for tp, tp_messages in polled.items():
            batch.next_offsets[tp] = tp_messages[-1].offset + 1
            for message in tp_messages:
                headers = dict(message.headers)
                if self.upstream is not None and headers.get("sf-node") not in self.upstream:
                    batch.skipped += 1
                    continue
                messages.append(message)
        decoded = await self.decoder.decode_batch([message.value for message in messages])
        for index, record in decoded.ok:
            message = messages[index]
            batch.records.append(
                Consumed(record, message.topic, message.partition, message.offset, message.key, dict(message.headers))
            )
        batch.undecodable.extend((messages[error.index], error.message) for error in decoded.errors)
        return batch

    async def commit(self, batch: ConsumedBatch) -> None:
        """Commit past `batch`: call only after everything it produced is acknowledged or written."""
        if batch.next_offsets:
            await self.consumer.commit(batch.next_offsets)
