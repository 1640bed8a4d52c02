"""validator: every check, qualities kept, BAD readings to the DLQ with machine-readable reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from streamforge.engine.records import telemetry
from streamforge.engine.testing import NodeHarness
from streamforge.nodes.validator import Validator, ValidatorConfig

T0 = datetime(2026, 1, 29, 10, 0, tzinfo=UTC)
RULES = {
    "rules": [
        {"asset_id": "pump_*", "parameter": "pressure", "min": 0, "max": 10, "max_rate_per_s": 2,
         "expected_interval_s": 1},
    ]
}  # fmt: skip


def reading(value: float | None, seconds: float, asset: str = "pump_1", **kw: Any) -> dict[str, Any]:
    return telemetry(asset, "pressure", value, device_time=T0 + timedelta(seconds=seconds),
                     gateway_time=T0 + timedelta(seconds=seconds, milliseconds=10), **kw)  # fmt: skip


def codes(dead: dict[str, Any]) -> list[str]:
    return [reason["code"] for reason in dead["reasons"]]


async def test_good_readings_pass_with_quality() -> None:
    async with NodeHarness(Validator, RULES) as h:
        out = await h.process([reading(5, 0), reading(5.5, 1), reading(6, 2)])
    assert [r["value"] for r in out["clean"]] == [5, 5.5, 6]
    assert all(r["quality"] == "GOOD" for r in out["clean"]) and out["dlq"] == []


async def test_each_fault_goes_to_the_dlq_with_its_reason() -> None:
    async with NodeHarness(Validator, RULES) as h:
        out = await h.process([
            reading(5, 0),
            reading(11, 1),  # out of range, and too steep: BAD readings never become the baseline
            reading(10, 2),  # spike: 2.5/s from 5 > 2/s
            reading(5.5, 3),
            reading(5.5, 3),  # duplicate
            reading(None, 4, quality="BAD"),  # source said BAD
            reading(float("nan"), 5),
        ])  # fmt: skip
    dead = out["dlq"]
    assert [codes(d) for d in dead] == [["out_of_range", "rate_of_change"], ["rate_of_change"], ["duplicate"],
                                        ["source_bad"], ["not_finite"]]  # fmt: skip
    assert dead[0]["reasons"][0] == {"code": "out_of_range", "field": "/value", "message": "11.0 > max 10.0"}
    assert dead[1]["reasons"][0]["message"] == "changed 2.5/s > max 2.0/s"
    assert all(d["node_id"] == "node" and d["source_topic"] == "in" and d["payload"] for d in dead)
    assert [d["source_offset"] for d in dead] == [1, 2, 4, 5, 6]
    assert [r["value"] for r in out["clean"]] == [5, 5.5]


async def test_suspect_spikes_are_forwarded_flagged_when_configured() -> None:
    async with NodeHarness(Validator, {**RULES, "rate_of_change_quality": "SUSPECT"}) as h:
        out = await h.process([reading(5, 0), reading(9, 1), reading(15, 2)])
    assert [(r["value"], r["quality"]) for r in out["clean"]] == [(5, "GOOD"), (9, "SUSPECT")]
    assert out["clean"][1]["metadata"]["sf-reasons"] == "rate_of_change"
    assert [codes(d) for d in out["dlq"]] == [["out_of_range", "rate_of_change"]]  # out of range stays BAD


async def test_missing_device_time_is_uncertain_and_forwarded() -> None:
    record = telemetry("pump_1", "pressure", 5, gateway_time=T0)
    async with NodeHarness(Validator, RULES) as h:
        out = await h.process([record])
    assert out["clean"][0]["quality"] == "UNCERTAIN" and out["dlq"] == []


async def test_gap_raises_an_event_and_keeps_the_reading() -> None:
    async with NodeHarness(Validator, RULES) as h:
        out = await h.process([reading(5, 0), reading(5, 1), reading(5, 4)])
    assert len(out["clean"]) == 3
    (event,) = out["events"]
    assert event["event_type"] == "gap" and event["value"] == 3.0 and "no reading for 3s" in event["message"]


async def test_unmatched_series_only_get_generic_checks() -> None:
    async with NodeHarness(Validator, RULES) as h:
        out = await h.process([reading(1e9, 0, asset="fan_1"), reading(-1e9, 1, asset="fan_1")])
    assert len(out["clean"]) == 2


async def test_state_is_per_series() -> None:
    async with NodeHarness(Validator, RULES) as h:
        out = await h.process([reading(5, 0, "pump_1"), reading(9, 0, "pump_2"), reading(5.5, 1, "pump_1")])
    assert len(out["clean"]) == 3  # pump_2's 9 is not a spike relative to pump_1's 5


async def test_rate_baseline_survives_a_restart() -> None:
    async with NodeHarness(Validator, RULES) as h:
        await h.process([reading(5, 0), reading(5.5, 1)])
        await h.restart()
        out = await h.process([reading(9, 2)])  # 3.5/s from the restored 5.5: still a spike
    assert [codes(d) for d in out["dlq"]] == [["rate_of_change"]]


async def test_clock_skew_raises_one_event_per_drift() -> None:
    def skewed(seconds: float, skew_s: float) -> dict[str, Any]:
        device = T0 + timedelta(seconds=seconds)
        return telemetry("pump_1", "pressure", 5, device_time=device, gateway_time=device + timedelta(seconds=skew_s))

    async with NodeHarness(Validator, RULES) as h:
        out = await h.process([skewed(0, 1), skewed(1, 12), skewed(2, 12), skewed(3, 1), skewed(4, 15)])
    assert [(e["event_type"], e["value"]) for e in out["events"]] == [("clock_skew", 12000.0), ("clock_skew", 15000.0)]
    assert len(out["clean"]) == 5  # the readings themselves are kept


async def test_duplicate_memory_keeps_each_series_last_arrived_device_times() -> None:
    """duplicate_memory_per_series 3: after five readings of a series, a repeat of one of the last three to arrive
    is a duplicate; an older one passes and is remembered in turn, so its own repeat is refused (a backfill behind
    live readings). Another series' readings take nothing from this one's memory."""
    async with NodeHarness(Validator, {"duplicate_memory_per_series": 3}) as h:
        first = await h.process([reading(5, n) for n in range(5)])
        crowd = await h.process([telemetry(f"other_{n}", "pressure", 5, device_time=T0) for n in range(50)])
        again = await h.process([reading(5, 4), reading(5, 0), reading(5, 0), reading(5, 3), reading(5, 1),
                                 reading(5, 2), reading(5, 5), reading(5, 5), reading(5, 2)])  # fmt: skip
    assert len(first["clean"]) == 5 and len(crowd["clean"]) == 50
    assert [codes(d) for d in again["dlq"]] == [["duplicate"]] * 5  # 4, 0 and 3, then 5 and 2 again
    # 0, 1, 2 and 5 are new, each pushing out the earliest arrival; 2 is among the last three (1, 2, 5) when it
    # comes back.
    assert [r["timestamps"]["device_time"].timestamp() - T0.timestamp() for r in again["clean"]] == [0, 1, 2, 5]


async def test_the_former_duplicate_memory_field_is_refused_with_what_to_do() -> None:
    with pytest.raises(ValidationError, match="duplicate_memory_per_series"):
        ValidatorConfig.model_validate({"duplicate_memory": 200_000})
