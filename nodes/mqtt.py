"""`mqtt` source: subscribes with topic filters, maps JSON payloads to readings, and acknowledges QoS 1 messages
only after Kafka acknowledged what they became, so an overload waits in the broker and nothing is lost."""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as paho
from pydantic import BaseModel, ConfigDict, Field, field_validator

from streamforge.engine.devices import PointMapping
from streamforge.engine.sdk import Record
from streamforge.nodes.protocols.mqtt import (
    MappingError,
    MqttConnectionConfig,
    MqttSource,
    SubscriptionQos,
    json_pointer,
    parse_device_time,
)


class PayloadPoint(PointMapping):
    """One reading taken from each message (or each element of `array`); `{1}` in asset_id or parameter is
    the topic's second level, `{0}` the first, and so on."""

    value: str = Field(default="/value", description="JSON pointer to the value; empty: the payload is a number")
    device_time: str | None = Field(
        default=None,
        description="JSON pointer to the device time (ISO-8601 or "
        "epoch milliseconds); absent: gateway time, quality UNCERTAIN",
    )


SHARED = "$share/"  # MQTT 5 shared subscription: $share/<group>/<filter>, each message to one member of the group


class TopicMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str = Field(
        min_length=1,
        description="Topic filter; + and # wildcards. $share/<group>/<filter> shares the subscription with the "
        "group's other members (other nodes or gateways): each message goes to one of them",
    )
    qos: SubscriptionQos = Field(default=1, description="1: acknowledged only after Kafka has the readings")
    array: str | None = Field(default=None, description="JSON pointer to an array of points, each mapped alone")
    points: list[PayloadPoint] = Field(min_length=1)

    @field_validator("topic")
    @classmethod
    def _shared_has_a_filter(cls, topic: str) -> str:
        if topic.startswith(SHARED) and len(topic.split("/", 2)) < 3:
            raise ValueError(f"{topic!r}: a shared subscription is $share/<group>/<topic filter>")
        return topic

    @property
    def topic_filter(self) -> str:
        """What a message's topic is matched against: a shared subscription's filter without $share/<group>/."""
        return self.topic.split("/", 2)[2] if self.topic.startswith(SHARED) else self.topic


class MqttConfig(MqttConnectionConfig):
    subscriptions: list[TopicMapping] = Field(min_length=1)


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


class Mqtt(MqttSource[MqttConfig]):
    type = "mqtt"
    description = "MQTT subscriber: JSON payloads to readings; QoS 1 acknowledged after Kafka has them"

    def topics(self) -> list[tuple[str, int]]:
        return [(mapping.topic, mapping.qos) for mapping in self.config.subscriptions]

    async def start(self) -> None:
        await super().start()
        self._mapping_of: dict[str, TopicMapping] = {}

    def readings(self, topic: str, document: Any) -> list[Record]:
        mapping = self._mapping_of.get(topic)
        if mapping is None:  # topics repeat: match each against the filters once
            matching = (m for m in self.config.subscriptions if paho.topic_matches_sub(m.topic_filter, topic))
            mapping = next(matching, None)
            if mapping is not None and len(self._mapping_of) < 100_000:
                self._mapping_of[topic] = mapping
        if mapping is None:
            raise MappingError("unmapped_topic", f"no subscription mapping matches {topic!r}")
        return map_payload(mapping, topic, document)


NODE = Mqtt
