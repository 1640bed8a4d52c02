"""The disk budget on a real small filesystem (a tmpfs this test mounts): a flow runs (Mosquitto -> mqtt -> validator
-> alarm_rule) on a broker whose log directory is on it; a ballast file fills it past each tier in turn. Each tier
acts in order; at 95 % the MQTT source stops taking readings and Mosquitto holds them; freed, everything drains.
Nothing is lost that was not evicted, the evictions are exactly the counted ones, alarms and dead letters are all
there, and the broker restarts cleanly and reads back every remaining record."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from aiokafka import TopicPartition
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streamforge.engine.compiler import compile_flow
from streamforge.engine.flow import validate_flow
from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.engine.serde import Decoder
from streamforge.engine.topics import TOPICS
from streamforge.runtime.gateway.gateway import Gateway
from streamforge.runtime.gateway.overflow import OverflowManager, OverflowSettings, Tier, watching_disk
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from streamforge.runtime.kafka.topics import ensure_topics
from tests.conftest import MqttBroker, in_process_gateway
from tests.eventually import eventually

DISK_MB = 160
T0 = datetime(2026, 5, 4, 6, 0, tzinfo=UTC)
SMALL_SEGMENTS = {  # so that retention and eviction free space within the test: they delete whole segments
    "log.segment.bytes": str(1024 * 1024),  # Kafka's smallest
    "log.retention.check.interval.ms": "1000",
    "log.segment.delete.delay.ms": "200",
}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_MB mounted for this test only."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if made.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (root needed, as in CI): {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_to(disk: Path, fraction: float) -> None:
    """Grow or shrink the ballast file so that the filesystem is `fraction` used."""
    ballast = disk / "ballast"
    usage = shutil.disk_usage(disk)
    size = ballast.stat().st_size if ballast.exists() else 0
    wanted = max(0, size + int(fraction * usage.total) - usage.used)
    with ballast.open("ab") as out:
        out.truncate(min(size, wanted))
        if wanted > size:
            out.write(b"\xa5" * (wanted - size))  # written, not sparse: tmpfs counts what is written
        out.flush()
        os.fsync(out.fileno())


async def offsets(bootstrap: KafkaAccess, topic: str) -> tuple[int, int]:
    """(records evicted from the start, records written) of a topic, summed over its partitions."""
    consumer = bootstrap.consumer()
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(12)]
        starts, ends = await consumer.beginning_offsets(partitions), await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return sum(starts.values()), sum(ends.values())


async def read_all(bootstrap: KafkaAccess, registry: CachedSchemaRegistry, topic: str) -> list[dict[str, Any]]:
    """Every record still in the topic, decoded."""
    consumer = bootstrap.consumer(topic, auto_offset_reset="earliest",
                                  enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    got: list[bytes] = []
    try:
        while batch := await consumer.getmany(timeout_ms=2000):
            got += [m.value for records in batch.values() for m in records]
    finally:
        await consumer.stop()
    decoded = await Decoder(registry).decode_batch(got)
    assert not decoded.errors
    return [record for _, record in decoded.ok]


async def topic_config(bootstrap: KafkaAccess, topic: str, name: str) -> str | None:
    admin = bootstrap.admin()
    await admin.start()
    try:
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        entries = {entry[0]: entry[1] for entry in response.resources[0][4]}
    finally:
        await admin.close()
    return entries.get(name)


@contextlib.asynccontextmanager
async def gateway_on(kafka: EmbeddedKafka, registry: CachedSchemaRegistry, registry_url: str,
                     state: Path) -> AsyncIterator[tuple[Gateway, OverflowManager]]:  # fmt: skip
    gateway = in_process_gateway(kafka, registry, registry_url, state)
    settings = OverflowSettings(interval_s=0.5)
    try:
        async with watching_disk(kafka.access, kafka.broker.log_dir, state, settings,
                                 gateway.metrics.registry, registry) as gateway.overflow:  # fmt: skip
            yield gateway, gateway.overflow
    finally:
        await gateway.stop()


def reading(seq: int) -> dict[str, Any]:
    """Levels 0..119: above 100 is out of range (DLQ), above 90 raises the alarm, back at or below 90 clears it."""
    return {"seq": seq, "level": float(seq % 120), "t": (T0 + timedelta(milliseconds=seq)).isoformat()}


async def test_each_tier_acts_in_order_and_nothing_is_lost_that_was_not_counted(
    small_disk: Path, mqtt_broker: MqttBroker, registry: CachedSchemaRegistry, registry_url: str, tmp_path: Path,
    unique: str,
) -> None:  # fmt: skip
    flow = "of" + str(abs(hash(unique)) % 10**9)
    subscription = {"topic": f"sf/{flow}/+/level", "points": [
        {"asset_id": "{2}", "parameter": "level", "value": "/level", "device_time": "/t"}]}  # fmt: skip
    document = {
        "id": flow,
        "nodes": [
            {"id": "mq", "type": "mqtt", "config": {"host": mqtt_broker.host, "port": mqtt_broker.port,
                                                    "client_id": f"{flow}-gw", "subscriptions": [subscription]}},
            {"id": "val", "type": "validator", "config": {"rules": [{"parameter": "level", "min": 0, "max": 100}]}},
            {"id": "hi", "type": "alarm_rule", "config": {"rule_id": "hi", "parameter": "level", "high": 90,
                                                          "severity": "CRITICAL"}},
        ],
        "edges": [{"from": "mq:out", "to": "val:in"}, {"from": "val:clean", "to": "hi:in"}],
    }  # fmt: skip
    published = 0

    async def publish(count: int) -> None:
        nonlocal published
        async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as client:
            for seq in range(published, published + count):
                await client.publish(f"sf/{flow}/tank_{seq % 4}/level", json.dumps(reading(seq)), qos=1)
        published += count

    async with EmbeddedKafka(small_disk / "kafka", broker_properties=SMALL_SEGMENTS) as kafka:
        bootstrap = kafka.access
        await ensure_topics(bootstrap)
        async with gateway_on(kafka, registry, registry_url, tmp_path / "state") as (gateway, manager):
            await gateway.deploy(compile_flow(validate_flow(document), gateway.node_types))
            await asyncio.sleep(2)  # the subscription is in place (QoS 1, not retained: earlier ones would be lost)
            await publish(6000)

            async def raw_holds(count: int) -> bool:
                return (await offsets(bootstrap, "telemetry.raw"))[1] >= count

            await eventually(lambda: raw_holds(6000), 60, 0.5, what="the first 6000 readings in telemetry.raw")
            seen: list[Tier] = []

            async def has_config(topic: str, name: str, value: str) -> bool:
                return await topic_config(bootstrap, topic, name) == value

            async def reaches(tier: Tier, fraction: float) -> None:
                fill_to(small_disk, fraction)
                await eventually(lambda: manager.tier >= tier, 30, 0.2, what=f"tier {tier.name} at {fraction:.0%}",
                                 state=manager.report)  # fmt: skip
                seen.append(manager.tier)

            await reaches(Tier.ALERT, 0.72)
            await eventually(lambda: has_config("telemetry.raw", "compression.type", "zstd"), 10, what="zstd")
            await reaches(Tier.DOWNSAMPLE, 0.82)
            await eventually(lambda: has_config("telemetry.raw", "retention.ms", "3600000"), 10, what="raw kept 1 h")
            assert await topic_config(bootstrap, "telemetry.1min", "retention.ms") == str(30 * 24 * 3_600_000)
            plan = await manager.dry_run()  # what each tier would do now, doing nothing
            assert [a["tier"] for a in plan["actions"]] == ["ALERT", "DOWNSAMPLE", "EVICT", "BLOCK"]
            evict = plan["actions"][2]
            assert evict["topic"] == "telemetry.raw" and evict["records"] > 0, plan
            assert (await offsets(bootstrap, "telemetry.raw"))[0] == 0  # a dry run evicts nothing
            await reaches(Tier.EVICT, 0.91)
            await eventually(lambda: manager.evicted.get("telemetry.raw", 0) > 0, 30, 0.2, what="raw evicted",
                             state=manager.report)  # fmt: skip
            health = gateway.health()
            assert health["status"] == "DEGRADED" and health["disk"]["tier"] in ("EVICT", "BLOCK")
            await reaches(Tier.BLOCK, 0.96)
            assert seen == [Tier.ALERT, Tier.DOWNSAMPLE, Tier.EVICT, Tier.BLOCK]

            def source_blocked() -> bool:
                status = next(n for n in gateway.node_health() if n["node"] == "mq")
                return status["status"] == "DEGRADED" and "producers blocked" in (status["last_error"] or "")

            await eventually(source_blocked, 15, 0.2, what="the mqtt source DEGRADED: producers blocked")
            before = (await offsets(bootstrap, "telemetry.raw"))[1]
            await publish(3000)  # taken by Mosquitto, not by the gateway
            await asyncio.sleep(3)
            assert (await offsets(bootstrap, "telemetry.raw"))[1] == before  # nothing taken while blocked
            assert kafka.health()["status"] == "HEALTHY"  # no ENOSPC

            fill_to(small_disk, 0.0)
            await eventually(lambda: manager.tier is Tier.NORMAL, 30, 0.2, what="back to NORMAL", state=manager.report)
            await eventually(lambda: raw_holds(9000), 60, 0.5, what="the 3000 held by Mosquitto drained into raw")
            await eventually(lambda: not source_blocked(), 10, what="the source RUNNING again")
            await asyncio.sleep(3)  # the validator and the alarm rule finish the backlog
            counted = dict(manager.evicted)
            assert set(counted) <= {"telemetry.raw", "telemetry.1s", "telemetry.clean"}  # never alarms or DLQ
        await check_everything(bootstrap, registry, flow, counted)
    async with EmbeddedKafka(small_disk / "kafka", broker_properties=SMALL_SEGMENTS) as restarted:  # clean restart
        await check_everything(restarted.access, registry, flow, counted)


async def check_everything(
    bootstrap: KafkaAccess, registry: CachedSchemaRegistry, flow: str, counted: dict[str, int]
) -> None:
    """Every reading is in raw or was evicted (and counted); clean likewise; every DLQ record and alarm is there."""
    total, bad = 9000, sum(1 for seq in range(9000) if seq % 120 > 100)
    for topic, expected in (("telemetry.raw", total), ("telemetry.clean", total - bad)):
        start, end = await offsets(bootstrap, topic)
        assert start == counted.get(topic, 0)  # what left the topic is exactly what was counted
        kept = {(r["asset_id"], r["timestamps"]["device_time"]) for r in await read_all(bootstrap, registry, topic)}
        assert end == expected and len(kept) == end - start  # each once; none lost but the counted
    letters = await read_all(bootstrap, registry, "dlq.telemetry")
    assert len(letters) == bad and all(r["reasons"][0]["code"] == "out_of_range" for r in letters)
    every_alarm = await read_all(bootstrap, registry, "alarms.clean")
    alarms = [r for r in every_alarm if r["rule_id"] == "hi"]
    assert {a["state"] for a in alarms} == {"ACTIVE", "RTN_UNACK"} and len(alarms) >= 2 * 4 * (total // 120 - 1)
    disk = [(a["state"], a["severity"]) for a in every_alarm if a["rule_id"] == "disk_budget"]
    assert disk == [("ACTIVE", "CRITICAL"), ("CLEARED", "CRITICAL")]  # the gateway's own alarm, raised and cleared
    assert {spec.name for spec in TOPICS} >= set(counted)


def test_a_budget_that_could_evict_alarms_or_misorders_its_tiers_is_refused() -> None:
    with pytest.raises(ValueError, match=r"alarms\.clean is CRITICAL: alarms and dead letters are never evicted"):
        OverflowSettings(evictable=["telemetry.raw", "alarms.clean"])
    with pytest.raises(ValueError, match="thresholds must rise"):
        OverflowSettings(evict_at=0.97)
    with pytest.raises(ValueError, match="not in the catalogue"):
        OverflowSettings(evictable=["telemetry.rwa"])
