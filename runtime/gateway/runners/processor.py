"""The processor runner: consume -> process (+ tick, + operator commands) -> produce and wait for acks -> state to
the changelog -> commit, never past offsets the node still retains; a batch is delivered so while the next one is
processed, and its outputs go out while the batch before saves its state."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import TopicPartition

from streamforge.engine.sdk import Emitted, ProcessorNode
from streamforge.engine.state import Changes
from streamforge.runtime.gateway.runners.consumer import ConsumingRunner
from streamforge.runtime.gateway.runners.outputs import passed_through
from streamforge.runtime.kafka.clients import BatchProducer, ConsumedBatch

DELIVERY_ON_STOP_S = 5.0


class CommandNotDelivered(RuntimeError):
    """An operator command whose output Kafka never acknowledged: the node stopped or failed first, and restarts
    from its last saved state, so the command did not take effect."""


class ProcessorRunner(ConsumingRunner):
    """One batch is delivered (outputs acknowledged, then its state saved, then its offsets committable) while the
    next is processed: the loop does not stop for each round trip to the broker (latency). What a delivery saves
    and commits was taken when its batch was processed, before the next batch changed anything, so the state in
    the changelog always belongs with the offsets committed, and a crash replays at most the batches in hand, as
    before.

    Two deliveries overlap: a batch's outputs are produced once the batch before has its outputs acknowledged,
    while that one's state is still on its way (a reading waits one round trip to the broker, not two). Outputs
    leave one batch after another, never interleaved (per-key order, also across a retry); states are saved and
    offsets committed in batch order. An operator command waits for its batch's delivery: its answer is durable
    when it returns."""

    node: ProcessorNode[Any]

    async def _begin(self) -> None:
        self._commands: asyncio.Queue[tuple[str, Any, asyncio.Future[Emitted]]] = asyncio.Queue()
        self._delivering: asyncio.Future[None] | None = None  # the newest batch's delivery (awaits the one before)
        self._before: asyncio.Future[None] | None = None  # the delivery before it
        self._sent: asyncio.Future[None] | None = None  # set once the newest batch's outputs are acknowledged

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
        if self._sent is not None:
            await self._sent  # outputs leave in batch order (a failure raises here: the node restarts, replays)
        if self._before is not None:
            await self._before  # at most two deliveries in hand
        self._before, self._sent = self._delivering, asyncio.get_running_loop().create_future()
        encoded_as = passed_through(emitted, batch.records)  # the inputs themselves are let go of now
        self._delivering = asyncio.ensure_future(self._deliver(producer, emitted, encoded_as, changes, retained,
                                                               read, answered, self._before, self._sent))  # fmt: skip
        if answered:
            await self._delivered()

    async def _deliver(self, producer: BatchProducer, emitted: Emitted, encoded_as: dict[int, bytes], changes: Changes,
                       retained: dict[tuple[str, int], int], read: dict[TopicPartition, int],
                       answered: list[tuple[asyncio.Future[Emitted], Emitted]], before: asyncio.Future[None] | None,
                       sent: asyncio.Future[None]) -> None:  # fmt: skip
        try:
            await self.outputs.send(producer, emitted, encoded_as)
            sent.set_result(None)
            del emitted, encoded_as  # acknowledged: not held while the batch before saves (two batches of readings)
            if before is not None:
                await before  # the batch before saved its state first: the changelog and the commits stay in order
            await self.changelog.save(producer, changes)
        except asyncio.CancelledError:  # a stop
            if not sent.done():
                sent.cancel()
            _not_delivered((future for future, _ in answered), "the node stopped before Kafka acknowledged its output")
            raise
        except Exception as failed:
            if not sent.done():
                sent.set_exception(failed)
            _not_delivered((future for future, _ in answered), f"its output was not delivered ({failed})")
            raise
        self._held_back(retained, read)  # committed by the loop after its next batch
        for future, result in answered:
            if not future.done():  # a caller that gave up (its timeout) cancelled it
                future.set_result(result)

    async def _delivered(self) -> None:
        """Until every batch in flight is delivered (a delivery that failed raises here: the node restarts and
        replays from its last commit)."""
        if self._delivering is not None:
            delivering, self._delivering, self._before, self._sent = self._delivering, None, None, None
            await delivering

    async def _stopping(self, producer: BatchProducer) -> None:
        """The batch in flight may land (then nothing is replayed), but a stop never waits on a Kafka that is
        away: after DELIVERY_ON_STOP_S it is cancelled in _end and replayed from the last commit."""
        if self._delivering is not None:
            landed, _ = await asyncio.wait({self._delivering}, timeout=DELIVERY_ON_STOP_S)
            if landed:
                await self._delivered()

    async def _end(self) -> None:
        queued = (self._commands.get_nowait()[2] for _ in range(self._commands.qsize()))
        _not_delivered(queued, "the node stopped before running it")
        for delivering in (self._delivering, self._before):  # stopped mid-batch: replayed from the last commit
            if delivering is not None and not delivering.cancel() and not delivering.cancelled():
                delivering.exception()  # a failure the loop raised already, through the delivery after it

    async def _run_commands(self, emitted: Emitted) -> list[tuple[asyncio.Future[Emitted], Emitted]]:
        done = []
        while not self._commands.empty():
            name, args, future = self._commands.get_nowait()
            if future.cancelled():
                continue  # its caller gave up before it ran: it is not run
            try:
                result = await self.node.command(name, args)
            except ValueError as refusal:
                future.set_exception(refusal)
                continue
            for port, records in result.items():
                emitted.setdefault(port, []).extend(records)
            done.append((future, result))
        return done


def _not_delivered(futures: Iterable[asyncio.Future[Emitted]], why: str) -> None:
    """Answer every waiting caller: its command did not take effect (never left waiting for its timeout)."""
    for future in futures:
        if not future.done():
            future.set_exception(CommandNotDelivered(
                f"the command did not take effect: {why}; the node goes on from its last saved state without it: "
                "check the node's status, then send the command again"))  # fmt: skip
