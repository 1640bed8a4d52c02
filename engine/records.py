"""Record helpers: time semantics (device_time vs gateway_time, clock skew) and record builders."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Final

Record = dict[str, Any]

# Spec, time semantics: alert when device and gateway clocks disagree by more than this.
MAX_CLOCK_SKEW_MS: Final = 10_000
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the Unix epoch (the resolution Avro's timestamp-millis keeps)."""
    return (moment - EPOCH) // timedelta(milliseconds=1)


def from_epoch_ms(milliseconds: int) -> datetime:
    return EPOCH + timedelta(milliseconds=milliseconds)


_now: tuple[int, datetime] = (0, EPOCH)  # the last millisecond asked for, and its datetime


def now_utc() -> datetime:
    """The gateway clock, timezone-aware, at the millisecond precision Avro keeps. Every reading a source builds
    asks for it: one datetime is built per millisecond and shared (it is immutable), not one per reading."""
    global _now
    milliseconds = time.time_ns() // 1_000_000
    if milliseconds != _now[0]:
        _now = (milliseconds, from_epoch_ms(milliseconds))
    return _now[1]


def apply_time_rules(record: Record, gateway_time: datetime | None = None) -> bool:
    """Stamp gateway_time, fill clock_skew_ms, and downgrade quality when device_time is missing.

    Returns True when the skew exceeds MAX_CLOCK_SKEW_MS, so the caller raises a clock_skew event.
    Mutates the record in place: this runs on every reading, so no copy.
    """
    timestamps = record.setdefault("timestamps", {})
    gateway = timestamps.get("gateway_time") or gateway_time or now_utc()
    timestamps["gateway_time"] = gateway
    device = timestamps.get("device_time")
    if device is None:
        record["clock_skew_ms"] = None
        if record.get("quality", "GOOD") in ("GOOD", "SUSPECT"):
            record["quality"] = "UNCERTAIN"
        return False
    skew = int((gateway - device).total_seconds() * 1000)
    record["clock_skew_ms"] = skew
    return abs(skew) > MAX_CLOCK_SKEW_MS


def event_time(record: Record) -> datetime:
    """The authoritative time of a reading: device_time, else gateway_time."""
    timestamps = record["timestamps"]
    result: datetime = timestamps.get("device_time") or timestamps["gateway_time"]
    return result


def telemetry(
    asset_id: str,
    parameter: str,
    value: float | None,
    *,
    unit: str | None = None,
    device_time: datetime | None = None,
    gateway_time: datetime | None = None,
    quality: str = "GOOD",
    metadata: dict[str, str] | None = None,
) -> Record:
    """A telemetry record with the time rules applied."""
    record: Record = {
        "asset_id": asset_id,
        "parameter": parameter,
        "value": value,
        "unit": unit,
        "quality": quality,
        "classification": "TELEMETRY",
        "timestamps": {"device_time": device_time, "gateway_time": gateway_time or now_utc()},
        "metadata": metadata or {},
    }
    apply_time_rules(record)
    return record


def clock_skew_event(reading: Record) -> Record:
    """The event a source emits when a reading's clock skew exceeds MAX_CLOCK_SKEW_MS."""
    skew = reading["clock_skew_ms"]
    return {
        "asset_id": reading["asset_id"],
        "event_type": "clock_skew",
        "parameter": reading.get("parameter"),
        "value": float(skew),
        "message": f"device clock differs from gateway clock by {skew} ms (limit {MAX_CLOCK_SKEW_MS} ms)",
        "quality": "SUSPECT",
        "classification": "EVENT",
        "timestamps": dict(reading["timestamps"]),
        "clock_skew_ms": skew,
        "metadata": dict(reading.get("metadata") or {}),
    }


def reason(code: str, message: str, field: str | None = None) -> Record:
    """A machine-readable reason: a stable code, the JSON pointer of the field, and words for people."""
    return {"code": code, "field": field, "message": message}


def dead_letter(
    node_id: str,
    reasons: list[Record],
    payload: bytes,
    source_topic: str,
    source_partition: int | None = None,
    source_offset: int | None = None,
    asset_id: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Record:
    """A dead-letter record: where the original came from, why it was refused, and its untouched bytes."""
    return {
        "source_topic": source_topic,
        "source_partition": source_partition,
        "source_offset": source_offset,
        "node_id": node_id,
        "asset_id": asset_id,
        "reasons": reasons,
        "payload": payload,
        "failed_at": now_utc(),
        "metadata": metadata or {},
    }


def json_value(value: Any) -> Any:
    """A record's non-JSON values as JSON: times as ISO-8601, bytes as base64, anything else as its text."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)


def json_safe(record: Record) -> Record:
    """The record as plain JSON data (what a debug tap shows and an HTTP sink sends)."""
    safe: Record = json.loads(json.dumps(record, default=json_value))
    return safe
