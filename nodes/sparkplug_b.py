"""`sparkplug_b` source: Eclipse Sparkplug B edge nodes and devices over MQTT, read as a host application would
(births, metric aliases, sequence numbers, deaths, rebirth requests); acknowledged like `mqtt`, only after
Kafka has the readings."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from typing import Any, Literal

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from pydantic import BaseModel, ConfigDict, Field

from streamforge.engine.devices import Classification, PointMapping
from streamforge.engine.records import epoch_ms, from_epoch_ms
from streamforge.engine.sdk import Emitted, PeerUnavailable, Record
from streamforge.nodes.protocols.mqtt import MappingError, MqttConnectionConfig, MqttSource, SubscriptionQos
from streamforge.nodes.protocols.mqtt_session import MqttSession, Will

NAMESPACE = "spBv1.0"
SPARKPLUG_ID = r"^([^/+#]+|\+)$"  # one topic level, or + for all
_F = descriptor_pb2.FieldDescriptorProto

# The part of the Sparkplug B payload (specification 3.0, "Payload") a host application reads. Protobuf skips
# fields a schema does not name, so metadata, properties, datasets and templates pass unharmed.
PAYLOAD_FIELDS = (("timestamp", 1, _F.TYPE_UINT64), ("seq", 3, _F.TYPE_UINT64), ("uuid", 4, _F.TYPE_STRING))
METRIC_FIELDS = (
    ("name", 1, _F.TYPE_STRING), ("alias", 2, _F.TYPE_UINT64), ("timestamp", 3, _F.TYPE_UINT64),
    ("datatype", 4, _F.TYPE_UINT32), ("is_historical", 5, _F.TYPE_BOOL), ("is_transient", 6, _F.TYPE_BOOL),
    ("is_null", 7, _F.TYPE_BOOL),
)  # fmt: skip
METRIC_VALUES = (
    ("int_value", 10, _F.TYPE_UINT32), ("long_value", 11, _F.TYPE_UINT64), ("float_value", 12, _F.TYPE_FLOAT),
    ("double_value", 13, _F.TYPE_DOUBLE), ("boolean_value", 14, _F.TYPE_BOOL), ("string_value", 15, _F.TYPE_STRING),
)  # fmt: skip
# Numeric datatypes: the value field, and the bit width of a signed integer kept there in two's complement.
NUMERIC = {
    1: ("int_value", 8), 2: ("int_value", 16), 3: ("int_value", 32), 4: ("long_value", 64),  # Int8..Int64
    5: ("int_value", 0), 6: ("int_value", 0), 7: ("int_value", 0), 8: ("long_value", 0),  # UInt8..UInt64
    9: ("float_value", 0), 10: ("double_value", 0), 11: ("boolean_value", 0),  # Float, Double, Boolean
}  # fmt: skip
BOOLEAN = 11


def _payload_class() -> Any:
    """The Sparkplug B Payload message class, built from the table above once, at import."""
    schema = descriptor_pb2.FileDescriptorProto(
        name="streamforge/sparkplug_b.proto", package="org.eclipse.tahu.protobuf", syntax="proto2"
    )
    payload = schema.message_type.add(name="Payload")
    metric = payload.nested_type.add(name="Metric")
    metric.oneof_decl.add(name="value")
    for name, number, kind in METRIC_FIELDS:
        metric.field.add(name=name, number=number, type=kind, label=_F.LABEL_OPTIONAL)
    for name, number, kind in METRIC_VALUES:
        metric.field.add(name=name, number=number, type=kind, label=_F.LABEL_OPTIONAL, oneof_index=0)
    for name, number, kind in PAYLOAD_FIELDS:
        payload.field.add(name=name, number=number, type=kind, label=_F.LABEL_OPTIONAL)
    payload.field.add(name="metrics", number=2, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
                      type_name=".org.eclipse.tahu.protobuf.Payload.Metric")  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(schema)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("org.eclipse.tahu.protobuf.Payload"))


Payload = _payload_class()


def metric_value(metric: Any, datatype: int) -> float | None:
    """The numeric value of a metric of `datatype`; None when it is null. Not numeric: ValueError."""
    if datatype not in NUMERIC:
        raise ValueError(f"datatype {datatype} is not numeric")
    if metric.is_null:
        return None
    name, signed_bits = NUMERIC[datatype]
    raw = getattr(metric, name)
    if signed_bits:  # Int8..Int64 travel as unsigned two's complement, sign-extended or not
        raw &= (1 << signed_bits) - 1
        raw -= (1 << signed_bits) if raw >> (signed_bits - 1) else 0
    return float(raw)


def rebirth_request(timestamp_ms: int) -> bytes:
    """The NCMD payload asking an edge node to publish its births again (specification: Node Control/Rebirth)."""
    request = Payload(timestamp=timestamp_ms)
    request.metrics.add(name="Node Control/Rebirth", datatype=BOOLEAN, boolean_value=True)
    data: bytes = request.SerializeToString()
    return data


class SparkplugPoint(BaseModel):
    """How one metric (by the name its BIRTH declares) becomes readings."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field(min_length=1, description="Metric name, e.g. Inputs/Temperature")
    asset_id: str | None = Field(default=None, description="Default: the device id (edge node id for node metrics)")
    parameter: str | None = Field(default=None, description="Default: the metric name")
    unit: str | None = None
    classification: Classification = "TELEMETRY"
    scale: float = Field(default=1.0, description="value = raw * scale + offset")
    offset: float = 0.0


class SparkplugConfig(MqttConnectionConfig):
    group_id: str = Field(default="+", pattern=SPARKPLUG_ID, description="Sparkplug group to follow; + for every group")
    edge_node_id: str = Field(default="+", pattern=SPARKPLUG_ID, description="Edge node to follow; + for every one")
    qos: SubscriptionQos = Field(default=1, description="Subscription QoS; Sparkplug publishes data at QoS 0")
    points: list[SparkplugPoint] = Field(default_factory=list, description="Units, scaling and names per metric")
    unlisted_metrics: Literal["take", "ignore"] = Field(
        default="take", description="Numeric metrics not in points: readings named after the metric, or ignored"
    )
    request_rebirth: bool = Field(
        default=True,
        description="Publish a Node Control/Rebirth NCMD when an edge node's state is unknown "
        "(data before its birth, or a sequence gap), as the specification asks of a host application",
    )
    host_id: str | None = Field(
        default=None,
        pattern=r"^[^/+#]+$",  # one topic level
        description="Act as this primary host application: publish spBv1.0/STATE/<host_id> online (retained), "
        "with an offline will, so edge nodes that wait for their primary host start publishing",
    )
    rebirth_interval_s: float = Field(
        default=5.0, ge=0.1, description="At most one rebirth request per edge node this often: births take a moment"
    )


class EdgeNode(BaseModel):
    """What the births of one edge node declared; reset by each NBIRTH. Kept in the node's changelog (seq is not:
    the next message sets it)."""

    bd_seq: int | None = None
    seq: int | None = Field(default=None, exclude=True)
    aliases: dict[int, tuple[str, int]] = Field(default_factory=dict)  # alias -> (name, datatype)
    metrics: dict[str, dict[str, int]] = Field(default_factory=dict)  # device ("": the edge node) -> name -> type


class SparkplugB(MqttSource[SparkplugConfig]):
    """Lifecycle as `mqtt`. Births declare metric names, aliases and datatypes and carry current values; data
    messages may name metrics by alias only, so data from an edge node whose birth this node has not seen goes
    to the DLQ (kept, with the reason) and a rebirth is requested. A death marks every metric it covers BAD;
    a node death whose bdSeq does not match the current birth is an old session's and is ignored. Births are
    kept in the node's changelog, so a restarted worker still reads data by alias. With `host_id` it is a
    primary host (Sparkplug 3.0 STATE): online once subscribed, offline on stop or, as its will, when the worker
    dies."""

    type = "sparkplug_b"
    description = "Sparkplug B host: edge node and device metrics over MQTT, births and aliases tracked"

    def topics(self) -> list[tuple[str, int]]:
        return [(f"{NAMESPACE}/{self.config.group_id}/+/{self.config.edge_node_id}/#", self.config.qos)]

    async def start(self) -> None:
        await super().start()
        # Births in the changelog: after a restart, data that names metrics by alias is still understood.
        self._edges = self.context.state.table("edge", EdgeNode)  # by (group, edge node)
        self._rebirths: set[tuple[str, str]] = set()
        self._rebirth_sent: dict[tuple[str, str], float] = {}
        self._state_since = 0  # the primary host's STATE timestamp, the same online and in the will
        keep = {"unit", "classification", "scale", "offset"}
        self._points = {
            p.metric: (
                p,
                PointMapping(asset_id="-", parameter=p.parameter or p.metric, **p.model_dump(include=keep)),
            )
            for p in self.config.points
        }  # asset_id is given per reading: the device the metric came from, unless the point names one
        self._plain = PointMapping(asset_id="-", parameter="-")

    def _state(self, online: bool) -> bytes:
        return json.dumps({"online": online, "timestamp": self._state_since}).encode()

    def will(self) -> Will | None:
        """A primary host's death certificate: STATE offline, with the timestamp its online STATE will carry."""
        if self.config.host_id is None:
            return None
        self._state_since = epoch_ms(self.clock.now())
        return Will(f"{NAMESPACE}/STATE/{self.config.host_id}", self._state(False), qos=1, retain=True)

    async def subscribed(self, session: MqttSession) -> None:
        if self.config.host_id is not None:  # subscribed first: the births this STATE prompts are not missed
            await session.publish(f"{NAMESPACE}/STATE/{self.config.host_id}", self._state(True), qos=1, retain=True)

    async def close(self) -> None:
        if self.config.host_id is not None and self._session is not None:  # a clean disconnect sends no will
            with contextlib.suppress(PeerUnavailable):
                await self._session.publish(f"{NAMESPACE}/STATE/{self.config.host_id}", self._state(False), qos=1,
                                            retain=True)  # fmt: skip
        await super().close()

    def decode(self, payload: bytes) -> Any:
        try:
            return Payload.FromString(payload)
        except DecodeError as exc:
            raise MappingError("invalid_payload", f"payload is not a Sparkplug B protobuf: {exc}") from None

    async def poll(self) -> Emitted:
        emitted = await super().poll()
        await self._request_rebirths()
        return emitted

    async def _request_rebirths(self) -> None:
        session, now = self._session, self.clock.monotonic()
        if session is None or not self.config.request_rebirth:
            self._rebirths.clear()
            return
        for group, edge in self._rebirths:
            last = self._rebirth_sent.get((group, edge))
            if last is None or now - last >= self.config.rebirth_interval_s:
                self._rebirth_sent[(group, edge)] = now
                # Disconnected: the next poll reconnects, and data still unknown asks again.
                request = rebirth_request(epoch_ms(self.clock.now()))
                with contextlib.suppress(PeerUnavailable):
                    await session.publish(f"{NAMESPACE}/{group}/NCMD/{edge}", request, qos=0)
        self._rebirths.clear()

    def readings(self, topic: str, document: Any) -> list[Record]:
        levels = topic.split("/")
        if len(levels) not in (4, 5) or levels[0] != NAMESPACE:
            raise MappingError("not_sparkplug", f"{topic!r} is not a Sparkplug B edge node or device topic")
        group, kind, edge = levels[1], levels[2], levels[3]
        device = levels[4] if len(levels) == 5 else ""  # "": the edge node itself
        key = (group, edge)
        if kind in ("NCMD", "DCMD"):
            return []  # commands to an edge node are not its data
        if kind not in ("NBIRTH", "DBIRTH", "NDATA", "DDATA", "NDEATH", "DDEATH"):
            raise MappingError("unknown_message_type", f"{kind!r} is not a Sparkplug B message type")
        if kind == "NBIRTH":
            self._edges[key] = EdgeNode(bd_seq=self._bd_seq(document), metrics={"": {}})
            self._rebirths.discard(key)
        node = self._edges.get(key)
        if kind == "NDEATH" and (node is None or node.bd_seq != self._bd_seq(document)):
            return []  # the will of an older session: it says nothing about the current one
        if node is None:
            self._rebirths.add(key)
            raise MappingError("unknown_edge_node", f"{kind} from {group}/{edge} before its NBIRTH; rebirth requested")
        self._check_sequence(node, key, document)
        if kind == "DBIRTH":
            node.metrics[device] = {}
        if device not in node.metrics:
            self._rebirths.add(key)
            raise MappingError("unknown_device", f"{kind} from {group}/{edge}/{device} before its DBIRTH")
        if kind.endswith(("BIRTH", "DEATH")):
            self._edges.touch(key)
        if kind.endswith("DEATH"):
            return self._deaths(node, key, device, topic, document)
        return self._metrics(node, key, device, kind, topic, document)

    def _reading(self, name: str, raw: float | None, asset: str, at: datetime | None, topic: str) -> Record | None:
        """The reading of one numeric metric, through its point mapping; None when unlisted ones are ignored."""
        point, mapping = self._points.get(name, (None, self._plain))
        if point is None:
            if self.config.unlisted_metrics == "ignore":
                return None
            return mapping.reading(raw, device_time=at, metadata={"sparkplug": topic}, asset_id=asset, parameter=name)
        return mapping.reading(raw, device_time=at, metadata={"sparkplug": topic}, asset_id=point.asset_id or asset)

    @staticmethod
    def _bd_seq(document: Any) -> int | None:
        return next((int(m.long_value) for m in document.metrics if m.name == "bdSeq"), None)

    def _check_sequence(self, node: EdgeNode, key: tuple[str, str], document: Any) -> None:
        """seq counts 0..255 over every message of an edge node but its death; a gap means one was lost."""
        if not document.HasField("seq"):
            return
        if node.seq is not None and document.seq != (node.seq + 1) % 256:
            self._rebirths.add(key)
        node.seq = document.seq

    def _metrics(self, node: EdgeNode, key: tuple[str, str], device: str, kind: str, topic: str,
                 document: Any) -> list[Record]:  # fmt: skip
        declared = node.metrics[device]
        birth = kind.endswith("BIRTH")
        sent_at = from_epoch_ms(document.timestamp) if document.HasField("timestamp") else None
        out = []
        for metric in document.metrics:
            name = metric.name
            if birth:
                declared[name] = metric.datatype
                if metric.HasField("alias"):
                    node.aliases[metric.alias] = (name, metric.datatype)
            elif not name:
                if metric.alias not in node.aliases:
                    self._rebirths.add(key)
                    raise MappingError("unknown_alias", f"alias {metric.alias} was not in the births of {key[1]}")
                name = node.aliases[metric.alias][0]
            datatype = metric.datatype or declared.get(name, 0)
            if datatype not in NUMERIC or metric.is_transient or name == "bdSeq" or name.startswith("Node Control/"):
                continue
            at = from_epoch_ms(metric.timestamp) if metric.HasField("timestamp") else sent_at
            reading = self._reading(name, metric_value(metric, datatype), device or key[1], at, topic)
            if reading is not None:
                out.append(reading)
        return out

    def _deaths(self, node: EdgeNode, key: tuple[str, str], device: str, topic: str,
                document: Any) -> list[Record]:  # fmt: skip
        """Every numeric metric the death covers, value None and quality BAD: stale until the next birth."""
        at = from_epoch_ms(document.timestamp) if document.HasField("timestamp") else None
        out = []
        for each in [device] if device else list(node.metrics):
            for name, datatype in node.metrics.pop(each, {}).items():
                if datatype in NUMERIC and name != "bdSeq" and not name.startswith("Node Control/"):
                    reading = self._reading(name, None, each or key[1], at, topic)
                    if reading is not None:
                        out.append(reading)
        if not device:
            del self._edges[key]
        return out


NODE = SparkplugB
