"""`lora` source: LoRaWAN uplinks from a network server's MQTT integration (ChirpStack v4 or The Things Stack v3
JSON), decoded per device profile: the server's decoded object, or the raw frame payload by byte layout.

Serial LoRa modules (point-to-point, no network server) are left out: every site we target runs a LoRaWAN network
server, and its MQTT integration already gives the device identity, frame counter and radio metadata."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamforge.engine.devices import ByteType, Classification, PointMapping, unpack_number
from streamforge.engine.sdk import Record
from streamforge.nodes.protocols.mqtt import (
    MappingError,
    MqttConnectionConfig,
    MqttSource,
    SubscriptionQos,
    json_pointer,
    parse_device_time,
)

MAPPED = {"parameter", "unit", "classification", "scale", "offset"}  # a field's part of a PointMapping
TOPICS = {"chirpstack": "application/+/device/+/event/up", "tts": "v3/+/devices/+/up"}


class LoraField(BaseModel):
    """One value of a device's uplink: from the decoded object (`path`) or from the raw bytes (`byte_offset`)."""

    model_config = ConfigDict(extra="forbid")

    parameter: str = Field(min_length=1)
    unit: str | None = None
    classification: Classification = "TELEMETRY"
    path: str | None = Field(default=None, description="JSON pointer into the decoded object, e.g. /temperature")
    byte_offset: int | None = Field(default=None, ge=0, description="Position in the frame payload")
    byte_type: ByteType = "int16"
    big_endian: bool = True
    scale: float = 1.0
    offset: float = 0.0

    @model_validator(mode="after")
    def _one_source(self) -> LoraField:
        if (self.path is None) == (self.byte_offset is None):
            raise ValueError("give exactly one of path (decoded object) or byte_offset (raw payload)")
        return self


class LoraDevice(BaseModel):
    """A device profile: which end device, which asset it is, what its uplinks carry."""

    model_config = ConfigDict(extra="forbid")

    dev_eui: str = Field(pattern=r"^[0-9a-fA-F]{16}$")
    asset_id: str = Field(min_length=1)
    fields: list[LoraField] = Field(min_length=1)


class LoraConfig(MqttConnectionConfig):
    network_server: Literal["chirpstack", "tts"] = "chirpstack"
    topic: str | None = Field(default=None, description="Default: the network server's uplink topic filter")
    qos: SubscriptionQos = 1
    devices: list[LoraDevice] = Field(min_length=1)


def _uplink(server: str, document: Any) -> tuple[str, Any, bytes, Any, dict[str, str]]:
    """(dev_eui, decoded object, frame payload, device time, radio metadata) of one uplink message."""
    try:
        if server == "chirpstack":
            dev_eui, decoded, data = document["deviceInfo"]["devEui"], document.get("object"), document.get("data")
            radio = (document.get("rxInfo") or [{}])[0]
            when = document.get("time") or radio.get("gwTime")
            meta = {"f_cnt": document.get("fCnt"), "rssi": radio.get("rssi"), "snr": radio.get("snr")}
        else:
            uplink = document["uplink_message"]
            dev_eui, decoded, data = (
                document["end_device_ids"]["dev_eui"],
                uplink.get("decoded_payload"),
                uplink.get("frm_payload"),
            )
            radio = (uplink.get("rx_metadata") or [{}])[0]
            when = radio.get("time") or uplink.get("received_at") or document.get("received_at")
            meta = {"f_cnt": uplink.get("f_cnt"), "rssi": radio.get("rssi"), "snr": radio.get("snr")}
    except (KeyError, TypeError, IndexError, AttributeError):
        raise MappingError("not_an_uplink", f"not a {server} uplink: no device identity") from None
    try:
        payload = base64.b64decode(data, validate=True) if data else b""
    except (binascii.Error, TypeError):
        raise MappingError("bad_payload", "frame payload is not base64") from None
    time = parse_device_time(when) if when else None
    return str(dev_eui).lower(), decoded, payload, time, {k: str(v) for k, v in meta.items() if v is not None}


class Lora(MqttSource[LoraConfig]):
    type = "lora"
    description = "LoRaWAN uplinks via ChirpStack / The Things Stack MQTT, decoded per device profile"

    def topics(self) -> list[tuple[str, int]]:
        return [(self.config.topic or TOPICS[self.config.network_server], self.config.qos)]

    async def start(self) -> None:
        await super().start()
        self._devices = {
            device.dev_eui.lower(): [
                (field, PointMapping(asset_id=device.asset_id, **field.model_dump(include=MAPPED)))
                for field in device.fields
            ]
            for device in self.config.devices
        }

    def readings(self, topic: str, document: Any) -> list[Record]:
        dev_eui, decoded, payload, device_time, radio = _uplink(self.config.network_server, document)
        fields = self._devices.get(dev_eui)
        if fields is None:
            raise MappingError("unknown_device", f"device {dev_eui} has no profile in this node")
        out = []
        for field, mapping in fields:
            if field.path is not None:
                try:
                    raw = json_pointer(decoded, field.path)
                except (KeyError, IndexError, TypeError, ValueError):
                    raise MappingError("missing_field", f"decoded object has no {field.path}", field.path) from None
                if isinstance(raw, bool) or not isinstance(raw, int | float):
                    raise MappingError("wrong_type", f"{field.path} is not a number", field.path)
            else:
                assert field.byte_offset is not None
                try:
                    raw = unpack_number(payload, field.byte_offset, field.byte_type, field.big_endian)
                except ValueError as short:
                    raise MappingError("short_payload", f"{field.parameter}: {short}") from None
            out.append(mapping.reading(float(raw), device_time=device_time, metadata={"dev_eui": dev_eui, **radio}))
        return out


NODE = Lora
