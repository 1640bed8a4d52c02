"""`http` sink against a real local HTTP server that fails on purpose: batches, auth, gzip/NDJSON, a retried request
with the same idempotency key, 4xx refusals to the DLQ, and the whole path in a gateway (breaker, DLQ, no loss)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streamforge.engine.compiler import compile_flow
from streamforge.engine.flow import validate_flow
from streamforge.engine.records import telemetry
from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.engine.sdk import PeerUnavailable
from streamforge.engine.testing import NodeHarness
from streamforge.nodes.http import HttpSink
from streamforge.runtime.gateway.gateway import Gateway
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from tests.destinations import REFUSED_ASSET, Receiver
from tests.eventually import eventually
from tests.kafka_reading import read_from

T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)


def readings(n: int, asset: str = "pump_1") -> list[dict[str, Any]]:
    return [telemetry(asset, "pressure", float(i), device_time=T0 + timedelta(seconds=i), gateway_time=T0)
            for i in range(n)]  # fmt: skip


async def test_a_retried_batch_reuses_its_key_and_arrives_whole_with_auth_gzip_ndjson(
    receiver: tuple[Receiver, str],
) -> None:
    server, url = receiver
    config = {"url": url, "format": "ndjson", "gzip": True, "batch_records": 4, "bearer_token": "s3cret",
              "headers": {"X-Api-Key": "k-1"}}  # fmt: skip
    async with NodeHarness(HttpSink, config, "out") as sink:
        messages = await sink.messages(readings(10), port="in")
        server.failures = [503]
        with pytest.raises(PeerUnavailable, match=r"answered 503"):
            await sink.write_messages(messages)  # the runtime keeps the batch and retries it
        assert await sink.write_messages(messages) == []
    failed, *delivered = server.requests
    assert failed["status"] == 503 and [len(r["records"]) for r in delivered] == [4, 4, 2]
    assert delivered[0]["headers"]["idempotency-key"] == failed["headers"]["idempotency-key"]  # the same request
    assert len({r["headers"]["idempotency-key"] for r in delivered}) == 3
    assert all(r["headers"]["authorization"] == "Bearer s3cret" for r in server.requests)
    assert all(r["headers"]["x-api-key"] == "k-1" for r in server.requests)  # a secret header value, sent as is
    assert [r["value"] for r in server.accepted()] == [float(i) for i in range(10)]
    assert server.accepted()[0]["timestamps"]["device_time"] == T0.isoformat()


async def test_a_replay_after_a_crash_repeats_the_same_requests_even_cut_differently(
    receiver: tuple[Receiver, str],
) -> None:
    server, url = receiver
    async with NodeHarness(HttpSink, {"url": url, "batch_records": 4}, "out") as sink:
        messages = await sink.messages(readings(10), port="in")
        await sink.write_messages(messages[:6], crash=True)  # [0-3] and [4-5] were received; nothing committed
        await sink.restart()
        await sink.write_messages(messages[:5])  # the replay's first fetch ends inside the range [4-5]
        assert sink.node.retained() == {("in", 0): 4}  # its offsets are held until the rest arrives
        await sink.write_messages(messages[5:])
        assert sink.node.retained() == {}
    keys = [r["headers"]["idempotency-key"] for r in server.requests]
    assert [len(r["records"]) for r in server.requests] == [4, 2, 4, 2, 4]  # [0-3] [4-5] again, then [6-9]
    assert keys[:2] == keys[2:4]  # byte for byte the same requests, so the receiver keeps each once
    assert [r["value"] for r in server.accepted()] == [float(i) for i in range(10)]


async def test_a_refusal_becomes_dead_letters_with_the_response_and_the_rest_is_delivered(
    receiver: tuple[Receiver, str],
) -> None:
    server, url = receiver
    async with NodeHarness(HttpSink, {"url": url, "batch_records": 2, "username": "gw", "password": "pw"}) as sink:
        refused = await sink.write(readings(2) + readings(1, REFUSED_ASSET) + readings(1, "pump_2"), port="in")
    assert [letter["asset_id"] for letter in refused] == [REFUSED_ASSET, "pump_2"]  # the request they were in
    (why,) = refused[0]["reasons"]
    assert why["code"] == "http_400" and f"unknown asset {REFUSED_ASSET}" in why["message"]
    assert refused[0]["source_topic"] == "in" and refused[0]["source_offset"] == 2  # where to replay it from
    assert [r["asset_id"] for r in server.accepted()] == ["pump_1", "pump_1"]
    assert server.requests[0]["headers"]["authorization"].startswith("Basic ")


async def test_configurations_it_refuses(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="bearer_token or username/password"):
        HttpSink.Config.model_validate({"url": "https://x", "bearer_token": "t", "username": "u", "password": "p"})
    with pytest.raises(ValueError, match=r"ca_file .*absent\.pem"):
        async with NodeHarness(HttpSink, {"url": "https://x", "ca_file": str(tmp_path / "absent.pem")}):
            pass


async def test_in_a_gateway_outages_open_the_breaker_refusals_reach_the_dlq_and_nothing_is_lost(
    gateway: Gateway, kafka: EmbeddedKafka, registry: CachedSchemaRegistry, receiver: tuple[Receiver, str],
    unique: str,
) -> None:  # fmt: skip
    server, url = receiver
    server.failures = [503, 500, 503, 502]  # the first four requests fail: more than the breaker allows
    flow = "ht" + str(abs(hash(unique)) % 10**9)
    signals = [{"asset_id": "pump_1", "parameter": "pressure"}, {"asset_id": REFUSED_ASSET, "parameter": "pressure"}]
    document = {
        "id": flow,
        "nodes": [
            {"id": "sim", "type": "simulator", "config": {"signals": signals, "realtime": False, "limit": 30,
                                                         "batch_size": 10, "start_time": T0.isoformat()}},
            {"id": "out", "type": "http", "config": {"url": url, "batch_records": 1,  # a request per reading
                                                      "connection": {"reconnect_min_s": 0.05, "reconnect_max_s": 0.2},
                                                      "circuit": {"failures_to_open": 3, "open_s": 1}}},
        ],
        "edges": [{"from": "sim:out", "to": "out:in"}],
    }  # fmt: skip
    await gateway.deploy(compile_flow(validate_flow(document), gateway.node_types))

    def delivered() -> int:
        return sum(1 for r in server.accepted() if r["asset_id"] == "pump_1")

    await eventually(lambda: delivered() >= 30, 60, what="every pump_1 reading delivered", state=delivered)
    assert sorted(r["metadata"]["sim_seq"] for r in server.accepted()) == sorted(str(i) for i in range(30))
    letters = await read_from(kafka, registry, "dlq.telemetry", flow, "out", 30)
    assert {letter["reasons"][0]["code"] for letter in letters} == {"http_400"}
    assert {letter["asset_id"] for letter in letters} == {REFUSED_ASSET}
    assert len({letter["source_offset"] for letter in letters}) == 30  # every refused reading kept, none dropped
    assert all(letter["payload"][:1] == b"\x00" for letter in letters)  # the bytes Kafka had (Confluent framing)
    statuses = [r["status"] for r in server.requests]
    assert statuses[:4] == [503, 500, 503, 502] and 202 in statuses
