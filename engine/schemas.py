"""Avro schemas of the five record types (telemetry, event, alarm, aggregate, dead letter)."""

from __future__ import annotations

import json
from typing import Any, Final

NAMESPACE: Final = "io.streamforge.records"
QUALITIES: Final = ("GOOD", "SUSPECT", "UNCERTAIN", "BAD")
CLASSIFICATIONS: Final = ("TELEMETRY", "EVENT", "ALARM")
SEVERITIES: Final = ("CRITICAL", "HIGH", "MEDIUM", "LOW")
# ISA-18.2 / OPC UA Part 9: RTN_UNACK is "returned to normal, unacknowledged". New symbols go last (BACKWARD).
ALARM_STATES: Final = ("ACTIVE", "ACKNOWLEDGED", "CLEARED", "SUPPRESSED", "RTN_UNACK", "SHELVED", "OUT_OF_SERVICE")

Schema = dict[str, Any]

_TIMESTAMP: Final[Schema] = {"type": "long", "logicalType": "timestamp-millis"}


def _optional(avro_type: Any, doc: str) -> Schema:
    return {"type": ["null", avro_type], "default": None, "doc": doc}


def _enum(name: str, symbols: tuple[str, ...], doc: str) -> Schema:
    return {"type": "enum", "name": name, "namespace": NAMESPACE, "symbols": list(symbols), "doc": doc}


def _envelope() -> list[Schema]:
    """Fields every reading-like record shares (spec: adapter output contract, time semantics)."""
    return [
        {"name": "quality", "type": _enum("Quality", QUALITIES, "Data-quality code"), "default": "GOOD"},
        {
            "name": "classification",
            "type": _enum("Classification", CLASSIFICATIONS, "Semantic class, set by adapter config"),
        },
        {
            "name": "timestamps",
            "type": {
                "type": "record",
                "name": "Timestamps",
                "namespace": NAMESPACE,
                "fields": [
                    {"name": "device_time", **_optional(_TIMESTAMP, "When the device measured; authoritative")},
                    {"name": "gateway_time", "type": _TIMESTAMP, "doc": "When the gateway received it"},
                ],
            },
        },
        {"name": "clock_skew_ms", **_optional("long", "gateway_time - device_time, in milliseconds")},
        {"name": "metadata", "type": {"type": "map", "values": "string"}, "default": {}},
    ]


def _record(name: str, doc: str, fields: list[Schema]) -> Schema:
    return {"type": "record", "name": name, "namespace": NAMESPACE, "doc": doc, "fields": fields}


TELEMETRY: Final = _record(
    "Telemetry",
    "A continuous numeric measurement",
    [
        {"name": "asset_id", "type": "string"},
        {"name": "parameter", "type": "string"},
        {"name": "value", **_optional("double", "Measured value; null when the read failed (quality BAD)")},
        {"name": "unit", **_optional("string", "Engineering unit")},
        *_envelope(),
    ],
)

EVENT: Final = _record(
    "Event",
    "A discrete state change",
    [
        {"name": "asset_id", "type": "string"},
        {"name": "event_type", "type": "string", "doc": "e.g. valve_opened, motor_started, clock_skew"},
        {"name": "parameter", **_optional("string", "The parameter the event concerns")},
        {"name": "value", **_optional(["string", "double", "long", "boolean"], "New state")},
        {"name": "message", **_optional("string", "Human-readable description")},
        *_envelope(),
    ],
)

ALARM: Final = _record(
    "Alarm",
    "An event with severity and lifecycle",
    [
        {"name": "alarm_id", "type": "string", "doc": "Stable id: rule|asset|parameter"},
        {"name": "asset_id", "type": "string"},
        {"name": "parameter", "type": "string"},
        {"name": "rule_id", "type": "string"},
        {"name": "severity", "type": _enum("Severity", SEVERITIES, "Alarm severity")},
        {"name": "state", "type": _enum("AlarmState", ALARM_STATES, "Lifecycle state")},
        {"name": "value", **_optional("double", "Value that triggered the transition")},
        {"name": "threshold", **_optional("double", "Threshold crossed")},
        {"name": "message", "type": "string"},
        {"name": "changed_by", **_optional("string", "User who acknowledged or suppressed")},
        *_envelope(),
        {"name": "event_id", "type": "string", "default": "", "doc": "This transition's id: alarm_id#sequence"},
        {"name": "active", "type": "boolean", "default": False, "doc": "The condition, evaluated in every state"},
        {"name": "acknowledged", "type": "boolean", "default": True, "doc": "False while it waits for an operator"},
        {"name": "shelved_until", **_optional(_TIMESTAMP, "When timed shelving ends (gateway clock)")},
    ],
)

AGGREGATE: Final = _record(
    "Aggregate",
    "Statistics of one tumbling window on device_time",
    [
        {"name": "asset_id", "type": "string"},
        {"name": "parameter", "type": "string"},
        {"name": "resolution", "type": "string", "doc": "1s, 1min or 1h"},
        {"name": "window_start", "type": _TIMESTAMP},
        {"name": "window_end", "type": _TIMESTAMP},
        {
            "name": "aggregates",
            "type": {
                "type": "record",
                "name": "Aggregates",
                "namespace": NAMESPACE,
                "fields": [{"name": name, "type": "double"} for name in ("avg", "min", "max", "first", "last")]
                + [{"name": "count", "type": "long"}],
            },
        },
        {"name": "unit", **_optional("string", "Engineering unit")},
        {"name": "metadata", "type": {"type": "map", "values": "string"}, "default": {}},
    ],
)

DEAD_LETTER: Final = _record(
    "DeadLetter",
    "A record that failed validation or decoding, with machine-readable reasons",
    [
        {"name": "source_topic", "type": "string"},
        {"name": "source_partition", **_optional("int", "Partition of the failed record")},
        {"name": "source_offset", **_optional("long", "Offset of the failed record")},
        {"name": "node_id", "type": "string", "doc": "Node that rejected the record"},
        {"name": "asset_id", **_optional("string", "Asset, when it could be read")},
        {
            "name": "reasons",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Reason",
                    "namespace": NAMESPACE,
                    "fields": [
                        {"name": "code", "type": "string", "doc": "e.g. out_of_range, decode_error"},
                        {"name": "field", **_optional("string", "JSON pointer of the offending field")},
                        {"name": "message", "type": "string"},
                    ],
                },
            },
        },
        {"name": "payload", "type": "bytes", "doc": "The original record value, untouched"},
        {"name": "failed_at", "type": _TIMESTAMP},
        {"name": "metadata", "type": {"type": "map", "values": "string"}, "default": {}},
    ],
)

SCHEMAS: Final[dict[str, Schema]] = {
    "telemetry": TELEMETRY,
    "event": EVENT,
    "alarm": ALARM,
    "aggregate": AGGREGATE,
    "dead_letter": DEAD_LETTER,
}


def canonical_json(schema: Schema) -> str:
    """The schema text we register: stable key order so equal schemas compare equal."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))
