"""`sparkplug_b` source: the payload schema against bytes written by hand from the protobuf wire rules, and a host
session against a real Mosquitto with the test as the edge node (rebirth on unknown state, births and aliases,
signed and null values, births kept over a SIGKILL, sequence gaps, deaths of the current and of an older
session, bad payloads), and the primary host's STATE."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import time
from typing import Any

import aiomqtt

from streamforge.engine.compiler import compile_flow
from streamforge.engine.flow import validate_flow
from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.engine.sdk import Message
from streamforge.nodes.sparkplug_b import Payload, metric_value
from streamforge.runtime.gateway.gateway import Gateway
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from tests.conftest import MqttBroker
from tests.eventually import eventually
from tests.kafka_reading import tail
from tests.load import varint

T0_MS = 1769680800000
INT8, INT16, INT32, UINT32, UINT64, FLOAT, BOOLEAN, STRING = 1, 2, 3, 7, 8, 9, 11, 12


def test_payload_schema_reads_the_wire_format_and_signed_values() -> None:
    # Payload{timestamp=T0 (1), metrics (2)=[{alias=5 (2), int_value=-5 as uint32 (10)}, {name="p", double 21.5 (13)}],
    # seq=2 (3)}: tags are field << 3 | wire type (0 varint, 1 64-bit, 2 length-delimited).
    first = varint(2 << 3) + varint(5) + varint(10 << 3) + varint(0xFFFFFFFB)
    second = varint(1 << 3 | 2) + varint(1) + b"p" + varint(13 << 3 | 1) + struct.pack("<d", 21.5)
    wire = (varint(1 << 3) + varint(T0_MS) + varint(2 << 3 | 2) + varint(len(first)) + first
            + varint(2 << 3 | 2) + varint(len(second)) + second + varint(3 << 3) + varint(2))  # fmt: skip
    payload = Payload.FromString(wire)
    assert (payload.timestamp, payload.seq, len(payload.metrics)) == (T0_MS, 2, 2)
    assert payload.metrics[0].alias == 5 and not payload.metrics[0].name
    assert [metric_value(payload.metrics[0], kind) for kind in (INT8, INT16, INT32)] == [-5.0, -5.0, -5.0]
    assert metric_value(payload.metrics[0], UINT32) == 4294967291.0
    assert payload.metrics[1].name == "p" and metric_value(payload.metrics[1], 10) == 21.5


def spb(seq: int | None, *metrics: dict[str, Any], at: int = T0_MS) -> bytes:
    payload = Payload(timestamp=at)
    if seq is not None:
        payload.seq = seq
    for metric in metrics:
        payload.metrics.add(**metric)
    data: bytes = payload.SerializeToString()
    return data


async def next_rebirth(commands: aiomqtt.Client, since_ms: int) -> None:
    """A rebirth request the source sent at `since_ms` or later, checked as an edge node would read it."""
    async with asyncio.timeout(30):
        async for message in commands.messages:
            assert isinstance(message.payload, bytes)
            request = Payload.FromString(message.payload)
            wanted = [("Node Control/Rebirth", BOOLEAN, True)]
            assert [(m.name, m.datatype, m.boolean_value) for m in request.metrics] == wanted
            if request.timestamp >= since_ms:
                return


def readings(arrived: list[Message]) -> list[tuple[str, str, float | None, str]]:
    out = []
    for m in arrived:
        if m.topic == "telemetry.raw":
            value = (
                None if m.record["value"] is None else round(m.record["value"], 9)
            )  # -12 * 0.1 is -1.2000000000000002
            out.append((m.record["asset_id"], m.record["parameter"], value, m.record["quality"]))
    return out


async def test_a_host_session_with_births_aliases_gaps_and_deaths(
    gateway: Gateway, kafka: EmbeddedKafka, registry: CachedSchemaRegistry, mqtt_broker: MqttBroker, unique: str
) -> None:
    flow = f"sp{abs(hash(unique)) % 10**8}"
    group, edge, device = f"G{flow}", "press_7", "line_1"
    base = f"spBv1.0/{group}"
    plan = {"id": flow, "nodes": [{"id": "sp", "type": "sparkplug_b", "config": {
        "host": mqtt_broker.host, "port": mqtt_broker.port, "group_id": group, "rebirth_interval_s": 0.2,
        "points": [{"metric": "Inputs/Temperature", "parameter": "temperature", "unit": "degC", "scale": 0.1}]}}],
        "edges": []}  # fmt: skip
    node_birth = spb(0, {"name": "bdSeq", "datatype": UINT64, "long_value": 3},
                     {"name": "Uptime", "alias": 1, "datatype": UINT32, "int_value": 100},
                     {"name": "Properties/Version", "alias": 2, "datatype": STRING, "string_value": "4.2"})  # fmt: skip
    device_birth = spb(1, {"name": "Inputs/Temperature", "alias": 10, "datatype": INT16, "int_value": 215},
                       {"name": "Inputs/Running", "alias": 11, "datatype": BOOLEAN, "boolean_value": True},
                       {"name": "Inputs/Pressure", "alias": 12, "datatype": FLOAT, "float_value": 3.5},
                       {"name": "Inputs/Offset", "alias": 13, "datatype": INT32, "int_value": 7})  # fmt: skip
    device_data = spb(2, {"alias": 10, "int_value": 0xFFFFFFF4, "timestamp": T0_MS + 500},
                      {"alias": 12, "is_null": True}, {"alias": 13, "int_value": 0xFFFFFFFB})  # fmt: skip

    async with (
        aiomqtt.Client(mqtt_broker.host, mqtt_broker.port, identifier=f"{flow}-edge") as edge_node,
        tail(kafka, registry, ["telemetry.raw", "dlq.telemetry"], flow, "sp") as arrived,
    ):
        await edge_node.subscribe(f"{base}/NCMD/{edge}", qos=1)
        await gateway.deploy(compile_flow(validate_flow(plan), gateway.node_types))
        started_ms = int(time.time() * 1000)

        # Data from a node whose birth the host never saw: kept in the DLQ, and a rebirth is requested.
        async def kept() -> bool:  # the source subscribes asynchronously: repeat until it answers
            await edge_node.publish(f"{base}/DDATA/{edge}/{device}", device_data, qos=1)
            await asyncio.sleep(0.3)
            return any(m.topic == "dlq.telemetry" for m in arrived)

        await eventually(kept, 30, 0, what="data before its birth in the DLQ")
        await next_rebirth(edge_node, started_ms)
        letter = next(m.record for m in arrived if m.topic == "dlq.telemetry")
        assert letter["reasons"][0]["code"] == "unknown_edge_node"

        for topic, payload in [(f"{base}/NBIRTH/{edge}", node_birth), (f"{base}/DBIRTH/{edge}/{device}", device_birth),
                               (f"{base}/DDATA/{edge}/{device}", device_data)]:  # fmt: skip
            await edge_node.publish(topic, payload, qos=1)
        await eventually(lambda: len(readings(arrived)) >= 8, what="readings", state=lambda: readings(arrived))
        assert readings(arrived) == [
            (edge, "Uptime", 100.0, "GOOD"),  # the string metric is not a reading
            (device, "temperature", 21.5, "GOOD"),
            (device, "Inputs/Running", 1.0, "GOOD"),
            (device, "Inputs/Pressure", 3.5, "GOOD"),
            (device, "Inputs/Offset", 7.0, "GOOD"),
            (device, "temperature", -1.2, "GOOD"),  # aliases only; Int16 in two's complement, scaled
            (device, "Inputs/Pressure", None, "BAD"),  # is_null
            (device, "Inputs/Offset", -5.0, "GOOD"),
        ]
        temperatures = [m.record for m in arrived if m.record.get("parameter") == "temperature"]
        assert temperatures[0]["unit"] == "degC"
        assert temperatures[1]["timestamps"]["device_time"].timestamp() * 1000 == T0_MS + 500  # the metric's own

        # A crash: the births come back from the changelog, so data by alias is still understood.
        worker = next(n for n in gateway.node_health() if n["flow"] == flow and n["node"] == "sp")
        os.kill(worker["pid"], signal.SIGKILL)
        await edge_node.publish(f"{base}/DDATA/{edge}/{device}", spb(3, {"alias": 13, "int_value": 9}), qos=1)
        await eventually(lambda: len(readings(arrived)) >= 9, what="readings", state=lambda: readings(arrived))
        assert readings(arrived)[8] == (device, "Inputs/Offset", 9.0, "GOOD")

        # seq 9 after 3: a message was lost on the way; the data is still taken, and births are asked for again.
        gap_ms = int(time.time() * 1000)
        await edge_node.publish(f"{base}/DDATA/{edge}/{device}", spb(9, {"alias": 13, "int_value": 8}), qos=1)
        await next_rebirth(edge_node, gap_ms)
        await eventually(lambda: len(readings(arrived)) >= 10, what="readings", state=lambda: readings(arrived))
        # An older session's will (bdSeq 2) is ignored; the current one's death makes every metric BAD.
        await edge_node.publish(f"{base}/NDEATH/{edge}", spb(None, {"name": "bdSeq", "datatype": UINT64,
                                                                    "long_value": 2}), qos=1)  # fmt: skip
        await edge_node.publish(f"{base}/NDEATH/{edge}", spb(None, {"name": "bdSeq", "datatype": UINT64,
                                                                    "long_value": 3}), qos=1)  # fmt: skip
        await edge_node.publish(f"{base}/NDATA/{edge}", b"\x0a\xff not protobuf", qos=1)
        await eventually(lambda: len(readings(arrived)) >= 15 and sum(m.topic == "dlq.telemetry" for m in arrived) >= 2,
                         what="readings and dead letters", state=lambda: [m.record for m in arrived][-10:])  # fmt: skip
        assert sorted(readings(arrived)[10:]) == sorted([
            (edge, "Uptime", None, "BAD"),
            (device, "temperature", None, "BAD"),
            (device, "Inputs/Running", None, "BAD"),
            (device, "Inputs/Pressure", None, "BAD"),
            (device, "Inputs/Offset", None, "BAD"),
        ])  # fmt: skip
        codes = [m.record["reasons"][0]["code"] for m in arrived if m.topic == "dlq.telemetry"]
        assert codes[-1] == "invalid_payload"


async def test_as_primary_host_it_publishes_state_and_its_will_reports_it_offline(
    gateway: Gateway, mqtt_broker: MqttBroker, unique: str
) -> None:
    flow = f"sh{abs(hash(unique)) % 10**8}"
    host = f"scada_{flow}"
    config = {"host": mqtt_broker.host, "port": mqtt_broker.port, "group_id": f"G{flow}", "host_id": host}
    plan = {"id": flow, "nodes": [{"id": "sp", "type": "sparkplug_b", "config": config}], "edges": []}
    async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port, identifier=f"{flow}-watch") as watcher:
        await watcher.subscribe(f"spBv1.0/STATE/{host}", qos=1)
        states = aiter(watcher.messages)

        async def next_state() -> Any:
            async with asyncio.timeout(30):
                message = await anext(states)
            assert isinstance(message.payload, bytes) and message.topic.value == f"spBv1.0/STATE/{host}"
            return json.loads(message.payload)

        await gateway.deploy(compile_flow(validate_flow(plan), gateway.node_types))
        online = await next_state()
        assert online["online"] is True
        worker = next(n for n in gateway.node_health() if n["flow"] == flow and n["node"] == "sp")
        os.kill(worker["pid"], signal.SIGKILL)  # no DISCONNECT: the broker publishes the will
        assert await next_state() == {"online": False, "timestamp": online["timestamp"]}
        restarted = await next_state()  # the supervisor restarts the worker, which is online again
        assert restarted["online"] is True and restarted["timestamp"] > online["timestamp"]
