"""The node SDK: one class per node type declares its ports, config model, lifecycle and batch API."""

from __future__ import annotations

import builtins
import copy
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Generic, TypeVar, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from streamforge.engine.clock import Clock, SystemClock
from streamforge.engine.problems import Problem, pointer_of
from streamforge.engine.records import dead_letter, reason
from streamforge.engine.retry import CircuitSettings, ConnectionSettings
from streamforge.engine.state import StateStore

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


def _without_credentials(url: str) -> str:
    if urlsplit(url).username is not None:  # ValueError for a malformed URL too: pydantic reports both
        raise ValueError("the URL holds credentials (user:password@host), which would be plaintext in every export "
                         "of the flow: remove them and use the node's username/password or token fields, which are "
                         "stored as secrets")  # fmt: skip
    return url


# A URL config field: one with user:password@ in it is refused (credentials go in fields stored as secrets).
PlainUrl = Annotated[str, AfterValidator(_without_credentials)]


class NodeConfig(BaseModel):
    """Base of every config model: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


class SinkConfig(NodeConfig):
    """Base of every sink's config: how it reconnects, and when it stops trying for a while."""

    connection: ConnectionSettings = Field(default_factory=ConnectionSettings)
    circuit: CircuitSettings = Field(default_factory=CircuitSettings)


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
    headers: dict[str, bytes] = field(default_factory=dict)  # read only: shared by records with the same headers
    port: str = ""  # the input port it arrived on

    def dead_letter(self, node_id: str, *reasons: Record) -> Record:
        """This record refused by `node_id`, for the DLQ: its position, its original bytes, the reasons."""
        asset_id, parameter = self.record.get("asset_id"), self.record.get("parameter")
        return dead_letter(
            node_id, list(reasons), self.raw, self.topic, self.partition, self.offset,
            asset_id if isinstance(asset_id, str) else None,
            {"parameter": parameter} if isinstance(parameter, str) else {},
        )  # fmt: skip


class CommandInvalid(ValueError):
    """A command's arguments do not fit its model: `problems` says which field and why."""

    def __init__(self, node_id: str, name: str, error: ValidationError) -> None:
        self.problems = [
            Problem("invalid_argument", f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}",
                    pointer_of(*e["loc"]), node_id, hint=f"see the {name!r} command's schema in the palette")
            for e in error.errors()
        ]  # fmt: skip
        super().__init__(f"command {name!r} of node {node_id}: " + "; ".join(p.message for p in self.problems))


class PeerUnavailable(ConnectionError):
    """The device, broker or destination cannot be reached (raise it from connect(), poll() or write()).

    The runtime then calls close(), shows the node DEGRADED with this message, waits the shared backoff and
    calls connect() again. Any other exception from poll() is a bug: the supervisor restarts the node."""


@dataclass
class NodeContext:
    """What the runtime gives a node: who it is, its clock, its state tables, and a logger that says so."""

    flow_id: str
    node_id: str
    gateway_id: str = "local"  # the control plane's id of this gateway once registered; "local" for `run FLOW`
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("streamforge.node"))
    clock: Clock = field(default_factory=SystemClock)
    state: StateStore = field(default_factory=StateStore)
    on_health: Callable[[str | None], None] = lambda problem: None  # set by the runtime

    def log(self, level: int, message: str, **fields: Any) -> None:
        self.logger.log(level, message, extra={"flow": self.flow_id, "node": self.node_id, **fields})

    def degraded(self, problem: str) -> None:
        """Connected, but the device misbehaves (timeouts, error answers): DEGRADED with `problem`."""
        self.on_health(problem)

    def healthy(self) -> None:
        """The device answers again: the node shows RUNNING."""
        self.on_health(None)


def form_schema(model: builtins.type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema as forms label it: every field titled by its name (also a field whose type is a
    model, which pydantic leaves untitled), no class names ("SimulatorConfig", "MqttTls") as headings, each choice
    of a tagged union titled by its tag ("pagerduty"), and the defaults that factories make (a sink's own
    `connection` timeout) shown, not those of the factory's type."""
    schema = model.model_json_schema()
    for name, info in model.model_fields.items():
        if info.default_factory is not None and info.annotation is not None and name in schema.get("properties", {}):
            value = info.get_default(call_default_factory=True, validated_data={})
            default = TypeAdapter(info.annotation).dump_python(value, mode="json")
            prop = schema["properties"][name]
            ref = prop.get("$ref", "").removeprefix("#/$defs/")
            if ref and isinstance(default, dict):  # forms take each field's own default over the parent's: inline
                inlined = copy.deepcopy(schema["$defs"][ref])
                inlined.pop("title", None)
                prop = schema["properties"][name] = {**inlined, **prop}
                del prop["$ref"]
                for key, field_default in default.items():
                    prop["properties"][key]["default"] = field_default
            prop["default"] = default

    definitions = schema.get("$defs", {})

    def relabel(node: Any) -> None:
        if isinstance(node, dict):
            for name, prop in (node.get("properties") or {}).items():
                if isinstance(prop, dict) and "title" not in prop:
                    prop["title"] = name.replace("_", " ").title()
            tag = (node.get("discriminator") or {}).get("propertyName")
            if tag and node.get("oneOf") and "default" not in node:  # a new entry starts as the first choice
                first = definitions.get(node["oneOf"][0].get("$ref", "").removeprefix("#/$defs/"), {})
                if "const" in first.get("properties", {}).get(tag, {}):
                    node["default"] = {tag: first["properties"][tag]["const"]}
            for value in node.values():
                relabel(value)
        elif isinstance(node, list):
            for value in node:
                relabel(value)

    schema.pop("title", None)
    for definition in definitions.values():
        definition.pop("title", None)
        tags = [p for key, p in definition.get("properties", {}).items()
                if "const" in p and key in definition.get("required", ())]  # fmt: skip
        if len(tags) == 1:  # the tag is the choice itself: filled in, not typed
            definition["title"] = str(tags[0]["const"])
            tags[0].update(default=tags[0]["const"], readOnly=True)
    relabel(schema)
    return schema


ConfigT = TypeVar("ConfigT", bound=NodeConfig)


def _config_of(cls: builtins.type[Any]) -> builtins.type[NodeConfig] | None:
    """The config model a class names as its generic parameter (`SourceNode[MqttConfig]`), if it names one."""
    for base in getattr(cls, "__orig_bases__", ()):
        for arg in get_args(base):
            if isinstance(arg, builtins.type) and issubclass(arg, NodeConfig):
                return arg
    return None


class Node(Generic[ConfigT]):
    """Base of all node types. Subclass SourceNode, ProcessorNode or SinkNode, never this directly.

    The config model is the generic parameter, declared once: `class Validator(ProcessorNode[ValidatorConfig])`.

    Lifecycle, all called by the runtime:
    - start(): prepare from the config and declare state tables (already holding what the changelog kept).
      Raise ValueError only for a configuration the node refuses: that fails the deploy.
    - connect() / close() (sources and sinks): open and close the device or destination. A peer that is down
      never fails a deploy: the runtime retries connect() with backoff while the node shows DEGRADED.
    - the node's loop: poll() / process() and tick() / write(), on whole batches.
    - stop(): release what start() took. Called once, also after a failure.
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
    # Operator actions and the model of each one's arguments, e.g. {"acknowledge": AlarmAction}.
    commands: ClassVar[dict[str, builtins.type[BaseModel]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "Config" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: name the config model once, as the generic parameter "
                            f"(class {cls.__name__}(ProcessorNode[MyConfig])), not as `Config`")  # fmt: skip
        config = _config_of(cls)
        if config is not None:
            cls.Config = config
        # What a gateway cannot run is refused here, where the author sees it, not first at deploy.
        untyped = [port.name for port in cls.__dict__.get("outputs", ()) if port.type is PortType.ANY]
        if untyped:
            raise TypeError(f"{cls.__name__}: output port(s) {', '.join(untyped)} must have a record type "
                            "(telemetry, event, alarm, aggregate, dlq): a topic holds one type; only inputs "
                            "take `any`")  # fmt: skip
        kind = getattr(cls, "kind", None)
        if cls.__dict__.get("commands") and kind is not None and kind is not Kind.PROCESSOR:
            raise TypeError(f"{cls.__name__}: only processors take operator commands (the gateway runs them "
                            f"between a processor's batches); a {kind.value} declares none")  # fmt: skip

    def __init__(self, config: ConfigT, context: NodeContext) -> None:
        self.config = config
        self.context = context

    @property
    def clock(self) -> Clock:
        return self.context.clock

    async def start(self) -> None:
        """Prepare from the config; raise ValueError to refuse it (the deploy is rolled back)."""

    async def connect(self) -> None:
        """Open the device or destination; raise (PeerUnavailable or the library's error) if it is not there."""

    async def close(self) -> None:
        """Close what connect() opened; also called after a failed connect(). Must not raise."""

    async def stop(self) -> None:
        """Release what start() took. Called once, also after a failure."""

    def dead_letter(self, message: Message, code: str, why: str, field: str | None = None) -> Record:
        """`message` refused by this node for one reason, ready for the DLQ (a sink returns it from write(), a
        processor emits it on its `dlq` port): its position, its original bytes, and `code`/`why`/`field` (a JSON
        pointer into the record)."""
        return message.dead_letter(self.context.node_id, reason(code, why, field))

    async def command(self, name: str, args: BaseModel) -> Emitted:
        """Carry out an operator command (its arguments validated by `commands[name]`); ValueError refuses it."""
        raise ValueError(f"{self.type} has no command {name!r}")

    @classmethod
    def command_args(cls, node_id: str, name: str, args: Any) -> BaseModel:
        """The arguments of command `name` validated by its model; ValueError naming the commands there are, or
        CommandInvalid with every field that is wrong."""
        model = cls.commands.get(name)
        if model is None:
            raise ValueError(f"node {node_id} ({cls.type}) has no command {name!r}; "
                             f"commands: {', '.join(cls.commands) or 'none'}")  # fmt: skip
        try:
            return model.model_validate(args)
        except ValidationError as exc:
            raise CommandInvalid(node_id, name, exc) from None

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
        """The palette entry: what the editor and `node list` show, with the config's and commands' JSON Schema."""
        return {
            "type": cls.type,
            "kind": cls.kind.value,
            "category": cls.category,
            "icon": cls.icon,
            "description": cls.description,
            "version": cls.version,
            "inputs": [port.to_dict() for port in cls.inputs],
            "outputs": [port.to_dict() for port in cls.outputs],
            "config_schema": form_schema(cls.Config),
            "commands": {name: model.model_json_schema() for name, model in cls.commands.items()},
        }


class SourceNode(Node[ConfigT]):
    """Reads a device or broker. The runtime sends each polled batch to Kafka, then acknowledges it."""

    kind = Kind.SOURCE

    async def poll(self) -> Emitted:
        """Wait for and return the next batch of readings, by output port (called only while connected)."""
        raise NotImplementedError

    async def acknowledge(self, emitted: Emitted) -> None:
        """Kafka acknowledged every record of `emitted`: now acknowledge the device (e.g. MQTT PUBACK)."""

    def unreachable(self, problem: str) -> Emitted:
        """What to record each time connect() fails, e.g. BAD readings for every point; nothing by default."""
        return {}


class ProcessorNode(Node[ConfigT]):
    """Turns input batches into output batches. Offsets are committed only after its output is acked."""

    kind = Kind.PROCESSOR

    async def process(self, batch: Sequence[Message]) -> Emitted:
        """Handle one batch of input records."""
        raise NotImplementedError

    async def tick(self, now: datetime) -> Emitted:
        """Called about once a second, also when no input arrives (close windows, on-delay timers)."""
        return {}

    def retained(self) -> dict[tuple[str, int], int]:
        """Earliest input offset per (topic, partition) still held in memory and not yet emitted.

        The runtime never commits past it, so a crash replays what the node had not emitted yet.
        """
        return {}


class SinkNode(Node[ConfigT]):
    """Writes batches to an external system. Offsets are committed only after write() returns, and never past what
    retained() still holds.

    A write that raises is retried on a fresh connection (close(), backoff, connect()) while the node shows
    DEGRADED; Kafka keeps the backlog meanwhile. A programming error (TypeError, KeyError, AttributeError, ...) is
    not an outage: it fails the node with its traceback (restarted by the supervisor, the batch replayed)."""

    kind = Kind.SINK

    def plan(self, batch: Sequence[Message]) -> None:
        """Before write(): decide in state tables what write() will send for this batch (e.g. which records go in
        which request). The runtime saves the changelog before it calls write(), so a replay after a crash sends
        exactly the same requests again and a destination that deduplicates them (an idempotency key) sees each
        once. Most sinks need nothing here: their writes are idempotent by key."""

    async def write(self, batch: Sequence[Message]) -> Sequence[Record] | None:
        """Write the whole batch durably and idempotently (a replay must create no duplicates). Raise if the
        destination failed (it is retried); return dead letters (`message.dead_letter(...)`) for records it refused
        for good, e.g. an HTTP 4xx: they go to the DLQ with their reasons, never dropped, and the batch counts as
        written."""
        raise NotImplementedError

    async def tick(self, now: datetime) -> Sequence[Record] | None:
        """Called about once a second while the sink holds records not yet written (retained() is not empty), also
        when no input arrives (e.g. roll a file by age); like write() it may raise (retried) or return dead
        letters."""
        return None

    def retained(self) -> dict[tuple[str, int], int]:
        """Earliest input offset per (topic, partition) written nowhere durable yet (records buffered for a file):
        the runtime never commits past it, so a crash replays them."""
        return {}


def earliest_offsets(held: Iterable[tuple[tuple[str, int], int]]) -> dict[tuple[str, int], int]:
    """The earliest offset per (topic, partition) of what a node holds: what its retained() answers."""
    oldest: dict[tuple[str, int], int] = {}
    for where, offset in held:
        if offset < oldest.get(where, offset + 1):
            oldest[where] = offset
    return oldest


NodeClass = type[Node[Any]]
