"""The overflow manager: watches the filesystem of Kafka's log directory and acts in the spec's tiers (alert and
zstd, shorter raw retention, eviction of low-priority history, blocked producers); alarms and dead letters are never
evicted, and every record that leaves a topic before its time is counted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamforge.engine.schema_registry import SchemaRegistry
from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.sdk import Record
from streamforge.engine.serde import encoder_for
from streamforge.engine.topics import TOPICS, Priority, TopicSpec, topic_spec
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.kafka.clients import BatchProducer, node_headers
from streamforge.runtime.kafka.groups import committed_offsets

log = logging.getLogger("streamforge.overflow")
BLOCK_FILE = "overflow-blocked.json"  # in the gateway's state dir: workers' sources read it before each poll
SETTINGS_FILE = "overflow.json"  # in the gateway's data dir: its disk budget


class Tier(IntEnum):
    NORMAL = 0
    ALERT = 1  # alert; new batches compressed with zstd
    DOWNSAMPLE = 2  # raw telemetry kept only down to its floor; the aggregates stay
    EVICT = 3  # the oldest low-priority history deleted, below what every consumer committed
    BLOCK = 4  # sources stop taking (and acknowledging) readings: the backlog waits at the device or broker


class OverflowSettings(BaseModel):
    """The disk budget of one gateway (its config's `overflow`)."""

    model_config = ConfigDict(extra="forbid")

    alert_at: float = Field(0.70, gt=0, lt=1, description="Used fraction that raises the alert and turns on zstd")
    downsample_at: float = Field(0.80, gt=0, lt=1, description="…that shortens raw telemetry to its floor")
    evict_at: float = Field(0.90, gt=0, lt=1, description="…that evicts the oldest low-priority history")
    block_at: float = Field(0.95, gt=0, lt=1, description="…that blocks producers (sources stop acknowledging)")
    hysteresis: float = Field(0.02, ge=0, lt=0.2, description="A tier is left only this far below its threshold")
    budget_bytes: int | None = Field(None, gt=0, description="Kafka may use at most this much of its disk")
    raw_retention_floor_s: float = Field(3600, gt=0, description="Raw telemetry kept at least this long (tier 2)")
    evictable: list[str] = Field(
        default_factory=lambda: ["telemetry.raw", "telemetry.1s", "telemetry.clean"],
        description="Topics tier 3 may evict, in the order it does (alarms.* and dlq.* never)",
    )
    evict_unconsumed: bool = Field(False, description="Also evict records some consumer has not committed past")
    interval_s: float = Field(5.0, gt=0, description="How often the disk is measured")

    @model_validator(mode="after")
    def _consistent(self) -> OverflowSettings:
        thresholds = [self.alert_at, self.downsample_at, self.evict_at, self.block_at]
        if thresholds != sorted(thresholds) or len(set(thresholds)) < 4:
            raise ValueError(f"thresholds must rise: alert_at < downsample_at < evict_at < block_at, got {thresholds}")
        catalogue = {spec.name: spec for spec in TOPICS}
        for name in self.evictable:
            spec = catalogue.get(name)
            if spec is None:
                raise ValueError(f"evictable topic {name!r} is not in the catalogue: {', '.join(catalogue)}")
            if spec.priority is Priority.CRITICAL:
                raise ValueError(f"{name} is {spec.priority.name}: alarms and dead letters are never evicted")
        return self


@dataclass(frozen=True)
class DiskUse:
    """The log directory's filesystem and what Kafka holds on it; `fraction` is what the tiers compare."""

    used_bytes: int
    total_bytes: int
    kafka_bytes: int
    budget_bytes: int | None

    @property
    def fraction(self) -> float:
        used = self.used_bytes / self.total_bytes if self.total_bytes else 0.0
        if self.budget_bytes:
            used = max(used, self.kafka_bytes / self.budget_bytes)
        return used


def measure(log_dir: Path, budget_bytes: int | None = None) -> DiskUse:
    usage = shutil.disk_usage(log_dir)
    kafka = 0
    for root, _, files in os.walk(log_dir):
        for name in files:
            try:
                kafka += os.stat(os.path.join(root, name)).st_blocks * 512  # what the file occupies, not its length
            except FileNotFoundError:
                continue  # a segment Kafka deleted meanwhile
    return DiskUse(usage.used, usage.total, kafka, budget_bytes)


@dataclass
class Action:
    """One thing a tier does (or, in a dry run, would do)."""

    tier: Tier
    what: str
    topic: str | None = None
    records: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.tier.name, "what": self.what, "topic": self.topic, "records": self.records}


@dataclass
class OverflowMetrics:
    registry: CollectorRegistry
    used: Gauge = field(init=False)
    tier: Gauge = field(init=False)
    evicted: Counter = field(init=False)
    blocked: Gauge = field(init=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.used = Gauge("streamforge_disk_used_ratio", "Used fraction of Kafka's disk budget (0-1)", registry=r)
        self.tier = Gauge("streamforge_overflow_tier", "Overflow tier: 0 normal, 1 alert, 2 downsample, 3 evict, "
                          "4 producers blocked", registry=r)  # fmt: skip
        self.evicted = Counter("streamforge_overflow_evicted_records", "Records that left a topic before their "
                               "retention: evicted (tier 3) or cut by a shortened retention (tier 2)",
                               ["topic", "cause"], registry=r)  # fmt: skip
        self.blocked = Gauge("streamforge_overflow_producers_blocked", "1 while sources are blocked", registry=r)


SYSTEM_FLOW, SYSTEM_NODE = "_gateway", "overflow"  # the headers of the gateway's own alarms


def disk_alarm(state: str, disk: DiskUse, settings: OverflowSettings, now: datetime) -> Record:
    """The gateway's CRITICAL alarm while producers are blocked (ACTIVE), and its end (CLEARED), in alarms.clean."""
    used = round(disk.fraction * 100, 1)
    blocked = f"disk budget {used}% used: producers blocked, readings wait at the devices and brokers"
    words = blocked if state == "ACTIVE" else f"disk budget back to {used}% used: producers run again"
    return {"alarm_id": "disk_budget|gateway|disk_used", "asset_id": "gateway", "parameter": "disk_used",
            "rule_id": "disk_budget", "severity": "CRITICAL", "state": state, "value": used,
            "threshold": settings.block_at * 100, "message": words, "changed_by": None, "quality": "GOOD",
            "classification": "ALARM", "timestamps": {"device_time": now, "gateway_time": now},
            "clock_skew_ms": None, "metadata": {}}  # fmt: skip


class OverflowManager:
    """Measures every `interval_s` and moves between tiers (up at once, down only `hysteresis` below). Tier actions
    are idempotent: configs are set to what the tier wants (the catalogue's, plus the tier's), never toggled. Entering
    and leaving BLOCK raise and clear a CRITICAL alarm in alarms.clean (flow `_gateway`, node `overflow`)."""

    def __init__(self, kafka: KafkaAccess, log_dir: Path, state_dir: Path, settings: OverflowSettings,
                 registry: CollectorRegistry, schemas: SchemaRegistry | None = None) -> None:  # fmt: skip
        self.kafka, self.log_dir, self.settings, self.schemas = kafka, log_dir, settings, schemas
        self.block_file = state_dir / BLOCK_FILE
        self.metrics = OverflowMetrics(registry)
        self.tier = Tier.NORMAL
        self.disk: DiskUse | None = None
        self.evicted: dict[str, int] = {}
        self.actions: list[Action] = []  # what the last change of tier, or the last eviction, did
        self._starts: dict[TopicPartition, int] = {}  # log start offsets last seen
        self._causes: dict[str, str] = {}  # why a topic's start moved: "evicted" by us, else "retention"
        self._configured: Tier | None = None
        self._clients: tuple[AIOKafkaAdminClient, AIOKafkaConsumer] | None = None
        self._connecting = asyncio.Lock()
        self.block_file.unlink(missing_ok=True)

    def report(self) -> dict[str, Any]:
        """For /health and the heartbeat."""
        disk = self.disk
        return {"tier": self.tier.name, "used_fraction": round(disk.fraction, 4) if disk else None,
                "used_bytes": disk.used_bytes if disk else None, "total_bytes": disk.total_bytes if disk else None,
                "kafka_bytes": disk.kafka_bytes if disk else None, "budget_bytes": self.settings.budget_bytes,
                "producers_blocked": self.tier >= Tier.BLOCK, "evicted": dict(self.evicted),
                "last_actions": [a.to_dict() for a in self.actions]}  # fmt: skip

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.step()
                except (TimeoutError, KafkaError, OSError) as exc:  # Kafka restarting, a file moving
                    log.warning("overflow check failed", extra={"error": f"{type(exc).__name__}: {exc}"})
                    await self._disconnect()  # the next turn connects afresh
                await asyncio.sleep(self.settings.interval_s)
        finally:
            await self._disconnect()

    async def _connected(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        """The admin client and the group-less consumer (offsets only), kept across turns (a dry run shares them)."""
        async with self._connecting:
            return await self._connect()

    async def _connect(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._clients is None:
            admin = self.kafka.admin(request_timeout_ms=10_000)
            consumer = self.kafka.consumer(enable_auto_commit=False)
            await admin.start()
            try:
                await consumer.start()
            except BaseException:
                await admin.close()
                raise
            self._clients = (admin, consumer)
        return self._clients

    async def _disconnect(self) -> None:
        clients, self._clients = self._clients, None
        if clients is not None:
            with contextlib.suppress(KafkaError, OSError):
                await clients[1].stop()
            with contextlib.suppress(KafkaError, OSError):
                await clients[0].close()

    def _tier_for(self, fraction: float) -> Tier:
        s = self.settings
        thresholds = [(Tier.BLOCK, s.block_at), (Tier.EVICT, s.evict_at), (Tier.DOWNSAMPLE, s.downsample_at),
                      (Tier.ALERT, s.alert_at)]  # fmt: skip
        for tier, at in thresholds:
            if fraction >= at or (self.tier >= tier and fraction >= at - s.hysteresis):
                return tier
        return Tier.NORMAL

    async def step(self) -> list[Action]:
        """Measure, move to the tier the measure says, act; returns what it did."""
        self.disk = disk = measure(self.log_dir, self.settings.budget_bytes)
        tier = self._tier_for(disk.fraction)
        self.metrics.used.set(disk.fraction)
        done: list[Action] = []
        admin, consumer = await self._connected()
        await self._count_evictions(consumer)
        if tier != self.tier:
            log.warning("disk budget tier changed", extra={"from": self.tier.name, "to": tier.name,
                                                           "used": f"{disk.fraction:.1%}"})  # fmt: skip
            self.tier = tier
        self.metrics.tier.set(tier)
        if tier != self._configured:
            done += await self._configure(admin, tier)
        if tier >= Tier.EVICT:
            done += await self._evict(admin, consumer, apply=True)
        await self._block(tier >= Tier.BLOCK, disk)
        if done:
            self.actions = done
        return done

    async def _block(self, blocked: bool, disk: DiskUse) -> None:
        self.metrics.blocked.set(1 if blocked else 0)
        if blocked:
            why = (f"disk budget {disk.fraction:.0%} used (block at {self.settings.block_at:.0%}): producers blocked, "
                   "readings wait at the device or broker")  # fmt: skip
            newly = not self.block_file.exists()
            tmp = self.block_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"reason": why, "since": time.time()}))
            os.replace(tmp, self.block_file)
            if newly:
                log.critical("producers blocked", extra={"used": f"{disk.fraction:.1%}"})
                await self._alarm("ACTIVE", disk)
        elif self.block_file.exists():
            self.block_file.unlink(missing_ok=True)
            log.warning("producers unblocked", extra={"used": f"{disk.fraction:.1%}"})
            await self._alarm("CLEARED", disk)

    async def _alarm(self, state: str, disk: DiskUse) -> None:
        """Into alarms.clean (never evicted), where alarm pages and consumers see it; the 5 % kept free hold it."""
        if self.schemas is None:
            return
        encoder = await encoder_for(self.schemas, "alarms.clean-value", SCHEMAS["alarm"])
        producer = BatchProducer(self.kafka)
        await producer.start()
        try:
            record = disk_alarm(state, disk, self.settings, datetime.now(UTC))
            headers = node_headers(SYSTEM_FLOW, SYSTEM_NODE)
            report = await producer.send_records("alarms.clean", [record], encoder, headers,
                                                 key_of=lambda r: str(r["alarm_id"]))  # fmt: skip
            if report.failed:
                raise KafkaError(f"the disk budget alarm was not acknowledged: {report.failed[0][1]!r}")
        finally:
            await producer.stop()

    def topic_configs(self, spec: TopicSpec, tier: Tier) -> dict[str, str]:
        """The whole config a catalogue topic has in `tier` (AlterConfigs replaces a topic's configs as a set)."""
        configs = spec.kafka_configs()
        if tier >= Tier.ALERT:
            configs["compression.type"] = "zstd"  # the broker recompresses new batches; older segments stay
        if tier >= Tier.DOWNSAMPLE and spec.name == "telemetry.raw":
            floor = int(self.settings.raw_retention_floor_s * 1000)
            configs["retention.ms"] = str(min(floor, spec.retention_ms) if spec.retention_ms > 0 else floor)
        return configs

    async def _configure(self, admin: AIOKafkaAdminClient, tier: Tier) -> list[Action]:
        resources = [ConfigResource(ConfigResourceType.TOPIC, spec.name, configs=self.topic_configs(spec, tier))
                     for spec in TOPICS]  # fmt: skip
        for response in await admin.alter_configs(resources):
            for error_code, error_message, _, name in response.resources:
                if error_code:
                    raise KafkaError(f"configs of {name} refused ({error_code}): {error_message}")
        self._configured = tier
        done = [Action(tier, f"topics configured for tier {tier.name}: compression "
                             f"{'zstd' if tier >= Tier.ALERT else 'as produced'}")]  # fmt: skip
        if tier >= Tier.DOWNSAMPLE:
            done.append(Action(tier, f"telemetry.raw kept {self.settings.raw_retention_floor_s:g} s; the 1 min and 1 h "
                                     "aggregates keep theirs", "telemetry.raw"))  # fmt: skip
        for action in done:  # NORMAL at start: the configs of the catalogue again, whatever a last run left
            log.log(logging.WARNING if tier else logging.INFO, "overflow action", extra=action.to_dict())
        return done

    async def _evict(self, admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, apply: bool) -> list[Action]:
        """The oldest half of what may go, of the first evictable topic that has any: the next turn measures again
        and goes on if it has to. What may go: below every consumer group's committed offset (with
        `evict_unconsumed`, below the end: what no consumer has read yet too)."""
        committed = await self._committed(admin)
        for topic in self.settings.evictable:
            partitions = [TopicPartition(topic, p) for p in range(topic_spec(topic).partitions)]
            starts = await consumer.beginning_offsets(partitions)
            ends = await consumer.end_offsets(partitions)
            cut: dict[TopicPartition, int] = {}
            for tp in partitions:
                safe = ends[tp] if self.settings.evict_unconsumed else min(committed.get(tp, [ends[tp]]))
                if safe > starts[tp]:
                    cut[tp] = starts[tp] + max(1, (safe - starts[tp]) // 2)
            if not cut:
                continue
            records = sum(offset - starts[tp] for tp, offset in cut.items())
            action = Action(Tier.EVICT, f"evict the oldest {records} records of {topic}, below what its "
                                        "consumers committed", topic, records)  # fmt: skip
            if apply:
                self._causes[topic] = "evicted"
                await admin.delete_records({tp: RecordsToDelete(offset) for tp, offset in cut.items()})
                log.warning("overflow eviction", extra={**action.to_dict(), "partitions": {
                    f"{tp.partition}": [starts[tp], offset] for tp, offset in cut.items()}})  # fmt: skip
            return [action]
        return []

    async def _committed(self, admin: AIOKafkaAdminClient) -> dict[TopicPartition, list[int]]:
        """Every consumer group's committed offset, by partition."""
        found: dict[TopicPartition, list[int]] = {}
        for group in await admin.list_consumer_groups():
            for tp, offset in (await committed_offsets(admin, group[0])).items():
                found.setdefault(tp, []).append(offset)
        return found

    async def _count_evictions(self, consumer: AIOKafkaConsumer) -> None:
        """Every move of a non-critical topic's log start offset is records gone before their time: counted by
        topic and cause (our eviction, or retention)."""
        specs = [spec for spec in TOPICS if spec.priority is not Priority.CRITICAL]
        partitions = [TopicPartition(spec.name, p) for spec in specs for p in range(spec.partitions)]
        starts = await consumer.beginning_offsets(partitions)
        moved: dict[str, int] = {}
        for tp, start in starts.items():
            before = self._starts.get(tp)
            if before is not None and start > before:
                moved[tp.topic] = moved.get(tp.topic, 0) + start - before
            self._starts[tp] = start
        for topic, records in moved.items():
            cause = self._causes.pop(topic, "retention")
            self.evicted[topic] = self.evicted.get(topic, 0) + records
            self.metrics.evicted.labels(topic=topic, cause=cause).inc(records)
            log.warning("records evicted", extra={"topic": topic, "records": records, "cause": cause})

    async def dry_run(self) -> dict[str, Any]:
        """What each tier would do now, without doing it."""
        disk = measure(self.log_dir, self.settings.budget_bytes)
        admin, consumer = await self._connected()
        eviction = await self._evict(admin, consumer, apply=False)
        s = self.settings
        nothing = Action(Tier.EVICT, f"at {s.evict_at:.0%}: nothing to evict now: no consumer is past the start of "
                         "the evictable topics")  # fmt: skip
        shortened = (f"at {s.downsample_at:.0%}: telemetry.raw kept {s.raw_retention_floor_s:g} s instead of its "
                     "catalogue retention")  # fmt: skip
        plan: Sequence[Action] = [
            Action(Tier.ALERT, f"at {s.alert_at:.0%}: alert; new batches of every topic compressed with zstd"),
            Action(Tier.DOWNSAMPLE, shortened, "telemetry.raw"),
            *(eviction or [nothing]),
            Action(Tier.BLOCK, f"at {s.block_at:.0%}: sources stop acknowledging their devices and brokers"),
        ]
        return {"used_fraction": round(disk.fraction, 4), "tier_now": self._tier_for(disk.fraction).name,
                "actions": [a.to_dict() for a in plan]}  # fmt: skip


def producers_blocked(state_dir: Path) -> str | None:
    """Why sources must not take readings now (the overflow manager's block file), or None."""
    try:
        reason: str = json.loads((state_dir / BLOCK_FILE).read_text())["reason"]
    except (FileNotFoundError, ValueError, KeyError):
        return None
    return reason


def load_settings(data_dir: Path) -> OverflowSettings:
    """The gateway's disk budget from `<data-dir>/overflow.json` (every field optional), else the defaults; a file
    that does not validate stops the start with what is wrong in it."""
    path = data_dir / SETTINGS_FILE
    if not path.exists():
        return OverflowSettings()
    try:
        return OverflowSettings.model_validate_json(path.read_text())
    except ValueError as exc:
        raise SystemExit(f"{path}: {exc}") from None


@contextlib.asynccontextmanager
async def watching_disk(kafka: KafkaAccess, log_dir: Path, state_dir: Path, settings: OverflowSettings,
                        registry: CollectorRegistry, schemas: SchemaRegistry | None = None,
                        ) -> AsyncIterator[OverflowManager]:  # fmt: skip
    """An overflow manager running beside the gateway until the `async with` ends; its block file removed then."""
    manager = OverflowManager(kafka, log_dir, state_dir, settings, registry, schemas)
    task = asyncio.create_task(manager.run(), name="overflow")
    try:
        yield manager
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        manager.block_file.unlink(missing_ok=True)
