"""Time rules: device_time is authoritative; missing means UNCERTAIN; skew is recorded and flagged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from streamforge.engine.records import MAX_CLOCK_SKEW_MS, apply_time_rules, clock_skew_event, event_time, telemetry

GATEWAY = datetime(2026, 1, 29, 10, 0, 0, 456000, tzinfo=UTC)


def test_missing_device_time_uses_gateway_time_and_marks_uncertain() -> None:
    record = telemetry("a", "temperature", 85.4, gateway_time=GATEWAY)
    assert record["quality"] == "UNCERTAIN"
    assert record["clock_skew_ms"] is None
    assert event_time(record) == GATEWAY


def test_skew_is_recorded_as_spec_example() -> None:
    device = datetime(2026, 1, 29, 10, 0, 0, 123000, tzinfo=UTC)
    record = telemetry("a", "temperature", 85.4, device_time=device, gateway_time=GATEWAY)
    assert record["clock_skew_ms"] == 333
    assert record["quality"] == "GOOD"
    assert event_time(record) == device


def test_skew_over_limit_is_flagged_and_becomes_an_event() -> None:
    record = {
        "asset_id": "a",
        "parameter": "p",
        "value": 1.0,
        "quality": "GOOD",
        "timestamps": {"device_time": GATEWAY - timedelta(milliseconds=MAX_CLOCK_SKEW_MS + 1)},
    }
    assert apply_time_rules(record, GATEWAY) is True
    event = clock_skew_event(record)
    assert event["event_type"] == "clock_skew"
    assert event["value"] == MAX_CLOCK_SKEW_MS + 1
    within = {"timestamps": {"device_time": GATEWAY - timedelta(seconds=9)}}
    assert apply_time_rules(within, GATEWAY) is False


def test_bad_stays_bad_when_device_time_is_missing() -> None:
    record = telemetry("a", "p", None, quality="BAD", gateway_time=GATEWAY)
    assert record["quality"] == "BAD"
