"""A node's output ports: records encoded by their port's schema, produced, and acknowledged before anything moves."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamforge.engine.plan import NodePlan
from streamforge.engine.records import dead_letter, reason
from streamforge.engine.retry import Backoff
from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.sdk import RECORD_TYPE_OF_PORT, Emitted, Message, Node, PortType, Record
from streamforge.engine.serde import Encoder, encoder_for
from streamforge.runtime.gateway.runners.environment import RuntimeEnv
from streamforge.runtime.gateway.runners.status import StatusCell
from streamforge.runtime.kafka.clients import BatchProducer, ConsumedBatch, node_headers

log = logging.getLogger("streamforge.runtime")

DEAD_LETTER_TOPIC = "dlq.telemetry"


def passed_through(emitted: Emitted, inputs: Sequence[Message]) -> dict[int, bytes]:
    """The original bytes of each input record emitted unchanged (the same object), by the record's id: a delivery
    keeps these, not every input's reading until Kafka acknowledged the outputs."""
    out = {id(record) for records in emitted.values() for record in records}
    return {id(message.record): message.raw for message in inputs if message.raw and id(message.record) in out}


@dataclass
class _Port:
    topic: str
    encoder: Encoder


class OutputPorts:
    """Sends what a node emitted. Returns only once Kafka acknowledged every record (retrying with backoff while it
    does not, DEGRADED); a record its port's schema refuses becomes a dead letter, never a silent drop."""

    def __init__(self, plan: NodePlan, flow_id: str, env: RuntimeEnv, cls: type[Node[Any]], cell: StatusCell) -> None:
        self.plan, self.env, self.cls, self.cell = plan, env, cls, cell
        self.labels = {"flow": flow_id, "node": plan.node_id}
        self.headers = node_headers(flow_id, plan.node_id)
        self._ports: dict[str, _Port] = {}
        self._dead_letters: Encoder | None = None

    async def prepare(self) -> None:
        """Register each port's schema once, before the first batch: the hot path only encodes."""
        for out in self.plan.outputs:
            schema = SCHEMAS[RECORD_TYPE_OF_PORT[PortType(out.type)]] if out.type != "any" else None
            if schema is not None:
                self._ports[out.port] = _Port(out.topic, await encoder_for(self.env.registry, f"{out.topic}-value",
                                                                           schema))  # fmt: skip
        self._dead_letters = await encoder_for(self.env.registry, f"{DEAD_LETTER_TOPIC}-value", SCHEMAS["dead_letter"])

    async def send(
        self, producer: BatchProducer, emitted: Emitted, encoded_as: Mapping[int, bytes] | None = None
    ) -> None:
        """Produce every output record; one in `encoded_as` (an input passed through: `passed_through`) is sent as its
        original bytes."""
        rejected: list[Record] = []
        for port, records in emitted.items():
            if not records:
                continue
            out = self._ports.get(port)
            if out is None:
                raise RuntimeError(f"node {self.plan.node_id} emitted to port {port!r}, which has no topic")
            pending = list(records)
            backoff = Backoff(0.2, 30.0)
            while pending:
                report = await producer.send_records(out.topic, pending, out.encoder, self.headers,
                                                     key_of=functools.partial(self.cls.record_key, port),
                                                     encoded_as=encoded_as)  # fmt: skip
                self.env.metrics.records_out.labels(**self.labels, port=port).inc(report.delivered_count)
                for error in report.rejected:
                    log.error("output record rejected", extra={**self.labels, "port": port, "error": str(error)})
                    self.env.metrics.errors.labels(**self.labels, kind="encode").inc()
                    rejected.append(self._rejected_letter(out.topic, pending[error.index], str(error)))
                if not report.failed:
                    break
                self.cell.degrade("kafka", f"Kafka did not acknowledge {len(report.failed)} records")
                pending = [pending[index] for index, _ in report.failed]
                await asyncio.sleep(backoff.next_delay())
            self.cell.recover("kafka")
        if rejected:
            await self.dead_letters(producer, rejected)

    def _rejected_letter(self, topic: str, record: Record, why: str) -> Record:
        asset_id = record.get("asset_id")
        return dead_letter(
            self.plan.node_id, [reason("encode_error", why)], json.dumps(record, default=str).encode(), topic,
            asset_id=asset_id if isinstance(asset_id, str) else None,
        )  # fmt: skip

    async def dead_letters(self, producer: BatchProducer, letters: list[Record]) -> None:
        assert self._dead_letters is not None
        report = await producer.send_records(
            DEAD_LETTER_TOPIC, letters, self._dead_letters, self.headers,
            key_of=lambda letter: str(letter.get("asset_id") or letter["source_topic"]),
        )  # fmt: skip
        if report.failed or report.rejected:
            raise RuntimeError(f"dead letters not acknowledged: {report.failed or report.rejected}")

    async def undecodable(self, producer: BatchProducer, batch: ConsumedBatch) -> None:
        """Input records that do not decode go to the DLQ as they were, with the reason."""
        if not batch.undecodable:
            return
        self.env.metrics.errors.labels(**self.labels, kind="decode").inc(len(batch.undecodable))
        letters = [
            dead_letter(self.plan.node_id, [reason("decode_error", why)], message.value or b"", message.topic,
                        message.partition, message.offset)
            for message, why in batch.undecodable
        ]  # fmt: skip
        await self.dead_letters(producer, letters)
