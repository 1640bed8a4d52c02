"""A peer that is down when its flow is deployed: the deploy succeeds, the node is DEGRADED with the reason, and it
recovers by itself once the peer comes up, for each kind of peer: a Modbus device, an MQTT broker, an OPC UA server
and PostgreSQL behind a link that is down."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiomqtt
import asyncpg

from streamforge.engine.compiler import compile_flow
from streamforge.engine.flow import validate_flow
from streamforge.engine.retry import CircuitState
from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.runtime.gateway.gateway import Gateway
from streamforge.runtime.kafka.broker import free_port
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from tests.devices import POINTS, running_plc, tcp_server
from tests.eventually import eventually
from tests.kafka_reading import tail
from tests.peers import start_mosquitto

FAST = {"timeout_s": 1, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}


def flow_id(unique: str) -> str:
    return "pd" + str(abs(hash(unique)) % 10**9)


def status_of(gateway: Gateway, flow: str, node: str) -> dict[str, Any]:
    return next(n for n in gateway.node_health() if n["flow"] == flow and n["node"] == node)


async def deploy_while_down(gateway: Gateway, document: dict[str, Any], node: str, says: str) -> None:
    """The deploy of `document` succeeds; `node` shows DEGRADED, and its reason contains `says`."""
    report = await gateway.deploy(compile_flow(validate_flow(document), gateway.node_types))
    assert node in report.started
    flow = document["id"]
    degraded = await eventually(
        lambda: (s := status_of(gateway, flow, node))["status"] == "DEGRADED" and says in (s["last_error"] or ""),
        30, what=f"{node} DEGRADED with {says!r}", state=lambda: status_of(gateway, flow, node),
    )  # fmt: skip
    assert degraded


async def recovered(gateway: Gateway, flow: str, node: str) -> None:
    await eventually(lambda: status_of(gateway, flow, node)["status"] == "RUNNING", 30, what=f"{node} RUNNING",
                     state=lambda: status_of(gateway, flow, node))  # fmt: skip


async def test_a_modbus_device_that_is_down(
    gateway: Gateway, kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str
) -> None:
    flow, port = flow_id(unique), free_port()
    config = {"host": "127.0.0.1", "port": port, "poll_interval_s": 0.1, "points": POINTS[:2], "connection": FAST}
    document = {"id": flow, "nodes": [{"id": "plc", "type": "modbus_tcp", "config": config}], "edges": []}
    async with tail(kafka, registry, ["telemetry.raw"], flow, "plc") as arrived:
        await deploy_while_down(gateway, document, "plc", f"cannot connect to 127.0.0.1:{port}")
        # While it is away every point is recorded BAD, with why: the gap is visible, not silent.
        await eventually(lambda: any(m.record["metadata"].get("error") == "connect_failed" for m in arrived), 30,
                         what="BAD readings while the device is down")  # fmt: skip
        assert {m.record["quality"] for m in arrived} == {"BAD"}
        async with tcp_server(port):
            await recovered(gateway, flow, "plc")
            await eventually(lambda: any(m.record["parameter"] == "temp" and m.record["value"] == 21.5
                                         and m.record["quality"] == "GOOD" for m in arrived), 30,
                             what="a GOOD reading once the device answers")  # fmt: skip


async def test_an_mqtt_broker_that_is_down(
    gateway: Gateway, kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str, tmp_path: Path
) -> None:
    flow, port = flow_id(unique), free_port()
    subscription = {"topic": f"sf/{flow}/+/data", "points": [{"asset_id": "{2}", "parameter": "level", "value": "/v"}]}
    config = {"host": "127.0.0.1", "port": port, "subscriptions": [subscription], "connection": FAST}
    document = {"id": flow, "nodes": [{"id": "mq", "type": "mqtt", "config": config}], "edges": []}
    await deploy_while_down(gateway, document, "mq", f"cannot reach MQTT broker 127.0.0.1:{port}")
    mosquitto = start_mosquitto(tmp_path, port)
    try:
        await recovered(gateway, flow, "mq")
        async with (
            tail(kafka, registry, ["telemetry.raw"], flow, "mq") as arrived,
            aiomqtt.Client("127.0.0.1", port) as publisher,
        ):

            async def landed() -> bool:  # published again until the subscription is there: QoS 1, no retain
                await publisher.publish(f"sf/{flow}/tank_1/data", json.dumps({"v": 4.5}), qos=1)
                await asyncio.sleep(0.2)
                return any(m.record["asset_id"] == "tank_1" and m.record["value"] == 4.5 for m in arrived)

            await eventually(landed, 30, 0.0, what="a reading published after the broker came up")
    finally:
        mosquitto.terminate()
        mosquitto.wait(10)


async def test_an_opcua_server_that_is_down(
    gateway: Gateway, kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str, tmp_path: Path
) -> None:
    flow, port = flow_id(unique), free_port()
    endpoint = f"opc.tcp://127.0.0.1:{port}/streamforge/"
    config = {"endpoint": endpoint, "security_mode": "None", "allow_insecure": True, "connection": FAST,
              "points": [{"asset_id": "line1", "parameter": "temp", "browse_path": "2:Line1/2:Temp"}]}  # fmt: skip
    document = {"id": flow, "nodes": [{"id": "ua", "type": "opcua", "config": config}], "edges": []}
    async with tail(kafka, registry, ["telemetry.raw"], flow, "ua") as arrived:
        await deploy_while_down(gateway, document, "ua", endpoint)
        async with running_plc(tmp_path, port):
            await recovered(gateway, flow, "ua")
            await eventually(lambda: any(m.record["value"] == 20.0 for m in arrived), 30, what="the PLC's temp")


@contextlib.asynccontextmanager
async def forwarding(listen_port: int, target_host: str, target_port: int) -> AsyncIterator[None]:
    """A TCP link to the database: while this runs, connections to `listen_port` reach it."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def connected(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(target_host, target_port)
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    server = await asyncio.start_server(connected, "127.0.0.1", listen_port)
    try:
        yield
    finally:
        server.close()


async def test_postgresql_that_cannot_be_reached(gateway: Gateway, postgres_dsn: str, unique: str) -> None:
    flow, link_port = flow_id(unique), free_port()
    real = urlsplit(postgres_dsn)
    assert real.hostname is not None and real.port is not None
    through_link = urlunsplit(real._replace(netloc=real.netloc.replace(f":{real.port}", f":{link_port}")))
    prefix = f"{flow}_"
    signals = [{"asset_id": "pump_1", "parameter": "pressure"}]
    document = {
        "id": flow,
        "nodes": [
            {"id": "sim", "type": "simulator", "config": {"signals": signals, "realtime": False, "limit": 50}},
            {"id": "db", "type": "postgres", "config": {"dsn": through_link, "table_prefix": prefix,
                                                          "connection": FAST,
                                                          "circuit": {"failures_to_open": 3, "open_s": 1}}},
        ],
        "edges": [{"from": "sim:out", "to": "db:telemetry"}],
    }  # fmt: skip
    await deploy_while_down(gateway, document, "db", "ConnectionRefusedError")
    # The destination keeps failing: the breaker opens and says so, in the status and in the metrics.
    opened = "circuit open after 3 consecutive failures"
    await eventually(lambda: opened in (status_of(gateway, flow, "db")["last_error"] or ""), 30, what=opened)
    # What the node's status line shows: the breaker and the backlog Kafka keeps for it.
    await eventually(lambda: status_of(gateway, flow, "db").get("circuit") in ("open", "half_open")
                     and status_of(gateway, flow, "db").get("lag", 0) > 0, 30, what="circuit and lag reported",
                     state=lambda: status_of(gateway, flow, "db"))  # fmt: skip
    circuit = f'streamforge_sink_circuit_state{{flow="{flow}",node="db"}}'
    exported = f"{circuit} {CircuitState.OPEN:.1f}", f"{circuit} {CircuitState.HALF_OPEN:.1f}"
    await eventually(lambda: any(state in gateway.exposition().decode() for state in exported), 30, 0.5,
                     what="the circuit's state exported")  # fmt: skip
    async with forwarding(link_port, real.hostname, real.port):
        await recovered(gateway, flow, "db")
        connection = await asyncpg.connect(postgres_dsn)
        try:

            async def all_rows() -> bool:
                exists = await connection.fetchval("SELECT to_regclass($1)", f"{prefix}telemetry")
                return bool(exists) and await connection.fetchval(f"SELECT count(*) FROM {prefix}telemetry") == 50

            await eventually(all_rows, 30, what="the 50 readings Kafka kept for the sink")
        finally:
            await connection.close()
        await eventually(lambda: f"{circuit} 0.0" in gateway.exposition().decode(), 30, 0.5, what="circuit closed")
        await eventually(lambda: status_of(gateway, flow, "db").get("lag") == 0, 30, what="the backlog written")
