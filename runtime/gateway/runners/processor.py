"""The processor runner: consume -> process (+ tick, + operator commands) -> produce and wait for acks -> state to
the changelog -> commit, never past offsets the node still retains; a batch is delivered so while the next one is
processed."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from streamforge.engine.sdk import Emitted, Message, ProcessorNode
from streamforge.runtime.gateway.runners.consumer import ConsumingRunner
from streamforge.runtime.kafka.clients import BatchProducer, ConsumedBatch

DELIVERY_ON_STOP_S = 5.0


class ProcessorRunner(ConsumingRunner):
    """One batch is delivered (outputs acknowledged, then its state saved, then its offsets committable) while the
    next is processed: the loop does not stop for each round trip to the broker (latency). What a delivery saves
    and commits was taken when its batch was processed, before the next batch changed anything, so the state in
    the changelog always belongs with the offsets committed, and a crash replays at most the batches in hand, as
    before. Deliveries run one at a time, in order. An operator command waits for its batch's delivery: its answer
    is durable when it returns."""

    node: ProcessorNode[Any]

    async def _begin(self) -> None:
        self._commands: asyncio.Queue[tuple[str, Any, asyncio.Future[Emitted]]] = asyncio.Queue()
        self._delivering: asyncio.Future[None] | None = None

    async def submit(self, name: str, args: dict[str, Any]) -> Emitted:
        """Validate the arguments by the command's model, run it inside the node's loop between two batches;
        returns once its output is acknowledged by Kafka."""
        validated = self.cls.command_args(self.plan.node_id, name, args)
        future: asyncio.Future[Emitted] = asyncio.get_running_loop().create_future()
        await self._commands.put((name, validated, future))
        return await future

    async def _handle(self, producer: BatchProducer, batch: ConsumedBatch) -> None:
        node = self.node
        emitted = await node.process(batch.records) if batch.records else {}
        now = self._tick_due()
        if now is not None:
            for port, records in (await node.tick(now)).items():
                emitted.setdefault(port, []).extend(records)
        answered = await self._run_commands(emitted)
        # This batch's state and offsets, as they are now: the next batch is processed before they are saved.
        changes, retained, read = self.context.state.changes(), node.retained(), dict(self._positions)
        await self._delivered()  # the batch before first: outputs, state and commits stay in order
        self._delivering = asyncio.ensure_future(self._deliver(producer, emitted, batch.records, changes, retained,
                                                               read, answered))  # fmt: skip
        if answered:
            await self._delivered()

    async def _deliver(self, producer: BatchProducer, emitted: Emitted, inputs: list[Message], changes: dict[str, Any],
                       retained: dict[tuple[str, int], int], read: dict[TopicPartition, int],
                       answered: list[tuple[asyncio.Future[Emitted], Emitted]]) -> None:  # fmt: skip
        await self.outputs.send(producer, emitted, inputs)
        await self.changelog.save(producer, changes)
        self._held_back(retained, read)  # committed by the loop after its next batch
        for future, result in answered:
            future.set_result(result)

    async def _delivered(self) -> None:
        """Until the batch in flight is delivered (a delivery that failed raises here: the node restarts and
        replays from its last commit)."""
        if self._delivering is not None:
            delivering, self._delivering = self._delivering, None
            await delivering

    async def _stopping(self, producer: BatchProducer) -> None:
        """The batch in flight may land (then nothing is replayed), but a stop never waits on a Kafka that is
        away: after DELIVERY_ON_STOP_S it is cancelled in _end and replayed from the last commit."""
        if self._delivering is not None:
            landed, _ = await asyncio.wait({self._delivering}, timeout=DELIVERY_ON_STOP_S)
            if landed:
                await self._delivered()

    async def _end(self) -> None:
        if self._delivering is not None:  # stopped mid-batch: replayed from the last commit
            self._delivering.cancel()

    async def _run_commands(self, emitted: Emitted) -> list[tuple[asyncio.Future[Emitted], Emitted]]:
        done = []
        while not self._commands.empty():
            name, args, future = self._commands.get_nowait()
            try:
                result = await self.node.command(name, args)
            except ValueError as refusal:
                future.set_exception(refusal)
                continue
            for port, records in result.items():
                emitted.setdefault(port, []).extend(records)
            done.append((future, result))
        return done
