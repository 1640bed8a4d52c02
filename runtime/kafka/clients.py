"""Kafka client helpers: idempotent acks=all batch producer, manual-commit batch consumer."""

from __future__ import annotations

import asyncio
import contextlib
from array import array
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from streamforge.engine.sdk import Message
from streamforge.engine.serde import Decoder, Encoder, Record, RecordError
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.kafka.origin_batches import ONE_ORIGIN, OriginFilter
from streamforge.runtime.kafka.partitioning import partition_of

Headers = list[tuple[str, bytes]]

# Batches up to 512 KiB; a record over the request limit is reported, not retried forever.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable_idempotence": True,
    "acks": "all",
    "linger_ms": 0,  # every send is one whole batch we built (send_raw): waiting for more only adds latency
    "max_batch_size": 512 * 1024,
    "request_timeout_ms": 30_000,
}

PARTITIONS_KEPT = 16_384  # keys whose partition a producer remembers (10,000 series fit; an aggregator gives up in 2 s)

SKIP: tuple[dict[str, bytes], str] = ({}, "")  # the origin of a record from a node not wired to the consumer
ORIGINS_KEPT = 4096
READ_PER_KEPT = 8  # a batch reads at most this many records per record it may keep
FETCH_SCALE_MAX = 4  # a consumer that keeps a quarter or less of what it reads fetches 4x as much per partition

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": False,  # offsets are committed only after the batch's output is safe
    "auto_offset_reset": "earliest",
    "isolation_level": "read_committed",
    "max_poll_records": 2000,
    # A batch of 2,000 readings is ~300 KB across 12 partitions; a fetch of 64 KiB from each is ~4,000 readings.
    # Whatever a fetch brings beyond the batch waits unpacked, as ConsumerRecords: at 256 KiB a partition, two
    # consumers of a gateway at 10,000 series held ~36,000 of them (~15 MB; 1 MiB, aiokafka's default, held more).
    # A larger record batch still comes whole: the broker returns the first batch past the limit.
    "max_partition_fetch_bytes": 64 * 1024,
}

# A reader of a topic up to the end offsets it asked for (a node's changelog, a sink's saved offsets) waits at most
# this long in a fetch for data that is not there. A broker answers one connection's requests in order: at aiokafka's
# default (500 ms) the end-offsets request queued behind the first fetch, and every node start took 0.5 s longer.
READ_TO_END_WAIT_MS = 10


def node_headers(flow_id: str, node_id: str) -> Headers:
    """The provenance headers every record carries (DESIGN.md §3)."""
    return [("sf-flow", flow_id.encode()), ("sf-node", node_id.encode())]


class _Lifecycle:
    """start/stop and `async with` around the wrapped aiokafka client."""

    _client: AIOKafkaProducer | AIOKafkaConsumer

    async def start(self) -> None:
        await self._client.start()

    async def stop(self) -> None:
        await self._client.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@dataclass(frozen=True)
class Delivered:
    """A record Kafka acknowledged: where it now lives."""

    index: int
    partition: int
    offset: int


@dataclass
class ProduceReport:
    """Outcome of one send_batch: what Kafka acknowledged, what was refused and why."""

    rejected: list[RecordError] = field(default_factory=list)  # bad records, never sent
    failed: list[tuple[int, BaseException]] = field(default_factory=list)  # sent, not acknowledged
    # Per partition batch Kafka acknowledged: the records' indexes and the batch's partition and first offset. Where
    # each record lives is worked out only if asked (the hot path counts them: a record each was a cost per record).
    acknowledged: list[tuple[Sequence[int], int, int]] = field(default_factory=list)

    @property
    def delivered_count(self) -> int:
        return sum(len(indexes) for indexes, _, _ in self.acknowledged)

    @property
    def delivered(self) -> list[Delivered]:
        return [Delivered(index, partition, first + position) for indexes, partition, first in self.acknowledged
                for position, index in enumerate(indexes)]  # fmt: skip


class BatchProducer(_Lifecycle):
    """Encodes and sends whole batches: one await per partition batch, never per record.

    Guarantee: a record counts as sent only once Kafka acknowledged it (acks=all, idempotent
    producer, so retries after a broker restart create no duplicates).
    """

    def __init__(self, kafka: KafkaAccess, **overrides: Any) -> None:
        """`overrides`: producer settings, and for another cluster than `kafka`'s login, its security settings."""
        self.producer = self._client = AIOKafkaProducer(**{**kafka.client_options(), **PRODUCER_DEFAULTS, **overrides})
        self._partitioner = DefaultPartitioner()
        # murmur2 costs µs in Python; asset ids repeat, so hash each key once per partition count (a dict each: a
        # (key, count) tuple per key was ~60 B more of it). Bounded, and given up by a producer whose keys do not
        # repeat (an aggregate's asset|parameter|window): filled with fewer hits than entries, it only held memory
        # (4.5 MB at 10,000 series) and cost a lookup per key.
        self._partition_of: dict[int, dict[bytes, int]] | None = {}
        self._hits = 0

    async def send_records(
        self,
        topic: str,
        records: Sequence[Record],
        encoder: Encoder,
        headers: Headers | None = None,
        key_of: Callable[[Record], str] = lambda record: str(record["asset_id"]),
        encoded_as: Mapping[int, bytes] | None = None,
    ) -> ProduceReport:
        """Encode and send `records`; a bad record is rejected alone and the others are sent.

        `encoded_as` maps id(record) to bytes that already encode it with this encoder's schema (a record a
        processor passed through unchanged): those are sent as they are, not encoded again.
        """
        if encoded_as:
            header = encoder.header
            values: list[bytes | None] = [None] * len(records)
            todo: list[int] = []
            for index, record in enumerate(records):
                raw = encoded_as.get(id(record))
                if raw is not None and raw.startswith(header):
                    values[index] = raw
                else:
                    todo.append(index)
            encoded = encoder.encode_batch([records[index] for index in todo])
            for position, value in encoded.ok:
                values[todo[position]] = value
            encoded.errors = [replace(error, index=todo[error.index]) for error in encoded.errors]
            encoded.ok = [(index, value) for index, value in enumerate(values) if value is not None]  # in order
        else:
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
        by_partition: Mapping[int, Iterable[tuple[int, bytes | None, bytes]]]
        count = len(partitions)
        if count == 1:
            # A changelog: nothing to hash (its many keys would also crowd the asset ids out of the cache), and the
            # items go into the batches as they come, each freed once copied (a checkpoint is 30,000 of them).
            by_partition = {partitions[0]: items}
        else:
            grouped: defaultdict[int, list[tuple[int, bytes | None, bytes]]] = defaultdict(list)
            # The keys whose partition is known: empty for good if _place gives the memory up mid-batch.
            known = self._partition_of.setdefault(count, {}) if self._partition_of is not None else {}
            for item in items:
                partition = known.get(item[1]) if item[1] is not None else None
                if partition is None:
                    partition = self._place(item[1], partitions)
                else:
                    self._hits += 1
                grouped[partition].append(item)
            by_partition = grouped
        pending: list[tuple[asyncio.Future[Any], array[int]]] = []
        record_headers = headers or []
        # Every record of a batch built here carries the same headers: its first says so, and a consumer not wired
        # to their node passes over the whole batch unread (origin_batches.py).
        first_headers = [*record_headers, ONE_ORIGIN] if record_headers else record_headers
        for partition, chunk in by_partition.items():
            builder = self.producer.create_batch()
            indexes = array("q")  # machine integers: no object per record sent
            for index, key, value in chunk:
                stamped = record_headers if indexes else first_headers
                if builder.append(key=key, value=value, timestamp=None, headers=stamped) is None:
                    pending.append((await self.producer.send_batch(builder, topic, partition=partition), indexes))
                    builder, indexes = self.producer.create_batch(), array("q")
                    if builder.append(key=key, value=value, timestamp=None, headers=first_headers) is None:
                        raise ValueError(f"record #{index} for {topic} is larger than max_batch_size")
                indexes.append(index)
            pending.append((await self.producer.send_batch(builder, topic, partition=partition), indexes))
        outcomes = await asyncio.gather(*(future for future, _ in pending), return_exceptions=True)
        report = ProduceReport()
        for (_, indexes), outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                report.failed.extend((index, outcome) for index in indexes)
            else:
                report.acknowledged.append((indexes, outcome.partition, outcome.offset))
        return report

    def _place(self, key: bytes | None, partitions: list[int]) -> int:
        """The partition of a key not remembered: hashed, and remembered unless this producer's keys do not repeat
        (its memory filled with fewer hits than entries: it is given up)."""
        if key is None:  # no key: any partition (the default partitioner picks one at random)
            return int(self._partitioner(None, partitions, partitions))
        count = len(partitions)
        partition = partitions[partition_of(key, count)]
        cache = self._partition_of
        if cache is not None:
            known = cache.setdefault(count, {})
            if len(known) >= PARTITIONS_KEPT:
                known.clear()
                if self._hits < PARTITIONS_KEPT:
                    self._partition_of = None
                    return partition
                self._hits = 0
            known[key] = partition
        return partition


@dataclass
class ConsumedBatch:
    """A poll's worth of records; commit it once its output is safe."""

    records: list[Message] = field(default_factory=list)
    undecodable: list[tuple[ConsumerRecord, str]] = field(default_factory=list)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    skipped: int = 0  # records from nodes not wired to this consumer


class BatchConsumer(_Lifecycle):
    """Manual-commit consumer that decodes whole batches and keeps only records from wired nodes."""

    def __init__(
        self,
        kafka: KafkaAccess,
        group_id: str | None,  # None: no group, no commits (e.g. a debug tap)
        topics: Sequence[str],
        decoder: Decoder,
        upstream: Iterable[tuple[str, str]] | None = None,
        **overrides: Any,
    ) -> None:
        # (flow, node) pairs whose records this consumer keeps, as header bytes; None keeps everything.
        self.upstream = None if upstream is None else {(f.encode(), n.encode()) for f, n in upstream}
        # Whole batches of other nodes' records are passed over before aiokafka makes their records.
        self._passed_over = None if self.upstream is None else OriginFilter(self.upstream)
        options = {**CONSUMER_DEFAULTS, **overrides}
        self.consumer = self._client = kafka.consumer(
            *topics, group_id=group_id, value_deserializer=self._passed_over, **options
        )
        self.decoder = decoder
        self._fetch_bytes = int(options.get("max_partition_fetch_bytes", 1024 * 1024))
        self._kept_share = 1.0  # of the records read, the share kept: a moving average over batches
        # A producer stamps the same headers on every record it sends: judged once per distinct set, not per record.
        self._origin_of: dict[tuple[tuple[str, bytes], ...], tuple[dict[str, bytes], str]] = {}

    def _origin(self, raw: tuple[tuple[str, bytes], ...]) -> tuple[dict[str, bytes], str]:
        """The headers as a dict and the node that wrote them, or SKIP for a node not wired to this consumer."""
        headers = dict(raw)
        headers.pop(ONE_ORIGIN[0], None)  # true only of the batch it came in: never handed on
        origin = (headers.get("sf-flow", b""), headers.get("sf-node", b""))
        judged = SKIP if self.upstream is not None and origin not in self.upstream else (headers, origin[1].decode())
        if len(self._origin_of) < ORIGINS_KEPT:  # per-record headers (a DLQ letter's) would grow it without end
            self._origin_of[raw] = judged
        return judged

    async def next_batch(self, timeout_ms: int = 1000, max_records: int | None = None) -> ConsumedBatch:
        """Up to `max_records` kept records. Where most of a poll belongs to other nodes (flows sharing a spec topic),
        what is already fetched is polled again, up to READ_PER_KEPT x `max_records` read: the batch's state save,
        produce and commit are then spread over a full batch, not over the quarter of one that was kept."""
        batch = ConsumedBatch()
        messages: list[ConsumerRecord] = []
        origins: list[tuple[dict[str, bytes], str]] = []
        origin_of = self._origin_of
        read, wait_ms, room = 0, timeout_ms, max_records
        while True:
            polled = await self.consumer.getmany(timeout_ms=wait_ms, max_records=room)
            if self._passed_over is not None:  # batches passed over whole move the offsets to commit too
                skipped, skipped_to = self._passed_over.take()
                batch.skipped += skipped
                for tp, offset in skipped_to.items():
                    batch.next_offsets[tp] = max(offset, batch.next_offsets.get(tp, 0))
            for tp, tp_messages in polled.items():
                read += len(tp_messages)
                batch.next_offsets[tp] = max(tp_messages[-1].offset + 1, batch.next_offsets.get(tp, 0))
                for message in tp_messages:
                    origin = origin_of.get(message.headers)
                    if origin is None:
                        origin = self._origin(message.headers)
                    if origin is SKIP:
                        batch.skipped += 1
                        continue
                    messages.append(message)
                    origins.append(origin)
            if not polled or not batch.skipped or max_records is None:
                break
            if len(messages) >= max_records or read >= READ_PER_KEPT * max_records:
                break
            wait_ms, room = 0, max_records - len(messages)  # only what the fetcher holds: never waiting for more
        if self._passed_over is not None:
            self._fit_fetch(len(messages), batch.skipped)
        decoded = await self.decoder.decode_batch([message.value for message in messages])
        records = batch.records
        for index, record in decoded.ok:
            message = messages[index]
            headers, source = origins[index]
            records.append(Message(record, message.topic, message.partition, message.offset, source, message.value,
                                   message.key, headers))  # fmt: skip
        batch.undecodable.extend((messages[error.index], error.message) for error in decoded.errors)
        return batch

    @property
    def partition_fetch_bytes(self) -> int:
        """What a fetch asks of each partition now."""
        return int(self.consumer._fetcher._max_partition_fetch_bytes)

    def _fit_fetch(self, kept: int, skipped: int) -> None:
        """Fetch more per partition as the share of what is read that is kept falls, up to FETCH_SCALE_MAX x: a fetch
        then brings about as many kept records as one that keeps all it reads. Why: once other flows' batches were
        passed over whole, what 3 flows beside one still cost was 4x the fetch round trips (beside / alone 0.69 at
        64 KiB a partition, 0.90 at 256 KiB); 256 KiB for every consumer would hold 4x the records read ahead."""
        if kept + skipped == 0:
            return  # an idle poll says nothing about the share
        self._kept_share = 0.8 * self._kept_share + 0.2 * kept / (kept + skipped)
        scale = round(1 / max(self._kept_share, 1 / FETCH_SCALE_MAX))  # the share is at most 1: 1 to the cap
        # aiokafka reads this attribute for every fetch request it builds (0.14.0, Fetcher._create_fetch_requests).
        self.consumer._fetcher._max_partition_fetch_bytes = self._fetch_bytes * scale

    async def start_at_end(self, timeout_s: float = 10.0) -> None:
        """For a consumer without a group: read from the current end of every partition, fixed now. (A lazily
        resolved "latest" would skip what is written between start() and the first fetch.)"""
        partitions = await assigned_partitions(self.consumer, timeout_s)
        await self.consumer.seek_to_end(*partitions)
        for tp in partitions:
            await self.consumer.position(tp)

    async def commit(self, batch: ConsumedBatch) -> None:
        """Commit past `batch`: call only after everything it produced is acknowledged or written."""
        if batch.next_offsets:
            await self.consumer.commit(batch.next_offsets)


Ranges = Mapping[TopicPartition, tuple[int, int]]  # per partition: (first offset, end offset), the end excluded


async def read_range(consumer: AIOKafkaConsumer, ranges: Ranges) -> AsyncIterator[list[ConsumerRecord]]:
    """Every record of each partition from its first offset up to its end offset, a fetch's worth at a time. The
    partitions are assigned to `consumer`, built with fetch_max_wait_ms=READ_TO_END_WAIT_MS (else each read waits out
    the broker's 500 ms at the end)."""
    for tp, (start, _end) in ranges.items():
        consumer.seek(tp, start)
    pending = {tp for tp, (start, end) in ranges.items() if end > start}
    while pending:
        for tp, records in (await consumer.getmany(*pending, timeout_ms=1000)).items():
            end = ranges[tp][1]
            yield records if records[-1].offset < end else [record for record in records if record.offset < end]
        pending = {tp for tp in pending if await consumer.position(tp) < ranges[tp][1]}


async def read_to_end(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> AsyncIterator[list[ConsumerRecord]]:
    """Every record of `partitions` from their start to their end offsets as of now (a node's changelog, a sink's
    saved offsets); as read_range."""
    consumer.assign(partitions)
    starts, ends = await consumer.beginning_offsets(partitions), await consumer.end_offsets(partitions)
    async for records in read_range(consumer, {tp: (starts[tp], ends[tp]) for tp in partitions}):
        yield records


async def assigned_partitions(consumer: AIOKafkaConsumer, timeout_s: float) -> list[TopicPartition]:
    """Subscribed without a group, a consumer is given every partition of its topics once metadata arrives."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not consumer.assignment() and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110 (aiokafka offers no event for it)
        await asyncio.sleep(0.05)
    return sorted(consumer.assignment())


async def recent_records(kafka: KafkaAccess, topic: str, decoder: Decoder, limit: int,
                         timeout_s: float = 5.0) -> list[tuple[int, int, Record]]:  # fmt: skip
    """The newest `limit` records of `topic` (per partition at most `limit`), oldest first, as
    (timestamp_ms, partition, record); read without a consumer group, so nothing is committed or moved."""
    consumer = kafka.consumer(group_id=None, enable_auto_commit=False, fetch_max_wait_ms=READ_TO_END_WAIT_MS)
    await consumer.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        # Asked first: a consumer started on a topic that does not exist waits out the metadata timeout (~40 s).
        if topic not in await consumer.topics():
            return []
        consumer.subscribe([topic])
        partitions = await assigned_partitions(consumer, timeout_s)
        if not partitions:
            return []
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        raw: list[ConsumerRecord[bytes, bytes]] = []
        with contextlib.suppress(TimeoutError):  # what was read by then
            async with asyncio.timeout_at(deadline):
                async for records in read_range(consumer, {tp: (max(starts[tp], ends[tp] - limit), ends[tp])
                                                           for tp in partitions}):  # fmt: skip
                    raw += records
    finally:
        await consumer.stop()
    decoded = await decoder.decode_batch([m.value or b"" for m in raw])
    records = sorted(((raw[i].timestamp, raw[i].partition, record) for i, record in decoded.ok), key=lambda r: r[:2])
    return records[-limit:]
