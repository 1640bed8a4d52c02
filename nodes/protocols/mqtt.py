"""What every MQTT-fed source (mqtt, lora, sparkplug_b) shares: the broker settings, TLS, payload pointers and the
source base that maps messages to readings and acknowledges them only after Kafka has what they became."""

from __future__ import annotations

import functools
import json
import ssl
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

from streamforge.engine.records import dead_letter, from_epoch_ms, reason
from streamforge.engine.retry import ConnectionSettings
from streamforge.engine.sdk import Emitted, NodeConfig, Port, PortType, Record, SourceNode
from streamforge.nodes.protocols.mqtt_session import Arrival, Endpoint, MqttSession, MqttVersion, Will
from streamforge.nodes.protocols.tls import client_context


def _refuse_qos2(qos: Any) -> Any:
    if qos == 2:
        raise ValueError(
            "QoS 2 subscriptions are refused: the broker hands a QoS 2 message over at PUBREC, which the MQTT client "
            "sends on receipt, before Kafka has it, so a crash would lose it. Subscribe with QoS 1: QoS 2 "
            "publications then arrive at least once and are acknowledged only after Kafka has them"
        )
    return qos


SubscriptionQos = Annotated[Literal[0, 1], BeforeValidator(_refuse_qos2)]


class MqttTls(BaseModel):
    """TLS to the broker (usually port 8883): its certificate checked against a CA, optionally a client
    certificate for brokers that require one."""

    model_config = ConfigDict(extra="forbid")

    ca_file: str | None = Field(default=None, description="CA certificate (PEM) to trust; default: the system's")
    cert_file: str | None = Field(default=None, description="Client certificate (PEM), if the broker asks for one")
    key_file: str | None = Field(default=None, description="The client certificate's private key (PEM)")
    verify_hostname: bool = Field(default=True, description="The broker's certificate must name `host`")

    @model_validator(mode="after")
    def _pair(self) -> MqttTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file, or neither")
        return self

    def context(self) -> ssl.SSLContext:
        """The SSL context; ValueError naming the file that could not be loaded, and why."""
        return client_context(self.ca_file, self.cert_file, self.key_file, self.verify_hostname, "tls.")


class MqttConnectionConfig(NodeConfig):
    """The broker side, shared by every MQTT-fed source (mqtt, lora, sparkplug_b)."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = Field(
        default=None,
        description="Default: streamforge-<flow>-<node> (a persistent "
        "session: unacknowledged messages are redelivered after a restart)",
    )
    username: str | None = None
    password: SecretStr | None = Field(default=None, description="Stored as a secret")
    tls: MqttTls | None = Field(default=None, description="Connect over TLS; absent: plain TCP")
    max_payload_bytes: int = Field(
        default=65_536, ge=16, description="Larger payloads go to the DLQ with their first this many bytes"
    )
    protocol_version: MqttVersion = Field(
        default="5",
        description="MQTT 5 lets this node size the broker's in-flight window itself (receive_maximum); a 3.1.1 "
        "broker uses its own setting (Mosquitto's max_inflight_messages, 20 by default, which paces a node that "
        "acknowledges after Kafka)",
    )
    receive_maximum: int = Field(
        default=10_000,
        ge=1,
        le=65_535,
        description="MQTT 5: QoS 1 messages the broker may send before this node acknowledges them (it does once "
        "Kafka holds them): bounds the memory they take and, over one Kafka round trip, the rate",
    )
    batch_size: int = Field(default=2000, ge=1, le=50_000, description="Messages per Kafka batch, at most")
    batch_wait_ms: int = Field(default=20, ge=0, le=5000, description="How long a batch waits to fill")
    connection: ConnectionSettings = Field(default_factory=ConnectionSettings)


MqttConfigT = TypeVar("MqttConfigT", bound=MqttConnectionConfig)


def json_pointer(document: Any, pointer: str) -> Any:
    """RFC 6901: '' is the whole document; KeyError/IndexError when the path is absent."""
    for token in _pointer_tokens(pointer):
        document = document[int(token)] if isinstance(document, list) else document[token]
    return document


@functools.cache  # pointers come from node configs: a few, each read for every message
def _pointer_tokens(pointer: str) -> tuple[str, ...]:
    if pointer == "":
        return ()
    return tuple(token.replace("~1", "/").replace("~0", "~") for token in pointer.lstrip("/").split("/"))


def parse_device_time(value: Any) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return from_epoch_ms(int(value))
    moment = datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class MappingError(ValueError):
    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.field = code, field


class MqttSource(SourceNode[MqttConfigT]):
    """Lifecycle: start() loads the TLS files (a missing certificate refuses the deploy); connect() opens a
    persistent session and subscribes; poll() takes a batch and maps it; acknowledge() sends the PUBACKs once Kafka
    holds the batch. A broker that is away is the runtime's to retry (the node shows DEGRADED meanwhile).
    Subclasses say what to subscribe to and how one message becomes readings."""

    category = "sources"
    icon = "broadcast"
    outputs = (
        Port("out", PortType.TELEMETRY, "telemetry.raw", description="Readings"),
        Port("dlq", PortType.DLQ, "dlq.telemetry", description="Payloads that could not be mapped, with reasons"),
    )

    def topics(self) -> list[tuple[str, int]]:
        """(topic filter, QoS) pairs to subscribe to."""
        raise NotImplementedError

    def readings(self, topic: str, document: Any) -> list[Record]:
        """The readings of one decoded message; MappingError sends it to the DLQ with the reason."""
        raise NotImplementedError

    def will(self) -> Will | None:
        """What the broker publishes for this node if it vanishes without disconnecting (none by default)."""
        return None

    async def subscribed(self, session: MqttSession) -> None:
        """Called once connected and subscribed, before the first message is read."""

    def decode(self, payload: bytes) -> Any:
        """The document one payload holds (JSON unless a subclass speaks another encoding); MappingError if none."""
        try:
            return json.loads(payload)
        except ValueError as exc:
            raise MappingError("invalid_json", f"payload is not JSON: {exc}") from None

    async def start(self) -> None:
        config = self.config
        self._endpoint = Endpoint(
            config.host, config.port, config.client_id or f"streamforge-{self.context.flow_id}-{self.context.node_id}",
            config.username, config.password.get_secret_value() if config.password else None,
            config.tls.context() if config.tls is not None else None, config.connection.timeout_s,
            version=config.protocol_version, receive_maximum=config.receive_maximum,
        )  # fmt: skip
        self._session: MqttSession | None = None
        self._unacked: tuple[MqttSession | None, list[Arrival]] = (None, [])

    async def connect(self) -> None:
        session = MqttSession(self._endpoint, self.will())
        self._session = session
        await session.open(self.topics())
        await self.subscribed(session)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._session, self._unacked = None, (None, [])  # unacknowledged: redelivered to the persistent session

    async def poll(self) -> Emitted:
        assert self._session is not None
        batch = await self._session.take(self.config.batch_size, 1.0, self.config.batch_wait_ms / 1000)
        self._unacked = (self._session, batch)
        return self._map(batch)

    def _map(self, batch: list[Arrival]) -> Emitted:
        readings: list[Record] = []
        letters: list[Record] = []
        for message in batch:
            topic, payload = message.topic, message.payload
            try:
                if len(payload) > self.config.max_payload_bytes:
                    raise MappingError(
                        "too_large", f"payload is {len(payload)} bytes; the limit is {self.config.max_payload_bytes}"
                    )
                readings += self.readings(topic, self.decode(payload))
            except MappingError as refused:
                letters.append(
                    dead_letter(
                        self.context.node_id,
                        [reason(refused.code, str(refused), refused.field)],
                        payload[: self.config.max_payload_bytes],
                        f"mqtt:{topic}",
                    )
                )
        return {"out": readings, "dlq": letters}

    async def acknowledge(self, emitted: Emitted) -> None:
        """Kafka holds every reading and dead letter of the batch: now the broker may forget the messages."""
        session, messages = self._unacked
        if session is not None and session is self._session:  # a message id means nothing to a newer session
            session.acknowledge(messages)
        self._unacked = (None, [])
