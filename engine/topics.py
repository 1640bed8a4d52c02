"""The topic catalogue: every topic of the spec with its partitions, retention and overflow priority."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

PARTITIONS = 12
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
GIB = 1 << 30


class Priority(IntEnum):
    """Overflow priority: the overflow manager evicts LOW first and never evicts CRITICAL."""

    LOW = 0
    MEDIUM = 1
    HIGH = 2
    CRITICAL = 3


@dataclass(frozen=True)
class TopicSpec:
    """One topic as the gateway creates it."""

    name: str
    record_type: str
    priority: Priority
    retention_ms: int
    # Per partition, as Kafka counts retention.bytes; -1 means unbounded.
    retention_bytes: int = -1
    partitions: int = PARTITIONS
    extra_configs: dict[str, str] = field(default_factory=dict)

    def kafka_configs(self) -> dict[str, str]:
        """Topic-level Kafka configs for CreateTopics."""
        configs = {
            "retention.ms": str(self.retention_ms),
            "retention.bytes": str(self.retention_bytes),
            "cleanup.policy": "delete",
            "unclean.leader.election.enable": "false",
            "min.insync.replicas": "1",
        }
        if self.priority is Priority.CRITICAL:
            # Alarms and dead letters must survive a power cut: fsync every message.
            configs["flush.messages"] = "1"
        configs.update(self.extra_configs)
        return configs

    @property
    def subject(self) -> str:
        """Schema-registry subject (TopicNameStrategy)."""
        return f"{self.name}-value"


def _spec(name: str, record_type: str, priority: Priority, retention_ms: int, retention_gib: float) -> TopicSpec:
    bytes_per_partition = -1 if retention_gib < 0 else int(retention_gib * GIB / PARTITIONS)
    return TopicSpec(name, record_type, priority, retention_ms, bytes_per_partition)


# Retention: time-based plus size-based (whole topic, split across partitions). Alarms are never evicted.
TOPICS: tuple[TopicSpec, ...] = (
    _spec("telemetry.raw", "telemetry", Priority.LOW, DAY_MS, 20),
    _spec("telemetry.clean", "telemetry", Priority.MEDIUM, 3 * DAY_MS, 20),
    _spec("telemetry.1s", "aggregate", Priority.MEDIUM, 7 * DAY_MS, 10),
    _spec("telemetry.1min", "aggregate", Priority.HIGH, 30 * DAY_MS, 5),
    _spec("telemetry.1hour", "aggregate", Priority.HIGH, 365 * DAY_MS, 2),
    _spec("events.raw", "event", Priority.HIGH, 7 * DAY_MS, 5),
    _spec("events.clean", "event", Priority.HIGH, 30 * DAY_MS, 5),
    _spec("alarms.raw", "alarm", Priority.CRITICAL, -1, -1),
    _spec("alarms.clean", "alarm", Priority.CRITICAL, -1, -1),
    _spec("dlq.telemetry", "dead_letter", Priority.CRITICAL, 30 * DAY_MS, 5),
    _spec("dlq.events", "dead_letter", Priority.CRITICAL, 30 * DAY_MS, 5),
)

# A compacted topic holding one JSON document per topic (priority, record type): the metadata
# that Kafka's own topic configs cannot carry, readable by any Kafka tool and by the overflow manager.
TOPIC_METADATA_TOPIC = "_streamforge.topics"

_BY_NAME = {t.name: t for t in TOPICS}


def topic_spec(name: str) -> TopicSpec:
    """The catalogue entry for a topic, or KeyError naming the known topics."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}; known topics: {', '.join(_BY_NAME)}") from None
