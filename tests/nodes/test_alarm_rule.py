"""alarm_rule: thresholds, deadband, on-delay, the lifecycle, and state that survives a restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from streamforge.engine.clock import ManualClock
from streamforge.engine.records import telemetry
from streamforge.engine.sdk import CommandInvalid
from streamforge.engine.testing import NodeHarness
from streamforge.nodes.alarm_rule import AlarmRule

T0 = datetime(2026, 1, 29, 10, 0, tzinfo=UTC)
RULE = {"rule_id": "overpressure", "parameter": "pressure", "high": 9.0, "deadband": 0.5, "on_delay_s": 2,
        "severity": "CRITICAL"}  # fmt: skip


def series(*values: float, start: float = 0) -> list[dict[str, Any]]:
    return [telemetry("tank_1", "pressure", v, device_time=T0 + timedelta(seconds=start + i), gateway_time=T0)
            for i, v in enumerate(values)]  # fmt: skip


def states(emitted: dict[str, list[dict[str, Any]]]) -> list[str]:
    return [alarm["state"] for alarm in emitted.get("alarms", [])]


async def test_on_delay_then_deadband() -> None:
    async with NodeHarness(AlarmRule, RULE) as h:
        assert states(await h.process(series(8, 9.5, 9.6, 8.9))) == []  # 1 s over: shorter than the on-delay
        out = await h.process(series(9.5, 9.6, 9.7, 9.8, start=10))
        assert states(out) == ["ACTIVE"]
        alarm = out["alarms"][0]
        assert alarm["alarm_id"] == "overpressure|tank_1|pressure" and alarm["severity"] == "CRITICAL"
        assert alarm["value"] == 9.7 and alarm["threshold"] == 9.0
        assert alarm["timestamps"]["device_time"] == T0 + timedelta(seconds=12)
        assert states(await h.process(series(8.8, 8.6, start=20))) == []  # inside, but within the deadband
        assert states(await h.process(series(8.4, start=30))) == ["CLEARED"]


async def test_acknowledge_and_suppress_through_commands() -> None:
    clock = ManualClock(datetime(2026, 3, 1, 8, 0, tzinfo=UTC))
    async with NodeHarness(AlarmRule, {**RULE, "on_delay_s": 0}, clock=clock) as h:
        await h.process(series(10))
        where = {"asset_id": "tank_1", "parameter": "pressure"}
        with pytest.raises(CommandInvalid, match="user: Field required") as refused:
            await h.command("acknowledge", where)
        assert [(p.code, p.pointer) for p in refused.value.problems] == [("invalid_argument", "/user")]
        with pytest.raises(ValueError, match="has no command 'ack'; commands: acknowledge, suppress, unsuppress"):
            await h.command("ack", {**where, "user": "ana"})
        await clock.advance(90)
        ack = await h.command("acknowledge", {**where, "user": "ana"})
        assert states(ack) == ["ACKNOWLEDGED"] and ack["alarms"][0]["changed_by"] == "ana"
        assert ack["alarms"][0]["timestamps"]["device_time"] == datetime(2026, 3, 1, 8, 1, 30, tzinfo=UTC)
        with pytest.raises(ValueError, match="cannot acknowledge an alarm that is ACKNOWLEDGED"):
            await h.command("acknowledge", {**where, "user": "ana"})
        assert states(await h.process(series(5, start=1))) == ["CLEARED"]
        assert states(await h.command("suppress", {**where, "user": "ben"})) == ["SUPPRESSED"]
        assert states(await h.process(series(11, 12, start=2))) == []  # silenced
        assert states(await h.command("unsuppress", {**where, "user": "ben"})) == ["CLEARED"]
        assert states(await h.process(series(12, start=5))) == ["ACTIVE"]


async def test_alarm_state_survives_a_restart() -> None:
    async with NodeHarness(AlarmRule, {**RULE, "on_delay_s": 0}) as h:
        await h.process(series(10))
        await h.restart()
        assert states(await h.process(series(10.5, start=1))) == []  # still ACTIVE: no second ACTIVE
        assert states(await h.process(series(7, start=2))) == ["CLEARED"]


def test_a_rule_needs_a_limit() -> None:
    with pytest.raises(ValidationError, match="set `high`, `low` or both"):
        AlarmRule.Config.model_validate({"rule_id": "r"})
    with pytest.raises(ValidationError, match=r"low 5\.0 must be below high 1\.0"):
        AlarmRule.Config.model_validate({"rule_id": "r", "low": 5, "high": 1})
