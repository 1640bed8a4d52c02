"""`mqtt` source: subscribes with topic filters, maps JSON payloads to readings, and acknowledges QoS 1 messages
only after Kafka acknowledged what they became, so an overload waits in the broker and nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import aiomqtt
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

from streamforge.engine.devices import Backoff, ConnectionSettings, Inbox, PointMapping
from streamforge.engine.records import dead_letter, from_epoch_ms, reason
from streamforge.engine.sdk import Emitted, NodeConfig, Port, PortType, Record, SourceNode


class PayloadPoint(PointMapping):
    """One reading taken from each message (or each element of `array`); `{1}` in asset_id or parameter is
    the topic's second level, `{0}` the first, and so on."""

    value: str = Field(default="/value", description="JSON pointer to the value; empty: the payload is a number")
    device_time: str | None = Field(
        default=None,
        description="JSON pointer to the device time (ISO-8601 or "
        "epoch milliseconds); absent: gateway time, quality UNCERTAIN",
    )


def _refuse_qos2(qos: Any) -> Any:
    if qos == 2:
        raise ValueError(
            "QoS 2 subscriptions are refused: the broker hands a QoS 2 message over at PUBREC, which the MQTT client "
            "sends on receipt, before Kafka has it, so a crash would lose it. Subscribe with QoS 1: QoS 2 "
            "publications then arrive at least once and are acknowledged only after Kafka has them"
        )
    return qos


SubscriptionQos = Annotated[Literal[0, 1], BeforeValidator(_refuse_qos2)]


class TopicMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str = Field(min_length=1, description="Topic filter; + and # wildcards")
    qos: SubscriptionQos = Field(default=1, description="1: acknowledged only after Kafka has the readings")
    array: str | None = Field(default=None, description="JSON pointer to an array of points, each mapped alone")
    points: list[PayloadPoint] = Field(min_length=1)


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
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"tls.ca_file {self.ca_file}: {exc.strerror or exc}") from exc
        context.check_hostname = self.verify_hostname
        if self.cert_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(
                    f"tls.cert_file {self.cert_file} / key_file {self.key_file}: {exc.strerror or exc}"
                ) from exc
        return context


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
    batch_size: int = Field(default=2000, ge=1, le=50_000, description="Messages per Kafka batch, at most")
    batch_wait_ms: int = Field(default=20, ge=0, le=5000, description="How long a batch waits to fill")
    connection: ConnectionSettings = Field(default_factory=ConnectionSettings)


class MqttConfig(MqttConnectionConfig):
    subscriptions: list[TopicMapping] = Field(min_length=1)


def json_pointer(document: Any, pointer: str) -> Any:
    """RFC 6901: '' is the whole document; KeyError/IndexError when the path is absent."""
    if pointer == "":
        return document
    for token in pointer.lstrip("/").split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        document = document[int(token)] if isinstance(document, list) else document[token]
    return document


def parse_device_time(value: Any) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return from_epoch_ms(int(value))
    moment = datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class MappingError(ValueError):
    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.field = code, field


def map_payload(mapping: TopicMapping, topic: str, payload: Any) -> list[Record]:
    """The readings one decoded payload yields; MappingError names what is missing or wrong."""
    levels = topic.split("/")
    items = [payload]
    if mapping.array is not None:
        try:
            items = json_pointer(payload, mapping.array)
        except (KeyError, IndexError, TypeError, ValueError):
            raise MappingError("missing_field", f"no array at {mapping.array}", mapping.array) from None
        if not isinstance(items, list):
            raise MappingError("wrong_type", f"{mapping.array} is not an array", mapping.array)
    readings = []
    for index, item in enumerate(items):
        where = f"{mapping.array}/{index}" if mapping.array is not None else ""
        for point in mapping.points:
            try:
                raw = json_pointer(item, point.value)
            except (KeyError, IndexError, TypeError, ValueError):
                raise MappingError("missing_field", f"no value at {where}{point.value}", where + point.value) from None
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise MappingError(
                    "wrong_type", f"{where}{point.value} is {type(raw).__name__}, not a number", where + point.value
                )
            device_time = None
            if point.device_time is not None:
                try:
                    device_time = parse_device_time(json_pointer(item, point.device_time))
                except (KeyError, IndexError, TypeError, ValueError):
                    raise MappingError(
                        "bad_time", f"no usable time at {where}{point.device_time}", where + point.device_time
                    ) from None
            try:  # names may take topic levels: "{1}" is the second
                asset_id = point.asset_id.format(*levels) if "{" in point.asset_id else point.asset_id
                parameter = point.parameter.format(*levels) if "{" in point.parameter else point.parameter
            except (IndexError, KeyError):
                raise MappingError("bad_topic", f"topic {topic!r} has too few levels for {point.asset_id!r}") from None
            readings.append(point.reading(float(raw), device_time=device_time, metadata={"mqtt_topic": topic},
                                          asset_id=asset_id, parameter=parameter))  # fmt: skip
    return readings


class MqttSource(SourceNode[Any]):
    """Lifecycle: start() only prepares; poll() connects (with backoff), collects a batch, maps it; acknowledge()
    sends the PUBACKs once Kafka holds the batch. A broker outage shows as DEGRADED and is retried forever.
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

    def readings(self, topic: aiomqtt.Topic, document: Any) -> list[Record]:
        """The readings of one decoded message; MappingError sends it to the DLQ with the reason."""
        raise NotImplementedError

    def will(self) -> aiomqtt.Will | None:
        """What the broker publishes for this node if it vanishes without disconnecting (none by default)."""
        return None

    async def subscribed(self, client: aiomqtt.Client) -> None:
        """Called once connected and subscribed, before the first message is read."""

    def decode(self, payload: bytes) -> Any:
        """The document one payload holds (JSON unless a subclass speaks another encoding); MappingError if none."""
        try:
            return json.loads(payload)
        except ValueError as exc:
            raise MappingError("invalid_json", f"payload is not JSON: {exc}") from None

    async def start(self) -> None:
        # A missing or unreadable certificate is a configuration error: it refuses the deploy, naming the file.
        self._tls_context = self.config.tls.context() if self.config.tls is not None else None
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None
        self._inbox: Inbox[aiomqtt.Message] = Inbox()
        self._unacked: list[aiomqtt.Message] = []
        self._backoff = Backoff(self.config.connection)

    async def stop(self) -> None:
        await self._disconnect()

    async def _connect(self) -> None:
        config = self.config
        client = aiomqtt.Client(
            config.host,
            config.port,
            identifier=config.client_id or f"streamforge-{self.context.flow_id}-{self.context.node_id}",
            username=config.username,
            password=config.password.get_secret_value() if config.password else None,
            clean_session=False,
            timeout=config.connection.timeout_s,
            will=self.will(),
            tls_context=self._tls_context,
        )
        # PUBACK only after Kafka acknowledged: aiomqtt has no switch for it, its paho client has.
        client._client.manual_ack_set(True)
        await client.__aenter__()
        try:
            for topic, qos in self.topics():
                await client.subscribe(topic, qos=qos)
            await self.subscribed(client)
        except BaseException:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)
            raise
        self._client = client
        self._reader = asyncio.create_task(self._read(client))

    async def _read(self, client: aiomqtt.Client) -> None:
        """Move received messages into the inbox, a burst at a time.

        Bounded by the broker: it sends no more than its in-flight window of unacknowledged messages. aiomqtt's
        own iterator waits on a new task per message; at thousands of messages per second that is the hot path,
        so this drains its queue directly."""
        queue, disconnected = client._queue, client._disconnected
        while not disconnected.done():
            arrival = asyncio.ensure_future(queue.get())
            try:
                await asyncio.wait((arrival, disconnected), return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not arrival.done():
                    arrival.cancel()  # disconnected or cancelled: no orphan left holding the next message
            if not arrival.done() or arrival.cancelled():  # a cancelled task finishes cancelling later
                break
            self._inbox.put(arrival.result())
            while not queue.empty():
                self._inbox.put(queue.get_nowait())
        self._inbox.wake()  # poll() notices the disconnect

    async def _disconnect(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._reader
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.__aexit__(None, None, None)
        self._client, self._reader = None, None
        self._inbox.items.clear()  # unacknowledged: the broker redelivers them to this persistent session
        self._unacked.clear()

    async def poll(self) -> Emitted:
        if self._client is None or self._reader is None or self._reader.done():
            await self._disconnect()
            try:
                await self._connect()
            except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
                self.context.degraded(f"cannot reach MQTT broker {self.config.host}:{self.config.port}: {exc}")
                await asyncio.sleep(self._backoff.next_delay())
                return {}
            self._backoff.reset()
            self.context.healthy()
        batch = await self._inbox.take(self.config.batch_size, 1.0, self.config.batch_wait_ms / 1000)
        self._unacked = batch
        return self._map(batch)

    def _map(self, batch: list[aiomqtt.Message]) -> Emitted:
        readings: list[Record] = []
        letters: list[Record] = []
        for message in batch:
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            try:
                if len(payload) > self.config.max_payload_bytes:
                    raise MappingError(
                        "too_large", f"payload is {len(payload)} bytes; the limit is {self.config.max_payload_bytes}"
                    )
                readings += self.readings(message.topic, self.decode(payload))
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
        client = self._client
        if client is not None:
            for message in self._unacked:
                if message.qos:
                    client._client.ack(message.mid, message.qos)
        self._unacked = []


class Mqtt(MqttSource):
    type = "mqtt"
    description = "MQTT subscriber: JSON payloads to readings; QoS 1 acknowledged after Kafka has them"
    Config = MqttConfig

    def topics(self) -> list[tuple[str, int]]:
        return [(mapping.topic, mapping.qos) for mapping in self.config.subscriptions]

    async def start(self) -> None:
        await super().start()
        self._mapping_of: dict[str, TopicMapping] = {}

    def readings(self, topic: aiomqtt.Topic, document: Any) -> list[Record]:
        mapping = self._mapping_of.get(topic.value)
        if mapping is None:  # topics repeat: match each against the filters once
            mapping = next((m for m in self.config.subscriptions if topic.matches(m.topic)), None)
            if mapping is not None and len(self._mapping_of) < 100_000:
                self._mapping_of[topic.value] = mapping
        if mapping is None:
            raise MappingError("unmapped_topic", f"no subscription mapping matches {topic.value!r}")
        return map_payload(mapping, topic.value, document)


NODE = Mqtt
