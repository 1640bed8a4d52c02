"""`lora` source: ChirpStack and The Things Stack uplink JSON published to a real Mosquitto, decoded per device
profile (network-server object or raw bytes); unknown devices and short frames go to the DLQ."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import aiomqtt

from streamforge.engine.testing import NodeHarness
from streamforge.nodes.lora import Lora
from tests.conftest import MqttBroker

SOIL = "70b3d57ed0041234"
FRAME = struct.pack(">hB", 2315, 87)  # 23.15 degC, 87 % humidity


def chirpstack_uplink(dev_eui: str, data: bytes, decoded: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "deviceInfo": {"devEui": dev_eui, "deviceName": "soil-1"},
        "time": "2026-01-29T10:00:00Z",
        "fCnt": 42,
        "fPort": 1,
        "data": base64.b64encode(data).decode(),
        "object": decoded or {},
        "rxInfo": [{"rssi": -97, "snr": 7.5}],
    }


def tts_uplink(dev_eui: str, decoded: dict[str, Any]) -> dict[str, Any]:
    return {
        "end_device_ids": {"dev_eui": dev_eui.upper(), "device_id": "soil-1"},
        "uplink_message": {
            "f_cnt": 9,
            "frm_payload": base64.b64encode(b"\x01").decode(),
            "decoded_payload": decoded,
            "rx_metadata": [{"rssi": -80, "snr": 9, "time": "2026-01-29T10:05:00Z"}],
        },
    }


def lora(broker: MqttBroker, unique: str, server: str, fields: list[dict[str, Any]]) -> NodeHarness[Lora]:
    config = {
        "host": broker.host,
        "port": broker.port,
        "client_id": f"{unique}-{server}",
        "network_server": server,
        "topic": f"{unique}/{server}/#",
        "devices": [{"dev_eui": SOIL, "asset_id": "field_7", "fields": fields}],
    }
    return NodeHarness(Lora, config, f"lora-{server}")


async def collect(
    node: NodeHarness[Lora], messages: list[tuple[str, dict[str, Any] | bytes]], broker: MqttBroker, wanted: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    await node.poll()  # connects and subscribes
    async with aiomqtt.Client(broker.host, broker.port) as publisher:
        for topic, body in messages:
            await publisher.publish(topic, body if isinstance(body, bytes) else json.dumps(body), qos=1)
    readings: list[dict[str, Any]] = []
    letters: list[dict[str, Any]] = []
    for _ in range(50):
        emitted = await node.poll()
        readings += emitted.get("out", [])
        letters += emitted.get("dlq", [])
        if len(readings) + len(letters) >= wanted:
            break
    return readings, letters


async def test_chirpstack_uplinks_decoded_from_bytes_with_radio_metadata(mqtt_broker: MqttBroker, unique: str) -> None:
    fields = [
        {"parameter": "soil_temp", "unit": "degC", "byte_offset": 0, "byte_type": "int16", "scale": 0.01},
        {"parameter": "soil_moisture", "unit": "%", "byte_offset": 2, "byte_type": "uint8"},
    ]
    topic = f"{unique}/chirpstack/application/1/device/{SOIL}/event/up"
    async with lora(mqtt_broker, unique, "chirpstack", fields) as node:
        readings, letters = await collect(
            node,
            [
                (topic, chirpstack_uplink(SOIL, FRAME)),
                (topic, chirpstack_uplink("0000000000000001", FRAME)),  # no profile
                (topic, chirpstack_uplink(SOIL, b"\x09")),  # one byte short of a temperature
                (topic, b"not json"),
            ],
            mqtt_broker,
            wanted=5,
        )
    assert [(r["asset_id"], r["parameter"], round(r["value"], 6), r["unit"]) for r in readings] == [
        ("field_7", "soil_temp", 23.15, "degC"),
        ("field_7", "soil_moisture", 87.0, "%"),
    ]
    assert readings[0]["timestamps"]["device_time"].isoformat() == "2026-01-29T10:00:00+00:00"
    assert readings[0]["metadata"] == {"dev_eui": SOIL, "f_cnt": "42", "rssi": "-97", "snr": "7.5"}
    assert sorted(letter["reasons"][0]["code"] for letter in letters) == [
        "invalid_json",
        "short_payload",
        "unknown_device",
    ]


async def test_the_things_stack_decoded_payload(mqtt_broker: MqttBroker, unique: str) -> None:
    fields = [{"parameter": "soil_temp", "unit": "degC", "path": "/temperature"}]
    topic = f"{unique}/tts/v3/app@ttn/devices/soil-1/up"
    async with lora(mqtt_broker, unique, "tts", fields) as node:
        readings, letters = await collect(
            node,
            [(topic, tts_uplink(SOIL, {"temperature": 19.5})), (topic, tts_uplink(SOIL, {"humidity": 3}))],
            mqtt_broker,
            wanted=2,
        )
    assert [(r["value"], r["metadata"]["f_cnt"]) for r in readings] == [(19.5, "9")]
    assert readings[0]["timestamps"]["device_time"].isoformat() == "2026-01-29T10:05:00+00:00"
    assert [(letter["reasons"][0]["code"], letter["reasons"][0]["field"]) for letter in letters] == [
        ("missing_field", "/temperature")
    ]
