"""What every runner needs from its process: Kafka, the schema registry, metrics and the node types."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from streamforge.engine.node_types import NodeTypes
from streamforge.engine.schema_registry import SchemaRegistry
from streamforge.runtime.gateway.metrics import NodeMetrics
from streamforge.runtime.kafka.access import KafkaAccess


@dataclass
class RuntimeEnv:
    """What every runner needs from its process."""

    kafka: KafkaAccess
    registry: SchemaRegistry
    metrics: NodeMetrics
    node_types: NodeTypes
    batch_size: int = 2000
    behind_records: int = 10_000  # a consumer this far behind its input says so (DEGRADED) until under half of it
    producers_blocked: Callable[[], str | None] = lambda: None  # why sources must wait (the disk budget), or None
