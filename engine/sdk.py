"""The node SDK: one class per node type declares its ports, config model, lifecycle and batch API."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict

from streamforge.engine.records import dead_letter

Record = dict[str, Any]
Emitted = dict[str, list[Record]]  # output port name -> records for it


class Kind(StrEnum):
    SOURCE = "source"
    PROCESSOR = "processor"
    SINK = "sink"


class PortType(StrEnum):
    """What flows through a port; a wire joins ports of the same type, or `any`."""

    TELEMETRY = "telemetry"
    EVENT = "event"
    ALARM = "alarm"
    AGGREGATE = "aggregate"
    DLQ = "dlq"
    ANY = "any"

    def accepts(self, other: PortType) -> bool:
        return PortType.ANY in (self, other) or self is other


# The Avro record type carried by each port type (`any` carries whatever its upstream carries).
RECORD_TYPE_OF_PORT = {
    PortType.TELEMETRY: "telemetry",
    PortType.EVENT: "event",
    PortType.ALARM: "alarm",
    PortType.AGGREGATE: "aggregate",
    PortType.DLQ: "dead_letter",
}


@dataclass(frozen=True)
class Port:
    """A typed input or output. An output names the topic its records land in."""

    name: str
    type: PortType
    topic: str | None = None  # outputs: the Kafka topic; inputs: None (the wire decides)
    required: bool = True  # inputs: must be wired for the flow to compile
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type.value, "topic": self.topic, "required": self.required,
                "description": self.description}  # fmt: skip


class NodeConfig(BaseModel):
    """Base of every config model: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


@dataclass(slots=True)
class Message:
    """One input record and where it came from, so processors can hold offsets of state they keep."""

    record: Record
    topic: str = ""
    partition: int = 0
    offset: int = 0
    source_node: str = ""
    raw: bytes = b""  # the value exactly as stored in Kafka (dead letters keep it untouched)
    key: bytes | None = None
    headers: dict[str, bytes] = field(default_factory=dict)
    port: str = ""  # the input port it arrived on

    def dead_letter(self, node_id: str, *reasons: Record) -> Record:
        """This record refused by `node_id`, for the DLQ: its position, its original bytes, the reasons."""
        asset_id, parameter = self.record.get("asset_id"), self.record.get("parameter")
        return dead_letter(
            node_id, list(reasons), self.raw, self.topic, self.partition, self.offset,
            asset_id if isinstance(asset_id, str) else None,
            {"parameter": parameter} if isinstance(parameter, str) else {},
        )  # fmt: skip


@dataclass
class NodeContext:
    """What the runtime gives a node: who it is, and a logger that says so."""

    flow_id: str
    node_id: str
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("streamforge.node"))
    on_health: Callable[[str | None], None] = lambda problem: None  # set by the runtime

    def log(self, level: int, message: str, **fields: Any) -> None:
        self.logger.log(level, message, extra={"flow": self.flow_id, "node": self.node_id, **fields})

    def degraded(self, problem: str) -> None:
        """The device misbehaves (timeouts, errors, disconnected): the node shows DEGRADED with `problem`."""
        self.on_health(problem)

    def healthy(self) -> None:
        """The device answers again: the node shows RUNNING."""
        self.on_health(None)


ConfigT = TypeVar("ConfigT", bound=NodeConfig)


class Node(Generic[ConfigT]):
    """Base of all node types. Subclass SourceNode, ProcessorNode or SinkNode, never this directly.

    Lifecycle: `async with node:` calls start() and stop() around the one coroutine the runtime runs
    for it (poll loop, process loop or write loop). Hot paths take and return whole batches.
    """

    type: ClassVar[str]
    kind: ClassVar[Kind]
    category: ClassVar[str] = "custom"
    icon: ClassVar[str] = "box"
    description: ClassVar[str] = ""
    version: ClassVar[str] = "1.0.0"
    inputs: ClassVar[tuple[Port, ...]] = ()
    outputs: ClassVar[tuple[Port, ...]] = ()
    Config: ClassVar[builtins.type[NodeConfig]]

    def __init__(self, config: ConfigT, context: NodeContext) -> None:
        self.config = config
        self.context = context

    async def start(self) -> None:
        """Open connections, load state. Raise to refuse the deploy (it is rolled back)."""

    async def stop(self) -> None:
        """Close what start() opened. Called once, also after a failure."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def state_changes(self) -> dict[str, Any]:
        """State changed since the last call, as JSON values by key (None deletes a key).

        The runtime writes them to the node's compacted changelog topic, and waits for Kafka's ack,
        before it commits input offsets; restore() gets the whole state back after a restart.
        """
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Load the state the changelog holds; called after start() and before the first batch."""

    @classmethod
    def record_key(cls, port: str, record: Record) -> str:
        """The Kafka key of an output record: asset_id, so one asset stays in one partition, in order."""
        return str(record["asset_id"])

    @classmethod
    def input(cls, name: str) -> Port | None:
        return next((port for port in cls.inputs if port.name == name), None)

    @classmethod
    def output(cls, name: str) -> Port | None:
        return next((port for port in cls.outputs if port.name == name), None)

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The palette entry: what the editor and `node list` show, with the config's JSON Schema."""
        return {
            "type": cls.type,
            "kind": cls.kind.value,
            "category": cls.category,
            "icon": cls.icon,
            "description": cls.description,
            "version": cls.version,
            "inputs": [port.to_dict() for port in cls.inputs],
            "outputs": [port.to_dict() for port in cls.outputs],
            "config_schema": cls.Config.model_json_schema(),
        }


class SourceNode(Node[ConfigT]):
    """Reads a device or broker. The runtime sends each polled batch to Kafka, then acknowledges it."""

    kind = Kind.SOURCE

    async def poll(self) -> Emitted:
        """Wait for and return the next batch of readings, by output port."""
        raise NotImplementedError

    async def acknowledge(self, emitted: Emitted) -> None:
        """Kafka acknowledged every record of `emitted`: now acknowledge the device (e.g. MQTT PUBACK)."""


class ProcessorNode(Node[ConfigT]):
    """Turns input batches into output batches. Offsets are committed only after its output is acked."""

    kind = Kind.PROCESSOR

    async def process(self, batch: Sequence[Message]) -> Emitted:
        """Handle one batch of input records."""
        raise NotImplementedError

    async def tick(self, now: datetime) -> Emitted:
        """Called about once a second, also when no input arrives (close windows, on-delay timers)."""
        return {}

    commands: ClassVar[tuple[str, ...]] = ()  # operator actions, e.g. ("acknowledge", "suppress")

    async def command(self, name: str, args: dict[str, Any]) -> Emitted:
        """Carry out an operator command between two batches; raise ValueError to refuse it."""
        raise ValueError(f"{self.type} has no command {name!r}")

    def retained(self) -> dict[tuple[str, int], int]:
        """Earliest input offset per (topic, partition) still held in memory and not yet emitted.

        The runtime never commits past it, so a crash replays what the node had not emitted yet.
        """
        return {}


class SinkNode(Node[ConfigT]):
    """Writes batches to an external system. Offsets are committed only after write() returns."""

    kind = Kind.SINK

    async def write(self, batch: Sequence[Message]) -> None:
        """Write the whole batch durably and idempotently (a replay must create no duplicates)."""
        raise NotImplementedError


NodeClass = type[Node[Any]]
