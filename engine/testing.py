"""Test harness for one node: inject records, capture outputs, exactly as Kafka would carry them."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

from streamforge.engine.clock import Clock, SystemClock
from streamforge.engine.connection import PROGRAMMING_ERRORS, PeerLink
from streamforge.engine.schema_registry import InMemorySchemaRegistry
from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.sdk import (
    RECORD_TYPE_OF_PORT,
    Emitted,
    Kind,
    Message,
    Node,
    NodeContext,
    PeerUnavailable,
    Port,
    ProcessorNode,
    Record,
    SinkNode,
    SourceNode,
)
from streamforge.engine.serde import Decoder, Encoder

NodeT = TypeVar("NodeT", bound=Node[Any])


def _port_encoders(registry: InMemorySchemaRegistry, ports: Sequence[Port]) -> dict[str, Encoder]:
    """An encoder per typed port (an `any` port carries whatever comes, so it has none)."""
    return {
        port.name: Encoder(registry.register_now(port.name, schema), schema)
        for port in ports
        if (schema := SCHEMAS.get(RECORD_TYPE_OF_PORT.get(port.type, ""))) is not None
    }


class NodeHarness(Generic[NodeT]):
    """`async with NodeHarness(Validator, {...}) as h: out = await h.process([...])`.

    Config goes through the type's own model, and every output goes through its port's Avro schema,
    so a record Kafka would refuse fails here too. Outputs accumulate in `captured`.
    """

    def __init__(
        self, cls: type[NodeT], config: dict[str, Any] | None = None, node_id: str = "node", *,
        clock: Clock | None = None,
    ) -> None:  # fmt: skip
        self.cls = cls
        self.config = config or {}
        self.node_id = node_id
        self.clock: Clock = clock or SystemClock()
        self.state: dict[str, bytes] = {}  # what the node's compacted changelog would hold, as JSON bytes
        self.health: list[str | None] = []  # what the node and its connection reported: a problem, or None
        self.node = self._build()
        self.captured: dict[str, list[Record]] = defaultdict(list)
        self._offsets = itertools.count()
        registry = InMemorySchemaRegistry()
        self._decoder = Decoder(registry)
        self._encoders = _port_encoders(registry, cls.outputs)
        self._input_encoders = _port_encoders(registry, cls.inputs)

    def _build(self) -> NodeT:
        """A fresh instance whose state tables hold what the changelog holds, as the runtime builds it."""
        context = NodeContext("test", self.node_id, clock=self.clock, on_health=self.health.append)
        context.state.load(self.state)
        node = self.cls(self.cls.Config.model_validate(self.config), context)
        self.link = PeerLink(node, self.health.append)
        return node

    async def _open(self) -> None:
        await self.node.start()
        if self.cls.kind is Kind.SINK:  # a source connects on its first poll, through the link, as in the runtime
            await self._connected()

    async def _connected(self) -> None:
        if not self.link.connected:
            problem = await self.link.connect()
            if problem is not None:
                raise PeerUnavailable(problem)

    async def __aenter__(self) -> NodeHarness[NodeT]:
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.node.close()
        await self.node.stop()

    async def messages(
        self, records: Sequence[Record], topic: str = "in", partition: int = 0, port: str | None = None
    ) -> list[Message]:
        """Records as the runtime delivers them: through the input's Avro schema, with position and raw bytes."""
        port = port or (self.cls.inputs[0].name if self.cls.inputs else "")
        encoder = self._input_encoders.get(port)
        if encoder is None:
            return [Message(r, topic, partition, next(self._offsets), "upstream", port=port) for r in records]
        encoded = encoder.encode_batch(records)
        if encoded.errors:
            raise AssertionError("injected records do not fit the input schema: " + "; ".join(map(str, encoded.errors)))
        values = [value for _, value in encoded.ok]
        decoded = await self._decoder.decode_batch(values)
        return [
            Message(record, topic, partition, next(self._offsets), "upstream", values[index], port=port)
            for index, record in decoded.ok
        ]

    async def process_messages(self, messages: Sequence[Message]) -> Emitted:
        """Process exact messages (e.g. a replay with the offsets they had)."""
        return await self._capture(await cast(ProcessorNode[Any], self.node).process(messages))

    async def restart(self) -> dict[tuple[str, int], int]:
        """Simulate a crash and restart: a fresh instance restored from the changelog state.

        Returns where the runtime would resume: the retained offsets of the old instance, which the
        caller replays (with the same offsets) to check nothing is lost or emitted twice.
        """
        resume = self.node.retained() if isinstance(self.node, ProcessorNode | SinkNode) else {}
        self.node = self._build()
        await self._open()
        return resume

    def _save_state(self) -> None:
        """What the runtime writes to the changelog after a batch."""
        for key, value in self.node.context.state.changes().items():
            if value is None:
                self.state.pop(key, None)
            else:
                self.state[key] = value

    async def _capture(self, emitted: Emitted) -> Emitted:
        self._save_state()
        carried: Emitted = {}
        for port, records in emitted.items():
            if self.cls.output(port) is None:
                raise AssertionError(f"{self.cls.type} emitted to undeclared port {port!r}")
            encoder = self._encoders.get(port)
            if encoder is not None:
                encoded = encoder.encode_batch(records)
                if encoded.errors:
                    raise AssertionError(f"{self.cls.type}:{port} emitted records Kafka would refuse: "
                                         + "; ".join(map(str, encoded.errors)))  # fmt: skip
                decoded = await self._decoder.decode_batch([value for _, value in encoded.ok])
                records = [record for _, record in decoded.ok]
            carried[port] = records
            self.captured[port].extend(records)
        return carried

    async def process(self, records: Sequence[Record], topic: str = "in", partition: int = 0) -> Emitted:
        return await self.process_messages(await self.messages(records, topic, partition))

    async def tick(self, now: datetime | None = None) -> Emitted:
        """The runtime's periodic tick, at `now` or the clock's time."""
        return await self._capture(await cast(ProcessorNode[Any], self.node).tick(now or self.clock.now()))

    async def command(self, name: str, args: dict[str, Any]) -> Emitted:
        """An operator command, its arguments validated by the command's model as the runtime does."""
        return await self._capture(await self.node.command(name, self.cls.command_args(self.node_id, name, args)))

    async def poll(self) -> Emitted:
        """One turn of the runtime's source loop: connect if needed (with its backoff), poll, and once the records
        fit their schemas (Kafka took them), acknowledge them to the device."""
        emitted = await self._capture(await self.link.poll())
        await cast(SourceNode[Any], self.node).acknowledge(emitted)
        return emitted

    async def write(self, records: Sequence[Record], port: str | None = None) -> list[Record]:
        """Records as the runtime delivers them (see write_messages)."""
        return await self.write_messages(await self.messages(records, port=port))

    async def write_messages(self, messages: Sequence[Message], crash: bool = False) -> list[Record]:
        """One write as the runtime makes it: planned (the plan saved), then written on a live connection; a failure
        closes it (the next write reconnects) and is raised here, where the runtime would retry the batch after its
        backoff. Returns the dead letters of what the destination refused (also in `captured["dlq"]`). The same
        messages again: a retry of that batch. `crash`: the process dies right after write() returned, before the
        runtime saved what it changed or committed; `restart()` then replays."""
        sink = cast(SinkNode[Any], self.node)
        sink.plan(messages)
        self._save_state()
        if crash:
            await self._connected()
            await sink.write(messages)
            return []
        return await self._sink_call(lambda node: node.write(messages))

    async def sink_tick(self, now: datetime | None = None) -> list[Record]:
        """A sink's periodic tick (e.g. a file rolled by age), made as the runtime makes it: only while the sink holds
        records not yet written (retained() is not empty); see write_messages."""
        if not cast(SinkNode[Any], self.node).retained():
            return []
        return await self._sink_call(lambda sink: sink.tick(now or self.clock.now()))

    async def _sink_call(self, call: Callable[[SinkNode[Any]], Awaitable[Sequence[Record] | None]]) -> list[Record]:
        await self._connected()
        try:
            refused = list(await call(cast(SinkNode[Any], self.node)) or ())
        except PROGRAMMING_ERRORS:
            raise  # the runtime fails the node: no reconnect, as there
        except Exception as exc:
            await self.link.disconnected(exc)
            raise
        self.captured["dlq"].extend(refused)  # what the runtime sends to the DLQ
        self._save_state()
        return refused
