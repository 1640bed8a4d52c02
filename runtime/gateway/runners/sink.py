"""The sink runner: consume -> write (on a live connection, retried while the destination is away) -> commit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamforge.engine.connection import PeerLink, describe_failure
from streamforge.engine.sdk import Message, PeerUnavailable, SinkNode
from streamforge.runtime.gateway.runners.consumer import ConsumingRunner
from streamforge.runtime.kafka.clients import BatchProducer, ConsumedBatch


class SinkRunner(ConsumingRunner):
    """Offsets are committed only after write() returned: a crash or an outage replays, never loses."""

    node: SinkNode[Any]

    async def _begin(self) -> None:
        self._link = PeerLink(self.node, self._connection_health)
        await self._link.connect()  # a destination that is down now makes the node DEGRADED, not the deploy fail

    async def _end(self) -> None:
        await self.node.close()

    async def _handle(self, producer: BatchProducer, batch: ConsumedBatch) -> None:
        if batch.records:
            await self._write(batch.records)
        self._safe = dict(self._positions)

    async def _write(self, records: Sequence[Message]) -> None:
        link = self._link
        while True:
            if not link.connected and await link.connect() is not None:
                await link.wait()
                continue
            try:
                await self.node.write(records)
            except Exception as exc:  # any failure: keep the batch, reconnect, retry; never commit past it
                self.env.metrics.errors.labels(**self.labels, kind="write").inc()
                await link.disconnected(PeerUnavailable(f"write failed: {describe_failure(exc)}"))
                await link.wait()
                continue
            self.env.metrics.records_out.labels(**self.labels, port="write").inc(len(records))
            return
