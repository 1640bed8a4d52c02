"""The source runner: connect -> poll -> produce (acks=all) -> state to the changelog -> acknowledge the device."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from streamforge.engine.connection import PeerLink
from streamforge.engine.sdk import Emitted, SourceNode
from streamforge.runtime.gateway.runners.base import NodeRunner
from streamforge.runtime.kafka.clients import BatchProducer

BLOCKED_RECHECK_S = 0.5


class SourceRunner(NodeRunner):
    """A reading is acknowledged to its device only after Kafka holds it and the state it changed."""

    node: SourceNode[Any]

    async def _loop(self, producer: BatchProducer) -> None:
        link = PeerLink(self.node, self._connection_health)
        metrics = self.env.metrics
        poll_seconds = metrics.source_poll_seconds.labels(**self.labels)
        self._last_reading = metrics.source_last_reading.labels(**self.labels)
        self._started()
        waiting = False
        try:
            while True:
                blocked = self.env.producers_blocked()
                if blocked is not None:  # nothing taken, nothing acknowledged: the device or broker keeps it
                    if not waiting:
                        self.cell.degrade("disk", blocked)
                        waiting = True
                    await asyncio.sleep(BLOCKED_RECHECK_S)
                    continue
                if waiting:
                    self.cell.recover("disk")
                    waiting = False
                polling = time.perf_counter()
                emitted = await link.poll()
                if link.connected:
                    poll_seconds.observe(time.perf_counter() - polling)
                await self._deliver(producer, emitted)
        finally:
            await self.node.close()

    async def _deliver(self, producer: BatchProducer, emitted: Emitted) -> None:
        started = time.perf_counter()
        qualities = Counter(r["quality"] for records in emitted.values() for r in records if "quality" in r)
        for quality, count in qualities.items():
            self.env.metrics.source_readings.labels(**self.labels, quality=quality).inc(count)
        if qualities:
            self._last_reading.set(time.time())
        await self.outputs.send(producer, emitted)
        await self.changelog.save(producer)
        await self.node.acknowledge(emitted)
        self.env.metrics.batch_seconds.labels(**self.labels).observe(time.perf_counter() - started)
