"""What processors and sinks share: consume a batch, hand it to the kind, commit only what is safe, report lag."""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import abstractmethod
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from streamforge.engine.serde import Decoder
from streamforge.runtime.gateway.runners.base import NodeRunner
from streamforge.runtime.kafka.clients import BatchConsumer, BatchProducer, ConsumedBatch

TICK_S = 1.0


class ConsumingRunner(NodeRunner):
    """Offsets are never auto-committed: `_handle` sets `_safe`, the offsets it is done with, and only those move.
    The node's tick() is due about once a second, also when no input arrives."""

    lag = 0  # records not yet done with (after the last safe offset) up to the end of the input topics

    async def _loop(self, producer: BatchProducer) -> None:
        upstream = {(self.flow_id, source) for inp in self.plan.inputs for source in inp.upstream}
        topics = sorted({inp.topic for inp in self.plan.inputs})
        assert self.plan.consumer_group is not None
        consumer = BatchConsumer(
            self.env.kafka, self.plan.consumer_group, topics, Decoder(self.env.registry), upstream=upstream,
            max_poll_records=self.env.batch_size,
        )  # fmt: skip
        await consumer.start()
        port_of_topic = {inp.topic: inp.port for inp in self.plan.inputs}
        self._positions: dict[TopicPartition, int] = {}  # next offset to read, per partition
        self._safe: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._first: dict[TopicPartition, int] = {}  # first offset read per partition in this run
        self._ends: dict[TopicPartition, int] = {}  # log end offsets asked for while stuck (the fetcher is not)
        self._consumer = consumer.consumer
        self._committing: asyncio.Future[None] | None = None
        self._next_tick = self.node.clock.monotonic() + TICK_S
        self._between_batches = True  # no batch half done: what the node holds matches what Kafka acknowledged
        try:
            await self._begin()
            self._started()
            while True:
                batch = await consumer.next_batch(timeout_ms=self._wait_ms(), max_records=self.env.batch_size)
                started = time.perf_counter()
                for message in batch.records:
                    message.port = port_of_topic.get(message.topic, "")
                if batch.next_offsets.keys() - self._first.keys():  # only until each partition read had a record kept
                    for message in batch.records:
                        self._first.setdefault(TopicPartition(message.topic, message.partition), message.offset)
                self.env.metrics.records_in.labels(**self.labels).inc(len(batch.records))
                self._positions.update(batch.next_offsets)
                self._between_batches = False
                await self.outputs.undecodable(producer, batch)
                await self._handle(producer, batch)
                self._between_batches = True
                await self._commit_safe()
                self._update_lag()
                if batch.records:
                    self.env.metrics.batch_seconds.labels(**self.labels).observe(time.perf_counter() - started)
                del batch  # not held while the next one is fetched and decoded: its delivery holds what it needs
        except asyncio.CancelledError:
            if self._between_batches:
                await self._stopping(producer)  # a clean stop keeps what is done: less to replay
                await self._commit_safe()
            raise
        finally:
            try:
                if self._committing is not None:
                    await self._committing  # a stop keeps the last commit: less to replay
                await self._end()
            finally:
                await consumer.stop()

    async def _commit_safe(self) -> None:
        """Commit what `_safe` moved past (an idle node sends no commits); one commit in flight, in order, not
        awaited here: the next batch is fetched and processed during the round trip (latency)."""
        assigned = self._consumer.assignment()
        commit = {tp: offset for tp, offset in self._safe.items()
                  if tp in assigned and self._committed.get(tp) != offset}  # fmt: skip
        if commit:
            if self._committing is not None:
                await self._committing
            self._committing = asyncio.ensure_future(self._commit(commit))

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        await self._consumer.commit(offsets)
        self._committed.update(offsets)

    def _wait_ms(self) -> int:
        """How long to wait for a batch: until the next tick at most."""
        return min(max(10, int((self._next_tick - self.node.clock.monotonic()) * 1000)), 1000)

    def _tick_due(self) -> datetime | None:
        """The time to give tick() when it is due (and the next one scheduled), else None."""
        clock = self.node.clock
        if clock.monotonic() < self._next_tick:
            return None
        self._next_tick = clock.monotonic() + TICK_S
        return clock.now()

    def _held_back(self, retained: dict[tuple[str, int], int], read: dict[TopicPartition, int] | None = None) -> None:
        """Commit up to what was read (by now, or `read`), never past an offset the node still holds in memory."""
        self._safe = {tp: min(offset, retained.get((tp.topic, tp.partition), offset))
                      for tp, offset in (self._positions if read is None else read).items()}  # fmt: skip

    async def _begin(self) -> None:
        """Before the first batch (a sink connects here)."""

    async def _stopping(self, producer: BatchProducer) -> None:
        """On a clean stop between two batches, before the last commit."""

    async def _end(self) -> None:
        """After the last batch."""

    @abstractmethod
    async def _handle(self, producer: BatchProducer, batch: ConsumedBatch) -> None:
        """Do the kind's work on one batch (possibly empty), then set `_safe`."""

    def _update_lag(self) -> None:
        """Lag from what is done with (committed, else the first offset read), not from what was read: a sink
        stuck on its destination shows the backlog Kafka keeps for it."""
        lag = 0
        for tp, position in self._positions.items():
            end = max(self._consumer.highwater(tp) or 0, self._ends.get(tp, 0), position)  # read is there
            lag += max(0, end - self._committed.get(tp, self._first.get(tp, position)))
        self.lag = lag
        self.env.metrics.lag.labels(**self.labels).set(lag)
        behind = self.env.behind_records
        if lag >= behind:  # offered more than it drains: the backlog waits in Kafka, and the node says so
            self.cell.restate("lag", f"behind by {lag:,} records: input arrives faster than this node keeps up")
        elif lag < behind // 2:
            self.cell.recover("lag")

    async def _refresh_lag(self) -> None:
        """The lag while the node cannot take more (a destination away): the fetcher stops once it holds a batch,
        so the log end offsets are asked for, and the backlog is seen growing."""
        with contextlib.suppress(KafkaError, TimeoutError):  # Kafka slow or away: the last known lag stays shown
            self._ends.update(await asyncio.wait_for(self._consumer.end_offsets(list(self._positions)), 5))
        self._update_lag()

    async def _stay_in_group(self) -> None:
        """While the node cannot take more (a destination away for minutes): poll with every partition paused, so
        the group keeps this member past max.poll.interval.ms and no rebalance replays what it holds. Nothing is
        fetched; positions stay where they are."""
        consumer = self._consumer
        assigned = consumer.assignment()
        consumer.pause(*assigned)
        try:
            await consumer.getmany(timeout_ms=0)
        finally:
            consumer.resume(*assigned)

    def detail(self) -> dict[str, Any]:
        return {"lag": self.lag}
