"""The fleet protocol: every message between a gateway and its control plane, as pydantic models both sides import.

The gateway always opens the connection: it posts its registration and heartbeats (`/api/v1/gateways/...`) and
holds one websocket (`/api/v1/gateways/{id}/events`) over which the control plane sends poll notices, commands and
debug-tap requests, and the gateway sends command results, tap records, its metrics and its log lines.

Versioning: `PROTOCOL` is MAJOR.MINOR. A minor version only adds optional fields or message types, so a peer one
minor version older keeps working: unknown fields are kept and ignored (`extra="allow"`), an unknown message type
is answered "unsupported" (commands) or dropped (pushes), and a message without `protocol` is 1.0, the version
before it was stated. A change that breaks either side is a new major version.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.json_schema import models_json_schema

PROTOCOL = "1.1"
FIRST_PROTOCOL = "1.0"  # what a message that states no version speaks
METRICS_PUSH_S = 5.0  # a gateway pushes its metrics this often while its events socket is up
LOGS_PUSH_S = 2.0  # and its new log lines at most this often
LOGS_PUSH_LINES = 500  # per message
PING_INTERVAL_S = 5.0  # both ends ping the events socket; a dead link is noticed within interval + timeout
PING_TIMEOUT_S = 5.0
LINK_SILENCE_S = 2 * METRICS_PUSH_S + 1  # a gateway that pushes metrics and is silent this long has lost its link
TAP_RECORDS_PER_S = 20  # a debug panel is for eyes: a bounded sample, never a firehose
ID = Annotated[str, Field(min_length=1, max_length=200)]
REGISTRATION_BYTES = 16 * 1024  # a registration's whole body (its fields are bounded apart, far below)


class Part(BaseModel):
    """A part of a message (a node's health, an apply's result): newer peers' fields are kept and ignored."""

    model_config = ConfigDict(extra="allow")


class Message(Part):
    """A message of this protocol, stating its version."""

    protocol: str = FIRST_PROTOCOL


def major(version: str) -> str:
    return version.split(".", 1)[0]


# -- over HTTP, from the gateway -------------------------------------------------------------------------------


def _printable(text: str) -> str:
    """Without control and format characters (newlines, ANSI escapes, bidirectional overrides): a gateway names
    itself without any login, and its name is shown in logs, pages and agents' answers."""
    shown = "".join(char for char in text if unicodedata.category(char) not in ("Cc", "Cf")).strip()
    if not shown:
        raise ValueError("a name needs printable characters")
    return shown


def json_at_most(limit: int) -> AfterValidator:
    """A field whose JSON is at most `limit` bytes: what an unauthenticated caller may make the control plane keep."""

    def check(value: Any) -> Any:
        size = len(json.dumps(value, separators=(",", ":")))
        if size > limit:
            raise ValueError(f"at most {limit} bytes as JSON, got {size}: send less")
        return value

    return AfterValidator(check)


class Registration(Message):
    """First boot, and every retry until approved. The registration secret proves it is the gateway that
    registered (a known instance id with another secret is a new identity); the X25519 public key is what its
    secrets are sealed to. Every field is bounded: anyone who reaches the control plane may send one."""

    name: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)]
    instance_id: ID
    secret: Annotated[str, Field(min_length=1, max_length=500)]
    public_key: Annotated[str, Field(min_length=1, max_length=200)]
    labels: Annotated[dict[str, str] | list[str], json_at_most(2048)] = Field(default_factory=dict)
    version: Annotated[str, Field(max_length=64)] | None = None
    node_types: Annotated[dict[str, Any], json_at_most(8192)] | None = None
    disk: Annotated[dict[str, Any], json_at_most(256)] | None = None
    hostname: Annotated[str, Field(max_length=255)] | None = None
    enrolment_key: Annotated[str, Field(max_length=200)] | None = None


class NodeHealth(Part):
    """One node as the gateway runs it."""

    flow: str
    node: str
    type: str | None = None
    status: str
    last_error: str | None = None
    restarts: int = 0
    lag: float | None = None  # processors and sinks: records behind their input topics
    circuit: Literal["closed", "open", "half_open"] | None = None  # sinks


class ApplyResult(Part):
    """What became of the last desired state the gateway fetched."""

    result: Literal["APPLIED", "NOT_APPLIED"]
    etag: str | None = None
    wanted: dict[str, int] = Field(default_factory=dict)
    flows: dict[str, int] = Field(default_factory=dict)
    at: float = 0.0
    cause: str | None = None
    flow: str | None = None
    node: str | None = None
    reports: dict[str, Any] = Field(default_factory=dict)
    transient: bool = Field(False, description="Not the state's fault (its compiler failed): tried again by itself")


class Heartbeat(Message):
    """Every poll of the desired state is also the gateway's heartbeat: its health and what it runs."""

    status: str = "UNHEALTHY"
    version: str = ""
    clock: float | None = None
    flows: dict[str, int] = Field(default_factory=dict)
    previous: dict[str, int] = Field(default_factory=dict)
    nodes: list[NodeHealth] = Field(default_factory=list)
    kafka: str | None = None
    sink_lag: dict[str, float] = Field(default_factory=dict)
    last_apply: ApplyResult | None = None
    disk: dict[str, Any] | None = None


# -- over HTTP, from the control plane ---------------------------------------------------------------------------


class RegistrationAnswer(Message):
    gateway_id: str
    status: Literal["pending", "approved"]
    token: str | None = None
    expires_at: float | None = None
    message: str | None = None
    claims: str | None = None  # a new identity whose instance id another gateway holds: that gateway's id


class DesiredState(Message):
    """What the gateway should run: flow documents at their pinned versions (secret references intact), the
    secrets they use sealed to the gateway's key, full-restart tokens, and the node types with their packages."""

    gateway_id: str
    etag: str
    flows: list[dict[str, Any]] = Field(default_factory=list)
    secrets: dict[str, str] = Field(default_factory=dict)
    restarts: dict[str, str] = Field(default_factory=dict)
    node_types: dict[str, Any] = Field(default_factory=dict)


# -- over the events socket, to the gateway ------------------------------------------------------------------------


class PollNotice(Message):
    """The desired state changed: poll now."""

    type: Literal["poll"] = "poll"


class CommandRequest(Message):
    """An operator command: a node's (`flow`, `node`, `name`) or a gateway operation (`op`). Answered once with a
    CommandReply of the same id."""

    type: Literal["command"] = "command"
    id: ID
    flow: str | None = None
    node: str | None = None
    name: str | None = None
    op: str | None = None
    args: Any = None


class TapRequest(Message):
    """Stream a bounded sample of one output's records from now on, as TapRecords of this id, until TapCancel (or
    the socket closes)."""

    type: Literal["tap"] = "tap"
    id: ID
    flow: str
    node: str
    port: str


class TapCancel(Message):
    type: Literal["untap"] = "untap"
    id: ID


ToGateway = Annotated[PollNotice | CommandRequest | TapRequest | TapCancel, Field(discriminator="type")]


# -- over the events socket, from the gateway ------------------------------------------------------------------------


class ErrorBody(Part):
    """The one error shape (as the REST API's `error` object): a stable code, a message saying what to do."""

    status: int = 500
    code: str
    message: str


class CommandReply(Message):
    type: Literal["result"] = "result"
    id: ID
    result: Any = None
    error: ErrorBody | None = None


class TapStarted(Message):
    type: Literal["tap_started"] = "tap_started"
    id: ID
    topic: str


class TapRecord(Message):
    type: Literal["tap_record"] = "tap_record"
    id: ID
    offset: int
    dropped: int = 0  # records not sent in this second, over TAP_RECORDS_PER_S
    record: Any


class TapEnded(Message):
    """The tap stopped on the gateway's side: refused (nothing deployed there), or its consumer failed."""

    type: Literal["tap_ended"] = "tap_ended"
    id: ID
    message: str


class NodeCounters(Part):
    """A node's record counters (totals since its process started; summed over ports)."""

    records_in: float = 0.0
    records_out: float = 0.0
    at: float | None = None  # when they were taken, if not at the push's `at` (a worker publishes every few s)


class MetricsPush(Message):
    """The gateway's and its workers' Prometheus text, as its own /metrics serves it, at `at` (its clock), and
    each node's counters read from it (`flow/node` -> counters), so the control plane derives rates without
    parsing the text."""

    type: Literal["metrics"] = "metrics"
    at: float
    exposition: str
    nodes: dict[str, NodeCounters] = Field(default_factory=dict)


class LogsPush(Message):
    """New lines of the gateway's log ring (its own and its workers'), oldest first."""

    type: Literal["logs"] = "logs"
    lines: list[dict[str, Any]]


FromGateway = Annotated[
    CommandReply | TapStarted | TapRecord | TapEnded | MetricsPush | LogsPush, Field(discriminator="type")
]

TO_GATEWAY: TypeAdapter[ToGateway] = TypeAdapter(ToGateway)
FROM_GATEWAY: TypeAdapter[FromGateway] = TypeAdapter(FromGateway)

EDITOR_MODELS: tuple[type[BaseModel], ...] = (Heartbeat, NodeHealth, ApplyResult, NodeCounters)


def editor_schema() -> dict[str, Any]:
    """The JSON Schema the editor's TypeScript types are generated from (editor/protocol.schema.json, by its
    build): one property per model, so every model is a named type."""
    _, top = models_json_schema([(model, "serialization") for model in EDITOR_MODELS], title="FleetProtocol")
    for definition in top["$defs"].values():
        definition.pop("additionalProperties", None)  # what a newer peer adds, the editor does not read
        for field in definition.get("properties", {}).values():
            field.pop("title", None)  # a title would make each field a named type of its own
    return {"title": "FleetProtocol", "description": f"StreamForge fleet protocol {PROTOCOL}", "type": "object",
            "properties": {model.__name__: {"$ref": f"#/$defs/{model.__name__}"} for model in EDITOR_MODELS},
            "$defs": top["$defs"]}  # fmt: skip


if __name__ == "__main__":  # python -m streamforge.runtime.protocol > editor/protocol.schema.json
    print(json.dumps(editor_schema(), indent=2, sort_keys=True))
