"""Node runners: the one coroutine each node runs, with Kafka on both sides and the delivery guarantees.

- source: poll -> produce (acks=all) -> state to changelog -> acknowledge the device.
- processor: consume -> process -> produce outputs and wait for acks -> state to changelog -> commit,
  never past offsets the node still retains.
- sink: consume -> write (retried with backoff while the destination is down) -> commit.
Offsets are never auto-committed, so a crash anywhere replays from the last safe point (at-least-once);
idempotent keys downstream make replays invisible.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Gauge

from streamforge.engine.compiler import NodePlan
from streamforge.engine.records import dead_letter, now_utc, reason
from streamforge.engine.registry import NodeRegistry
from streamforge.engine.schema_registry import SchemaRegistry
from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.sdk import (
    RECORD_TYPE_OF_PORT,
    Emitted,
    Message,
    Node,
    NodeContext,
    PortType,
    ProcessorNode,
    Record,
    SinkNode,
    SourceNode,
)
from streamforge.engine.serde import Decoder, Encoder, encoder_for
from streamforge.runtime.gateway.metrics import NodeMetrics
from streamforge.runtime.kafka.clients import BatchConsumer, BatchProducer, ConsumedBatch, node_headers

log = logging.getLogger("streamforge.runtime")

DEAD_LETTER_TOPIC = "dlq.telemetry"
MAX_BACKOFF_S = 30.0


class NodeStatus(StrEnum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    DEGRADED = "DEGRADED"  # running, but retrying a destination or a device
    FAILED = "FAILED"  # restart limit reached: needs a person
    STOPPED = "STOPPED"


def changelog_topic(flow_id: str, node_id: str) -> str:
    return f"_sf.{flow_id}.{node_id}.state"


@dataclass
class RuntimeEnv:
    """What every runner needs from its process."""

    bootstrap: str
    registry: SchemaRegistry
    metrics: NodeMetrics
    node_types: NodeRegistry
    batch_size: int = 2000


@dataclass
class _PortOut:
    topic: str
    encoder: Encoder


@dataclass
class NodeRunner:
    """Runs one node per its plan. `ready` is set once the node started; `status` is live."""

    plan: NodePlan
    flow_id: str
    env: RuntimeEnv
    status: NodeStatus = NodeStatus.STARTING
    last_error: str | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        cls = self.env.node_types.get(self.plan.type)
        if cls is None:
            raise RuntimeError(f"node type {self.plan.type!r} of node {self.plan.node_id} is not installed")
        self.cls = cls
        context = NodeContext(self.flow_id, self.plan.node_id, on_health=self._device_health)
        self.node: Node[Any] = cls(cls.Config.model_validate(self.plan.config), context)
        self.labels = {"flow": self.flow_id, "node": self.plan.node_id}
        self._ports: dict[str, _PortOut] = {}
        self._dead_letters: Encoder | None = None
        self._state_topic = changelog_topic(self.flow_id, self.plan.node_id)
        self._commands: asyncio.Queue[tuple[str, dict[str, Any], asyncio.Future[Emitted]]] = asyncio.Queue()

    async def submit(self, name: str, args: dict[str, Any]) -> Emitted:
        """Run an operator command inside the node's loop; returns once its output is acknowledged."""
        if not isinstance(self.node, ProcessorNode) or name not in self.node.commands:
            known = ", ".join(getattr(self.node, "commands", ())) or "none"
            raise ValueError(f"node {self.plan.node_id} ({self.plan.type}) has no command {name!r}; commands: {known}")
        future: asyncio.Future[Emitted] = asyncio.get_running_loop().create_future()
        await self._commands.put((name, args, future))
        return await future

    async def _run_commands(
        self, node: ProcessorNode[Any], emitted: Emitted
    ) -> list[tuple[asyncio.Future[Emitted], Emitted]]:
        done = []
        while not self._commands.empty():
            name, args, future = self._commands.get_nowait()
            try:
                result = await node.command(name, args)
            except ValueError as refusal:
                future.set_exception(refusal)
                continue
            for port, records in result.items():
                emitted.setdefault(port, []).extend(records)
            done.append((future, result))
        return done

    def _device_health(self, problem: str | None) -> None:
        if problem is not None:
            self.env.metrics.errors.labels(**self.labels, kind="device").inc()
            self._set_status(NodeStatus.DEGRADED, problem)
        elif self.status is NodeStatus.DEGRADED:
            self._set_status(NodeStatus.RUNNING)

    def _set_status(self, status: NodeStatus, error: str | None = None) -> None:
        if status is not self.status:
            log.info("node status", extra={**self.labels, "status": status.value, "error": error})
        self.status = status
        self.last_error = error if error is not None else (self.last_error if status is NodeStatus.DEGRADED else None)
        for value in NodeStatus:
            self.env.metrics.status.labels(**self.labels, status=value.value).set(1 if value is status else 0)

    async def _prepare_outputs(self) -> None:
        for out in self.plan.outputs:
            schema = SCHEMAS[RECORD_TYPE_OF_PORT[PortType(out.type)]] if out.type != "any" else None
            if schema is not None:
                self._ports[out.port] = _PortOut(
                    out.topic, await encoder_for(self.env.registry, f"{out.topic}-value", schema)
                )
        self._dead_letters = await encoder_for(self.env.registry, f"{DEAD_LETTER_TOPIC}-value", SCHEMAS["dead_letter"])

    async def run(self) -> None:
        """The node's whole life; returns on cancel, raises on failure (the supervisor restarts it)."""
        producer = BatchProducer(self.env.bootstrap)
        await producer.start()
        try:
            await self._prepare_outputs()
            async with self.node:
                self.node.restore(await read_state(self.env.bootstrap, self._state_topic))
                if isinstance(self.node, SourceNode):
                    await self._run_source(self.node, producer)
                elif isinstance(self.node, ProcessorNode | SinkNode):
                    await self._run_consumer(producer, self.node)
        finally:
            await producer.stop()

    def _started(self) -> None:
        self._set_status(NodeStatus.RUNNING)
        self.ready.set()

    async def _run_source(self, node: SourceNode[Any], producer: BatchProducer) -> None:
        self._started()
        poll_seconds = self.env.metrics.source_poll_seconds.labels(**self.labels)
        last_reading = self.env.metrics.source_last_reading.labels(**self.labels)
        while True:
            polling = time.perf_counter()
            emitted = await node.poll()
            poll_seconds.observe(time.perf_counter() - polling)
            self._count_readings(emitted, last_reading)
            started = time.perf_counter()
            await self._send(producer, emitted)
            await self._save_state(producer)
            await node.acknowledge(emitted)
            self.env.metrics.batch_seconds.labels(**self.labels).observe(time.perf_counter() - started)

    def _count_readings(self, emitted: Emitted, last_reading: Gauge) -> None:
        qualities = Counter(r["quality"] for records in emitted.values() for r in records if "quality" in r)
        for quality, count in qualities.items():
            self.env.metrics.source_readings.labels(**self.labels, quality=quality).inc(count)
        if qualities:
            last_reading.set(time.time())

    async def _run_consumer(self, producer: BatchProducer, node: ProcessorNode[Any] | SinkNode[Any]) -> None:
        upstream = {(self.flow_id, source) for inp in self.plan.inputs for source in inp.upstream}
        topics = sorted({inp.topic for inp in self.plan.inputs})
        assert self.plan.consumer_group is not None
        consumer = BatchConsumer(
            self.env.bootstrap, self.plan.consumer_group, topics, Decoder(self.env.registry), upstream=upstream,
            max_poll_records=self.env.batch_size,
        )  # fmt: skip
        await consumer.start()
        port_of_topic = {inp.topic: inp.port for inp in self.plan.inputs}
        positions: dict[TopicPartition, int] = {}  # next offset to read, per partition
        committed: dict[TopicPartition, int] = {}
        next_tick = time.monotonic() + 1.0
        try:
            self._started()
            while True:
                until_tick_ms = int((next_tick - time.monotonic()) * 1000)  # wake up for the processor's tick
                batch = await consumer.next_batch(timeout_ms=min(max(10, until_tick_ms), 1000),
                                                  max_records=self.env.batch_size)  # fmt: skip
                started = time.perf_counter()
                for message in batch.records:
                    message.port = port_of_topic.get(message.topic, "")
                self.env.metrics.records_in.labels(**self.labels).inc(len(batch.records))
                positions.update(batch.next_offsets)
                await self._dead_letter_undecodable(producer, batch)
                if isinstance(node, ProcessorNode):
                    emitted = await node.process(batch.records) if batch.records else {}
                    if time.monotonic() >= next_tick:
                        next_tick = time.monotonic() + 1.0
                        for port, records in (await node.tick(now_utc())).items():
                            emitted.setdefault(port, []).extend(records)
                    answered = await self._run_commands(node, emitted)
                    await self._send(producer, emitted, batch.records)
                    await self._save_state(producer)
                    for future, result in answered:
                        future.set_result(result)
                    retained = node.retained()
                    safe = {tp: min(offset, retained.get((tp.topic, tp.partition), offset))
                            for tp, offset in positions.items()}  # fmt: skip
                else:
                    if batch.records:
                        await self._write_with_retry(node, batch.records)
                    safe = positions
                assigned = consumer.consumer.assignment()
                commit = {tp: offset for tp, offset in safe.items() if tp in assigned and committed.get(tp) != offset}
                if commit:  # only what moved: an idle node sends no commits
                    await consumer.consumer.commit(commit)
                    committed.update(commit)
                self._update_lag(consumer.consumer, positions)
                if batch.records:
                    self.env.metrics.batch_seconds.labels(**self.labels).observe(time.perf_counter() - started)
        finally:
            await consumer.stop()

    async def _write_with_retry(self, node: SinkNode[Any], records: Sequence[Message]) -> None:
        """A destination that is down is retried with backoff (DEGRADED); Kafka keeps the backlog."""
        backoff = 0.5
        while True:
            try:
                await node.write(records)
            except Exception as exc:  # any write failure: keep the batch, retry, never commit past it
                self.env.metrics.errors.labels(**self.labels, kind="write").inc()
                self._set_status(NodeStatus.DEGRADED, f"write failed: {exc!r}")
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
                continue
            if self.status is NodeStatus.DEGRADED:
                self._set_status(NodeStatus.RUNNING)
            self.env.metrics.records_out.labels(**self.labels, port="write").inc(len(records))
            return

    def _update_lag(self, consumer: AIOKafkaConsumer, positions: dict[TopicPartition, int]) -> None:
        lag = 0
        for tp, position in positions.items():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                lag += max(0, highwater - position)
        self.env.metrics.lag.labels(**self.labels).set(lag)

    async def _send(self, producer: BatchProducer, emitted: Emitted, inputs: Sequence[Message] = ()) -> None:
        """Produce every output record and return only once Kafka acknowledged all of them.

        An input record passed through unchanged (the same object) is sent as its original bytes.
        """
        encoded_as = {id(message.record): message.raw for message in inputs if message.raw}
        rejected: list[Record] = []
        for port, records in emitted.items():
            if not records:
                continue
            out = self._ports.get(port)
            if out is None:
                raise RuntimeError(f"node {self.plan.node_id} emitted to port {port!r}, which has no topic")
            pending = list(records)
            backoff = 0.2
            while pending:
                report = await producer.send_records(
                    out.topic,
                    pending,
                    out.encoder,
                    self._headers,
                    key_of=functools.partial(self.cls.record_key, port),
                    encoded_as=encoded_as,
                )
                self.env.metrics.records_out.labels(**self.labels, port=port).inc(len(report.delivered))
                for error in report.rejected:
                    log.error("output record rejected", extra={**self.labels, "port": port, "error": str(error)})
                    self.env.metrics.errors.labels(**self.labels, kind="encode").inc()
                    rejected.append(self._rejected_letter(out.topic, pending[error.index], str(error)))
                if not report.failed:
                    break
                self._set_status(NodeStatus.DEGRADED, f"Kafka did not acknowledge {len(report.failed)} records")
                pending = [pending[index] for index, _ in report.failed]
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
            if self.status is NodeStatus.DEGRADED:
                self._set_status(NodeStatus.RUNNING)
        if rejected:
            await self._send_dead_letters(producer, rejected)

    @property
    def _headers(self) -> list[tuple[str, bytes]]:
        return node_headers(self.flow_id, self.plan.node_id)

    def _rejected_letter(self, topic: str, record: Record, why: str) -> Record:
        asset_id = record.get("asset_id")
        return dead_letter(
            self.plan.node_id, [reason("encode_error", why)], json.dumps(record, default=str).encode(), topic,
            asset_id=asset_id if isinstance(asset_id, str) else None,
        )  # fmt: skip

    async def _send_dead_letters(self, producer: BatchProducer, letters: list[Record]) -> None:
        assert self._dead_letters is not None
        report = await producer.send_records(
            DEAD_LETTER_TOPIC, letters, self._dead_letters, self._headers,
            key_of=lambda letter: str(letter.get("asset_id") or letter["source_topic"]),
        )  # fmt: skip
        if report.failed or report.rejected:
            raise RuntimeError(f"dead letters not acknowledged: {report.failed or report.rejected}")

    async def _dead_letter_undecodable(self, producer: BatchProducer, batch: ConsumedBatch) -> None:
        if not batch.undecodable:
            return
        self.env.metrics.errors.labels(**self.labels, kind="decode").inc(len(batch.undecodable))
        letters = [
            dead_letter(self.plan.node_id, [reason("decode_error", why)], message.value or b"", message.topic,
                        message.partition, message.offset)
            for message, why in batch.undecodable
        ]  # fmt: skip
        await self._send_dead_letters(producer, letters)

    async def _save_state(self, producer: BatchProducer) -> None:
        changes = self.node.state_changes()
        if not changes:
            return
        items = [(index, key.encode(), json.dumps(value).encode() if value is not None else b"")
                 for index, (key, value) in enumerate(changes.items())]  # fmt: skip
        report = await producer.send_raw(self._state_topic, items)
        if report.failed:
            raise RuntimeError(f"state changelog {self._state_topic} not acknowledged: {report.failed[0][1]!r}")


async def read_state(bootstrap: str, topic: str) -> dict[str, Any]:
    """The whole state in a compacted changelog (last value per key wins; empty value deletes)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            return {}
        tps = [TopicPartition(topic, 0)]  # changelogs are created with one partition (Gateway._ensure_topics)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        state: dict[str, Any] = {}
        while True:
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= end for tp, end in ends.items()):
                return state
            for messages in (await consumer.getmany(timeout_ms=1000)).values():
                for message in messages:
                    key = message.key.decode()
                    if message.value:
                        state[key] = json.loads(message.value)
                    else:
                        state.pop(key, None)
    finally:
        await consumer.stop()
