"""The processor runner: consume -> process (+ tick, + operator commands) -> produce, acknowledged while the next
batch is processed; at each checkpoint, every output acknowledged -> state to the changelog -> commit, never past
offsets the node still retains."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from streamforge.engine.sdk import Emitted, ProcessorNode
from streamforge.runtime.gateway.runners.consumer import ConsumingRunner
from streamforge.runtime.kafka.clients import BatchProducer, ConsumedBatch

CHECKPOINT_S = 1.0


class ProcessorRunner(ConsumingRunner):
    """State is saved, and offsets move, once per checkpoint (CHECKPOINT_S), not per batch: a node whose batches
    touch every one of 10,000 series would otherwise write as many state records as it reads, and each save is a
    round trip before the next batch. Kafka acknowledged every output before its checkpoint, so the saved state
    and the committed offsets always agree; a crash replays at most one checkpoint's input (at-least-once, as
    Kafka Streams' commit interval). An operator command saves at once: its answer is durable when it returns.

    A batch's outputs are acknowledged while the next batch is fetched and processed (one send in flight, in
    order): the loop does not stop for each round trip to the broker (latency)."""

    node: ProcessorNode[Any]

    async def _begin(self) -> None:
        self._commands: asyncio.Queue[tuple[str, Any, asyncio.Future[Emitted]]] = asyncio.Queue()
        self._next_checkpoint = time.monotonic() + CHECKPOINT_S
        self._sending: asyncio.Future[None] | None = None

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
        await self._sent()  # the previous batch's outputs first: they reach Kafka in order
        self._sending = asyncio.ensure_future(self.outputs.send(producer, emitted, batch.records))
        if answered or time.monotonic() >= self._next_checkpoint:
            await self._checkpoint(producer)
        for future, result in answered:
            future.set_result(result)

    async def _sent(self) -> None:
        """Until the batch in flight is acknowledged (a send that failed raises here: the node restarts and
        replays from its last checkpoint)."""
        if self._sending is not None:
            sending, self._sending = self._sending, None
            await sending

    async def _checkpoint(self, producer: BatchProducer) -> None:
        await self._sent()  # the state saved is that of every output Kafka holds, and no more
        self._next_checkpoint = time.monotonic() + CHECKPOINT_S
        await self.changelog.save(producer)
        self._held_back(self.node.retained())

    async def _stopping(self, producer: BatchProducer) -> None:
        await self._checkpoint(producer)

    async def _end(self) -> None:
        if self._sending is not None:  # stopped mid-batch: its outputs are replayed from the last checkpoint
            self._sending.cancel()

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
