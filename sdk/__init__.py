"""The node SDK: the one import a node author needs (`from streamforge.sdk import ...`); nothing else is API.

A node type is one class (`SourceNode`, `ProcessorNode` or `SinkNode` with its config model as the generic
parameter): its typed ports, its config model (which is also its editor form), its lifecycle, its commands and
its state tables. The framework owns connecting with backoff, state in a changelog, time, the sink's circuit
breaker and delivery; `NodeHarness` runs one node exactly as a gateway does, without Kafka. See docs/sdk.md.
"""

from streamforge.engine.clock import Clock, ManualClock, SystemClock
from streamforge.engine.records import epoch_ms, event_time, now_utc, reason, telemetry
from streamforge.engine.retry import CircuitSettings, ConnectionSettings
from streamforge.engine.sdk import (
    CommandInvalid,
    Emitted,
    Kind,
    Message,
    NodeConfig,
    NodeContext,
    PeerUnavailable,
    Port,
    PortType,
    ProcessorNode,
    Record,
    SinkConfig,
    SinkNode,
    SourceNode,
    earliest_offsets,
)
from streamforge.engine.state import StateTable
from streamforge.engine.testing import NodeHarness

__all__ = [
    "CircuitSettings",
    "Clock",
    "CommandInvalid",
    "ConnectionSettings",
    "Emitted",
    "Kind",
    "ManualClock",
    "Message",
    "NodeConfig",
    "NodeContext",
    "NodeHarness",
    "PeerUnavailable",
    "Port",
    "PortType",
    "ProcessorNode",
    "Record",
    "SinkConfig",
    "SinkNode",
    "SourceNode",
    "StateTable",
    "SystemClock",
    "earliest_offsets",
    "epoch_ms",
    "event_time",
    "now_utc",
    "reason",
    "telemetry",
]
