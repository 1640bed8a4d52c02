"""The control plane's alarm store: idempotent by event id, each alarm's latest only moving forward, filters."""

from __future__ import annotations

from typing import Any

import pytest

from streamforge.runtime.control_plane.alarms import AlarmFilter, AlarmStore
from streamforge.runtime.control_plane.store import Store
from streamforge.runtime.errors import ApiError


def transition(seq: int, state: str, asset: str = "tank_1", severity: str = "HIGH") -> dict[str, Any]:
    alarm_id = f"level_high|{asset}|level"
    return {"flow": "line", "node": "high", "topic": "alarms.clean", "partition": 0, "offset": seq, "record": {
        "alarm_id": alarm_id, "event_id": f"{alarm_id}#{seq}", "asset_id": asset, "parameter": "level",
        "rule_id": "level_high", "severity": severity, "state": state, "message": f"{state} now",
        "changed_by": None, "timestamps": {"device_time": f"2026-12-01T10:00:{seq:02d}+00:00",
                                           "gateway_time": f"2026-12-01T10:00:{seq:02d}+00:00"}}}  # fmt: skip


def test_a_replayed_or_reordered_batch_changes_nothing() -> None:
    alarms = AlarmStore(Store())
    assert alarms.record("gw_1", [transition(1, "ACTIVE"), transition(2, "ACKNOWLEDGED")]) == 2
    assert alarms.record("gw_1", [transition(1, "ACTIVE"), transition(2, "ACKNOWLEDGED")]) == 0  # the uplink replays
    assert alarms.record("gw_1", [transition(4, "CLEARED"), transition(3, "SHELVED")]) == 2  # out of order
    [latest] = alarms.alarms(AlarmFilter())
    assert (latest["state"], latest["event_id"], latest["gateway"]) == ("CLEARED", "level_high|tank_1|level#4", "gw_1")
    history = alarms.history("gw_1", "line", "high", "level_high|tank_1|level")
    assert [h["state"] for h in history] == ["CLEARED", "SHELVED", "ACKNOWLEDGED", "ACTIVE"]
    event = alarms.event("level_high|tank_1|level#2")
    assert event["state"] == "ACKNOWLEDGED" and event["latest"]["event_id"].endswith("#4")
    assert alarms.record("gw_2", [transition(1, "ACTIVE")]) == 1  # the same rule on another gateway: its own alarm
    with pytest.raises(ApiError, match="is on 2 gateways"):
        alarms.event("level_high|tank_1|level#1")
    assert alarms.event("level_high|tank_1|level#1", "gw_2")["gateway"] == "gw_2"
    wiped = transition(1, "ACTIVE")  # the gateway's Kafka was wiped: the rule starts over as a new incarnation
    wiped["record"]["event_id"] = "level_high|tank_1|level#5e1f.1"
    assert alarms.record("gw_1", [wiped]) == 1
    assert alarms.event("level_high|tank_1|level#5e1f.1")["latest"]["event_id"].endswith("#5e1f.1")


def test_filters_and_counts() -> None:
    alarms = AlarmStore(Store())
    alarms.record("gw_1", [transition(1, "ACTIVE", "tank_1", "CRITICAL"), transition(1, "ACTIVE", "tank_2", "LOW"),
                           transition(2, "RTN_UNACK", "tank_2", "LOW"), transition(1, "ACTIVE", "tank_3")])  # fmt: skip
    alarms.record("gw_1", [transition(2, "ACKNOWLEDGED", "tank_3")])
    assert alarms.counts() == {"unacknowledged": 2, "by_state": {"ACTIVE": 1, "RTN_UNACK": 1, "ACKNOWLEDGED": 1}}
    urgent = alarms.alarms(AlarmFilter.parse({"state": "active,rtn_unack"}))
    assert [a["asset_id"] for a in urgent] == ["tank_1", "tank_2"]  # ACTIVE first, then returned-unacknowledged
    assert [a["asset_id"] for a in alarms.alarms(AlarmFilter.parse({"severity": "LOW"}))] == ["tank_2"]
    assert [a["asset_id"] for a in alarms.alarms(AlarmFilter.parse({"asset": "tank_3"}))] == ["tank_3"]
    recent = alarms.alarms(AlarmFilter.parse({"since": "2026-12-01T10:00:02+00:00"}))
    assert sorted(a["asset_id"] for a in recent) == ["tank_2", "tank_3"]
    with pytest.raises(ApiError, match="state 'LOUD' is not one of ACTIVE"):
        AlarmFilter.parse({"state": "loud"})
    with pytest.raises(ApiError, match="events\\[0\\] has no alarm record"):
        alarms.record("gw_1", [{"flow": "line", "record": {"state": "ACTIVE"}}])
