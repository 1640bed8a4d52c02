"""`kafka` sink against a second, real Kafka broker configured as a customer's (SASL_SSL, SCRAM and PLAIN users):
records land in the topic of their type keyed by asset, as JSON or as Avro in the Confluent wire format; a wrong
password is reported (DEGRADED), not fatal; a type with no topic is a dead letter."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streamforge.engine.records import telemetry
from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.engine.sdk import Message, PeerUnavailable
from streamforge.engine.serde import Decoder
from streamforge.engine.testing import NodeHarness
from streamforge.nodes.kafka import KafkaSink
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from tests.destinations import CUSTOMER_USERS, committed_records
from tests.peers import Pki

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def settings(secure: str, pki: Pki, **extra: Any) -> dict[str, Any]:
    return {"bootstrap": secure, "username": "gateway", "password": CUSTOMER_USERS["gateway"], "ca_file": str(pki.ca),
            "connection": {"timeout_s": 5, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}, **extra}  # fmt: skip


def readings(n: int) -> list[dict[str, Any]]:
    return [telemetry(f"pump_{i % 3}", "pressure", float(i), device_time=T0 + timedelta(seconds=i), gateway_time=T0)
            for i in range(n)]  # fmt: skip


async def clean(sink: NodeHarness[KafkaSink], records: list[dict[str, Any]]) -> list[Message]:
    """Records as the runtime delivers them from telemetry.clean."""
    return await sink.messages(records, topic="telemetry.clean", port="in")


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
async def test_json_over_sasl_ssl_to_the_topic_of_each_type_keyed_by_asset(
    customer: tuple[EmbeddedKafka, str, Pki], mechanism: str, unique: str
) -> None:
    kafka, secure, pki = customer
    topic = f"plant.{abs(hash(unique)) % 10**9}.telemetry"
    config = settings(secure, pki, sasl_mechanism=mechanism, topics={"telemetry": topic})
    async with NodeHarness(KafkaSink, config) as sink:
        assert await sink.write_messages(await clean(sink, readings(9))) == []
    got = await committed_records(kafka, topic, 9)
    assert [key.decode() for key, _ in got if key] and {k.decode() for k, _ in got} == {"pump_0", "pump_1", "pump_2"}
    values = sorted(json.loads(value)["value"] for _, value in got)
    assert values == [float(i) for i in range(9)]
    assert json.loads(got[0][1])["timestamps"]["gateway_time"] == T0.isoformat()


async def test_avro_in_the_confluent_wire_format_with_the_customers_registry(
    customer: tuple[EmbeddedKafka, str, Pki], registry_url: str, registry: CachedSchemaRegistry, unique: str
) -> None:
    kafka, secure, pki = customer
    topic = f"plant.{abs(hash(unique)) % 10**9}.avro"
    config = settings(secure, pki, format="avro", registry_url=registry_url, topics={"telemetry": topic})
    async with NodeHarness(KafkaSink, config) as sink:
        await sink.write_messages(await clean(sink, readings(4)))
    got = await committed_records(kafka, topic, 4)
    decoded = await Decoder(registry).decode_batch([value for _, value in got])
    assert sorted(record["value"] for _, record in decoded.ok) == [0.0, 1.0, 2.0, 3.0] and not decoded.errors


async def test_a_replay_after_a_crash_adds_nothing_the_committed_transaction_holds(
    customer: tuple[EmbeddedKafka, str, Pki], unique: str
) -> None:
    kafka, secure, pki = customer
    topic = f"plant.{abs(hash(unique)) % 10**9}.eos"
    async with NodeHarness(KafkaSink, settings(secure, pki, topics={"telemetry": topic}), unique) as sink:
        messages = await clean(sink, readings(12))
        await sink.write_messages(messages[:8], crash=True)  # sent and committed there; the local commit never came
        await sink.restart()  # a new worker: its producer fences the old one and reads the offsets back
        assert await sink.write_messages(messages) == []  # the replay, cut differently
    values = [json.loads(value)["value"] for _, value in await committed_records(kafka, topic, 12)]
    assert sorted(values) == [float(i) for i in range(12)]  # each once


async def test_a_wrong_password_is_reported_and_a_type_without_a_topic_is_a_dead_letter(
    customer: tuple[EmbeddedKafka, str, Pki], tmp_path: Path
) -> None:
    _kafka, secure, pki = customer
    with pytest.raises(PeerUnavailable):
        async with NodeHarness(KafkaSink, settings(secure, pki, password="not-it")):
            pass
    with pytest.raises(ValueError, match="needs username and password"):
        KafkaSink.Config.model_validate({"bootstrap": secure})
    async with NodeHarness(KafkaSink, settings(secure, pki, topics={"alarm": "plant.alarms"})) as sink:
        (letter,) = await sink.write_messages(await clean(sink, readings(1)))
    assert letter["reasons"][0]["code"] == "no_target_topic"
