"""`mqtt` source against a real Mosquitto: payload mapping, bad payloads to the DLQ, broker outages, and no loss
when the worker is SIGKILLed mid-stream or offered twice what it sustains (PUBACK only after Kafka acknowledged)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from streamforge.engine.compiler import compile_flow
from streamforge.engine.flow import validate_flow
from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.nodes.mqtt import PayloadPoint, TopicMapping, map_payload
from streamforge.nodes.protocols.mqtt import MappingError
from streamforge.runtime.gateway.gateway import DeployFailed, Gateway
from streamforge.runtime.kafka.broker import free_port
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from tests.conftest import MqttBroker
from tests.eventually import eventually
from tests.kafka_reading import read_from, tail
from tests.load import BulkPublisher, numbered, offer_overload, publish_all, publisher_client, watch_broker_queue
from tests.peers import make_pki, start_mosquitto


def test_payload_mapping_arrays_topic_levels_and_device_time() -> None:
    mapping = TopicMapping(
        topic="plant/+/points",
        array="/points",
        points=[
            PayloadPoint(asset_id="{1}", parameter="{0}_temp", value="/t", device_time="/ts", unit="degC", scale=0.1)
        ],
    )
    readings = map_payload(
        mapping,
        "plant/oven_3/points",
        {"points": [{"t": 215, "ts": 1769680800000}, {"t": 216, "ts": "2026-01-29T10:00:01Z"}]},
    )
    assert [(r["asset_id"], r["parameter"], r["value"], r["unit"], r["quality"]) for r in readings] == [
        ("oven_3", "plant_temp", 21.5, "degC", "GOOD"),
        ("oven_3", "plant_temp", 21.6, "degC", "GOOD"),
    ]
    assert readings[1]["timestamps"]["device_time"].isoformat() == "2026-01-29T10:00:01+00:00"
    no_time = map_payload(
        TopicMapping(topic="#", points=[PayloadPoint(asset_id="a", parameter="p")]), "x", {"value": 1}
    )
    assert no_time[0]["quality"] == "UNCERTAIN"  # no device time: gateway time, flagged


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        ({"points": [{"t": "hot"}]}, "wrong_type", "/points/0/t"),
        ({"points": [{"x": 1}]}, "missing_field", "/points/0/t"),
        ({"nope": []}, "missing_field", "/points"),
    ],
)
def test_payload_mapping_names_what_is_wrong(payload: Any, code: str, field: str) -> None:
    mapping = TopicMapping(topic="#", array="/points", points=[PayloadPoint(asset_id="a", parameter="p", value="/t")])
    with pytest.raises(MappingError) as refused:
        map_payload(mapping, "t", payload)
    assert (refused.value.code, refused.value.field) == (code, field)


def test_a_qos_2_subscription_is_refused_with_the_reason() -> None:
    with pytest.raises(ValidationError, match="hands a QoS 2 message over at PUBREC"):
        TopicMapping(topic="#", qos=2, points=[PayloadPoint(asset_id="a", parameter="p")])


def test_a_shared_subscription_without_a_filter_is_refused_and_one_with_matches_as_its_filter() -> None:
    point = PayloadPoint(asset_id="a", parameter="p")
    with pytest.raises(ValidationError, match=r"a shared subscription is \$share/<group>/<topic filter>"):
        TopicMapping(topic="$share/line", points=[point])
    assert TopicMapping(topic="$share/line/plant/+/data", points=[point]).topic_filter == "plant/+/data"


def mqtt_flow(flow_id: str, broker: MqttBroker, topic_root: str) -> dict[str, Any]:
    return {
        "id": flow_id,
        "nodes": [
            {
                "id": "mq",
                "type": "mqtt",
                "config": {
                    "host": broker.host,
                    "port": broker.port,
                    "client_id": f"{flow_id}-mq",
                    "tls": broker.tls_config(),
                    "max_payload_bytes": 512,
                    "subscriptions": [
                        {
                            "topic": f"{topic_root}/+/data",
                            "qos": 1,
                            "points": [{"asset_id": "{2}", "parameter": "seq", "value": "/seq", "device_time": "/ts"}],
                        }
                    ],
                },
            },
            {"id": "val", "type": "validator", "config": {}},
        ],
        "edges": [{"from": "mq:out", "to": "val:in"}],
    }


async def publish(broker: MqttBroker, messages: list[tuple[str, bytes]], qos: int = 1) -> None:
    async with publisher_client(broker.host, broker.port, broker.tls_context()) as client:
        await publish_all(client, messages, qos)


async def wait_subscribed(
    broker: MqttBroker,
    topic_root: str,
    kafka: EmbeddedKafka,
    registry: CachedSchemaRegistry,
    flow: str,
    probe: str = "probe",
) -> None:
    """The source subscribes asynchronously: publish probes (asset `probe`) until one makes it into Kafka."""
    async with tail(kafka, registry, ["telemetry.raw"], flow, "mq") as arrived:
        for attempt in range(100):
            message = json.dumps({"seq": -1, "ts": 1769680800000 + attempt}).encode()
            await publish(broker, [(f"{topic_root}/{probe}/data", message)])
            for _ in range(5):
                await asyncio.sleep(0.2)
                if any(m.record["asset_id"] == probe for m in arrived):
                    return
    raise AssertionError("the mqtt source never received a probe")


async def deploy_subscribed(
    gateway: Gateway, kafka: EmbeddedKafka, registry: CachedSchemaRegistry, broker: MqttBroker, flow: str,
    **source_config: Any,
) -> tuple[str, str]:  # fmt: skip
    """Deploy `mqtt_flow` as `flow` (its source's config updated by `source_config`); returns (flow, topic root)
    once its source is subscribed."""
    root = f"sf/{flow}"
    document = mqtt_flow(flow, broker, root)
    document["nodes"][0]["config"].update(source_config)
    await gateway.deploy(compile_flow(validate_flow(document), gateway.node_types))
    await wait_subscribed(broker, root, kafka, registry, flow)
    return flow, root


async def test_every_acknowledged_message_lands_despite_a_sigkill_and_bad_payloads_go_to_the_dlq(
    gateway: Gateway, kafka: EmbeddedKafka, registry: CachedSchemaRegistry, mqtt_broker: MqttBroker, unique: str
) -> None:
    flow, root = await deploy_subscribed(gateway, kafka, registry, mqtt_broker, f"mq{abs(hash(unique)) % 10**8}")

    total = 4000
    good = [numbered(root, i) for i in range(total)]
    bad = [
        (f"{root}/line_0/data", b"{not json"),
        (f"{root}/line_0/data", b'{"seq": "x", "ts": 1}'),
        (f"{root}/line_0/data", json.dumps({"seq": 1, "ts": 1, "pad": "x" * 600}).encode()),
    ]
    await publish(mqtt_broker, good[: total // 2] + bad, qos=2)  # delivered at the subscription's QoS 1
    worker = next(n for n in gateway.node_health() if n["flow"] == flow and n["node"] == "mq")
    os.kill(worker["pid"], signal.SIGKILL)  # mid-stream: some messages delivered to it, not yet acknowledged
    await publish(mqtt_broker, good[total // 2 :])

    clean = await read_from(kafka, registry, "telemetry.clean", flow, "val", total, timeout_s=120)
    arrived = {int(r["value"]) for r in clean if r["value"] is not None and r["value"] >= 0}
    assert arrived == set(range(total)), f"missing: {sorted(set(range(total)) - arrived)[:20]}"
    letters = await read_from(kafka, registry, "dlq.telemetry", flow, "mq", 3, timeout_s=30)
    codes = sorted(letter["reasons"][0]["code"] for letter in letters)
    assert set(codes) == {"invalid_json", "too_large", "wrong_type"}  # redelivery may repeat one
    counter = f'streamforge_source_readings_total{{flow="{flow}",node="mq",quality="GOOD"}}'

    # The worker publishes its metrics every 2 s.
    def counted() -> str | None:
        text = gateway.exposition().decode()
        return text if counter in text else None

    exposition = await eventually(counted, 10, 0.2, what="the source's readings in /metrics")
    assert f'streamforge_source_last_reading_timestamp_seconds{{flow="{flow}",node="mq"}}' in exposition
    restarted = next(n for n in gateway.node_health() if n["flow"] == flow and n["node"] == "mq")
    assert restarted["restarts"] >= 1 and restarted["status"] == "RUNNING"


async def test_a_shared_subscription_splits_the_messages_between_two_sources_and_loses_none(
    gateway: Gateway, kafka: EmbeddedKafka, registry: CachedSchemaRegistry, mqtt_broker: MqttBroker, unique: str
) -> None:
    flow = f"ms{abs(hash(unique)) % 10**8}"
    root = f"sf/{flow}"
    document = mqtt_flow(flow, mqtt_broker, root)
    source = document["nodes"][0]
    source["config"]["subscriptions"][0]["topic"] = f"$share/{flow}/{root}/+/data"
    twin = {**source, "id": "mq2", "config": {**source["config"], "client_id": f"{flow}-mq2"}}
    document["nodes"].append(twin)
    document["edges"].append({"from": "mq2:out", "to": "val:in"})
    async with (
        tail(kafka, registry, ["telemetry.raw"], flow, "mq") as first,
        tail(kafka, registry, ["telemetry.raw"], flow, "mq2") as second,
    ):
        await gateway.deploy(compile_flow(validate_flow(document), gateway.node_types))
        for attempt in range(200):  # until both members of the group are subscribed and each was handed a probe
            await publish(mqtt_broker, [(f"{root}/probe/data", json.dumps({"seq": -1, "ts": attempt}).encode())])
            await asyncio.sleep(0.1)
            if first and second:
                break
        assert first and second, "the two sources never both received a probe"
        total = 3000
        await publish(mqtt_broker, [numbered(root, i) for i in range(total)])
        clean = await read_from(kafka, registry, "telemetry.clean", flow, "val", total, timeout_s=120)
    arrived = {int(r["value"]) for r in clean if r["value"] is not None and r["value"] >= 0}
    assert arrived == set(range(total)), f"missing: {sorted(set(range(total)) - arrived)[:20]}"
    shares = [sum(1 for m in side if m.record["value"] >= 0) for side in (first, second)]
    assert min(shares) > 0 and sum(shares) >= total, f"the group's shares: {shares}"  # each source took a part


async def test_an_offer_at_twice_the_sustained_rate_waits_in_the_broker_and_nothing_is_lost(
    gateway: Gateway, kafka: EmbeddedKafka, registry: CachedSchemaRegistry, mqtt_broker: MqttBroker, unique: str
) -> None:
    # A window of 10 messages per round trip to Kafka: a pipeline this test's own publisher can outpace. With
    # the default (10,000) it drains about as fast as one Python publisher offers on 2 cores, and no offer is an
    # overload. What is tested is what happens to the excess, whatever the drain rate.
    flow, root = await deploy_subscribed(gateway, kafka, registry, mqtt_broker, f"mx{abs(hash(unique)) % 10**8}",
                                         receive_maximum=10)  # fmt: skip
    landed: set[int] = set()
    async with (
        tail(kafka, registry, ["telemetry.clean"], flow, "val") as arrived,
        BulkPublisher(mqtt_broker.host, mqtt_broker.port) as publisher,
        watch_broker_queue(mqtt_broker.host, mqtt_broker.port) as queue,
    ):

        async def drained() -> int:
            taken, arrived[:] = arrived[:], []  # counted once each: the offer asks every second
            landed.update(int(m.record["value"]) for m in taken if m.record["value"] >= 0)  # probes are -1
            return len(landed)

        await asyncio.sleep(0.2)  # $SYS values are retained: the first sample is the queue before the offer
        before = queue.samples[0] if queue.samples else 0
        offer = await offer_overload(publisher, root, drained, rounds=8, start=2000)

        async def all_drained() -> bool:
            return await drained() >= offer.published

        await eventually(all_drained, 120, what="the overload drained", state=lambda: offer)
    print(
        f"offered {offer.rate('offered'):,.0f}/s against {offer.rate('drained'):,.0f}/s drained "
        f"(x{offer.ratio:.2f}); Mosquitto held up to {queue.peak - before:,}; {offer.published:,} published"
    )
    missing = set(range(offer.published)) - landed
    assert not missing, f"{len(missing)} published messages never reached telemetry.clean: {sorted(missing)[:20]}"
    assert offer.ratio >= 1.5, f"the offer was not an overload: {offer}"
    # More than the 10 in flight to the source: the excess waited in the broker, it was not dropped.
    assert queue.peak - before > 1000, f"Mosquitto never held a backlog: {queue.samples}"


async def test_a_broker_outage_is_degraded_then_recovers(
    gateway: Gateway, kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str, tmp_path: Path
) -> None:
    port = free_port()
    broker = MqttBroker("127.0.0.1", port)
    mosquitto = start_mosquitto(tmp_path, port)
    try:
        flow, root = await deploy_subscribed(gateway, kafka, registry, broker, f"mo{abs(hash(unique)) % 10**8}")
        mosquitto.terminate()
        mosquitto.wait(10)
        status = await wait_status(gateway, flow, "DEGRADED")
        assert f"MQTT broker 127.0.0.1:{port}" in (status["last_error"] or "")  # names the broker it lost
        errors = f'streamforge_node_errors_total{{flow="{flow}",kind="connection",node="mq"}}'
        await eventually(lambda: errors in gateway.exposition().decode(), 10, 0.2, what="connection errors counted")
        mosquitto = start_mosquitto(tmp_path, port)
        await wait_status(gateway, flow, "RUNNING")
        await wait_subscribed(broker, root, kafka, registry, flow, probe="after")  # resubscribed on the new broker
    finally:
        mosquitto.terminate()


async def test_tls_with_a_client_certificate_and_an_untrusted_broker_refused(
    gateway: Gateway, kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str, tmp_path: Path
) -> None:
    pki, stranger = make_pki(tmp_path / "pki"), make_pki(tmp_path / "other", "other")
    broker = MqttBroker("127.0.0.1", free_port(), tls=pki)
    mosquitto = start_mosquitto(tmp_path, broker.port, tls=pki)
    flow = f"mt{abs(hash(unique)) % 10**8}"
    try:
        await deploy_subscribed(gateway, kafka, registry, broker, flow)  # probes travel over TLS both ways
        # A broker whose certificate does not chain to the configured CA is refused, and says why.
        distrusted = mqtt_flow(f"{flow}u", broker, f"sf/{flow}u")
        distrusted["nodes"][0]["config"]["tls"]["ca_file"] = str(stranger.ca)
        await gateway.deploy(compile_flow(validate_flow(distrusted), gateway.node_types))
        status = await wait_status(gateway, f"{flow}u", "DEGRADED")
        assert "certificate verify failed" in (status["last_error"] or "")
        # A certificate file that is not there is a configuration error: the deploy is refused, naming it.
        missing = mqtt_flow(f"{flow}m", broker, f"sf/{flow}m")
        missing["nodes"][0]["config"]["tls"]["ca_file"] = str(tmp_path / "absent.pem")
        with pytest.raises(DeployFailed, match=r"absent\.pem: No such file"):
            await gateway.deploy(compile_flow(validate_flow(missing), gateway.node_types))
    finally:
        mosquitto.terminate()


async def wait_status(gateway: Gateway, flow: str, wanted: str, timeout_s: float = 60) -> dict[str, Any]:
    def node() -> dict[str, Any]:
        return next(n for n in gateway.node_health() if n["flow"] == flow and n["node"] == "mq")

    await eventually(lambda: node()["status"] == wanted, timeout_s, what=f"mq {wanted}", state=node)
    return node()
