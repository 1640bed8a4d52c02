"""The processor runner: consume -> process (+ tick, + operator commands) -> produce and wait for acks -> state to
the changelog -> commit, never past offsets the node still retains."""

from __future__ import annotations

import asyncio
from typing import Any

from streamforge.engine.sdk import Emitted, ProcessorNode
from streamforge.runtime.gateway.runners.consumer import ConsumingRunner
from streamforge.runtime.kafka.clients import BatchProducer, ConsumedBatch


class ProcessorRunner(ConsumingRunner):
    node: ProcessorNode[Any]

    async def _begin(self) -> None:
        self._commands: asyncio.Queue[tuple[str, Any, asyncio.Future[Emitted]]] = asyncio.Queue()

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
        await self.outputs.send(producer, emitted, batch.records)
        await self.changelog.save(producer)
        for future, result in answered:
            future.set_result(result)
        self._held_back(node.retained())

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
