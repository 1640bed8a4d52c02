"""Spec-shaped sample records of every type, and sample flows, shared by the engine and runtime tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 1, 29, 10, 0, 0, 123000, tzinfo=UTC)
T1 = T0 + timedelta(milliseconds=333)

SAMPLES: dict[str, dict[str, Any]] = {
    "telemetry": {
        "asset_id": "line_1_sensor_01",
        "parameter": "temperature",
        "value": 85.4,
        "unit": "celsius",
        "quality": "GOOD",
        "classification": "TELEMETRY",
        "timestamps": {"device_time": T0, "gateway_time": T1},
        "clock_skew_ms": 333,
        "metadata": {"adapter_id": "adapter_modbus_001", "adapter_version": "1.2.0"},
    },
    "event": {
        "asset_id": "line_1_valve_01",
        "event_type": "valve_opened",
        "parameter": "position",
        "value": "OPEN",
        "message": "valve opened by PLC",
        "quality": "GOOD",
        "classification": "EVENT",
        "timestamps": {"device_time": T0, "gateway_time": T1},
        "clock_skew_ms": 333,
        "metadata": {},
    },
    "alarm": {
        "alarm_id": "overpressure|line_1_tank|pressure",
        "asset_id": "line_1_tank",
        "parameter": "pressure",
        "rule_id": "overpressure",
        "severity": "CRITICAL",
        "state": "ACTIVE",
        "value": 9.7,
        "threshold": 9.0,
        "message": "pressure above 9.0 bar",
        "changed_by": None,
        "quality": "GOOD",
        "classification": "ALARM",
        "timestamps": {"device_time": T0, "gateway_time": T1},
        "clock_skew_ms": 333,
        "metadata": {},
        "event_id": "overpressure|line_1_tank|pressure#1",
        "active": True,
        "acknowledged": False,
        "shelved_until": None,
    },
    "aggregate": {
        "asset_id": "vibration_sensor_01",
        "parameter": "vibration",
        "resolution": "1min",
        "window_start": datetime(2026, 1, 29, 10, 0, tzinfo=UTC),
        "window_end": datetime(2026, 1, 29, 10, 1, tzinfo=UTC),
        "aggregates": {"avg": 3.42, "min": 2.91, "max": 4.15, "first": 3.0, "last": 3.5, "count": 6000},
        "unit": "mm/s",
        "metadata": {},
    },
    "dead_letter": {
        "source_topic": "telemetry.raw",
        "source_partition": 4,
        "source_offset": 1234,
        "node_id": "validator_1",
        "asset_id": "line_1_sensor_01",
        "reasons": [{"code": "out_of_range", "field": "/value", "message": "512.0 > max 150.0"}],
        "payload": b"\x00\x00\x00\x00\x01\x02",
        "failed_at": T1,
        "metadata": {},
    },
}


def fully_wired(flow_id: str, count: int) -> dict[str, Any]:
    """A flow of `count` validators, each one's clean output wired to every validator's input, its own included:
    one strongly connected component holding more simple cycles than anyone can list (issue #41, V3)."""
    names = [f"v{i:02d}" for i in range(count)]
    return {"id": flow_id, "nodes": [{"id": name, "type": "validator"} for name in names],
            "edges": [{"from": f"{a}:clean", "to": f"{b}:in"} for a in names for b in names]}  # fmt: skip
