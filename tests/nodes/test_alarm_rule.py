"""alarm_rule: thresholds, deadband, on-delay, the lifecycle, and state that survives a restart."""

from __future__ import annotations

import json
import re
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
        assert re.fullmatch(r"overpressure\|tank_1\|pressure#[0-9a-f]{8}\.1", alarm["event_id"])
        assert alarm["value"] == 9.7 and alarm["threshold"] == 9.0 and alarm["active"] and not alarm["acknowledged"]
        assert alarm["timestamps"]["device_time"] == T0 + timedelta(seconds=12)
        assert states(await h.process(series(8.8, 8.6, start=20))) == []  # inside, but within the deadband
        back = await h.process(series(8.4, start=30))
        assert states(back) == ["RTN_UNACK"]  # back to normal, but nobody has seen it yet
        assert back["alarms"][0]["event_id"] == alarm["event_id"][:-1] + "2" and not back["alarms"][0]["active"]


WHERE = {"asset_id": "tank_1", "parameter": "pressure"}


def latest(emitted: dict[str, list[dict[str, Any]]]) -> str:
    return str(emitted["alarms"][-1]["event_id"])


async def test_acknowledge_names_the_event_and_a_stale_one_is_refused() -> None:
    clock = ManualClock(datetime(2026, 3, 1, 8, 0, tzinfo=UTC))
    async with NodeHarness(AlarmRule, {**RULE, "on_delay_s": 0}, clock=clock) as h:
        first = latest(await h.process(series(10)))
        with pytest.raises(CommandInvalid, match="event_id: Field required") as refused:
            await h.command("acknowledge", {**WHERE, "user": "ana"})
        assert [(p.code, p.pointer) for p in refused.value.problems] == [("invalid_argument", "/event_id")]
        with pytest.raises(ValueError, match="has no command 'ack'; commands: acknowledge, shelve, unshelve"):
            await h.command("ack", {**WHERE, "user": "ana"})
        cleared = latest(await h.process(series(5, start=1)))  # RTN_UNACK while ana looked at the ACTIVE one
        with pytest.raises(ValueError, match=rf"stale: {re.escape(first)} is not this alarm's latest event; it is "
                                             rf"now RTN_UNACK \({re.escape(cleared)}\)"):  # fmt: skip
            await h.command("acknowledge", {**WHERE, "user": "ana", "event_id": first})
        again = latest(await h.process(series(11, start=2)))
        await clock.advance(90)
        ack = await h.command("acknowledge", {**WHERE, "user": "ana", "event_id": again, "comment": "valve checked"})
        assert states(ack) == ["ACKNOWLEDGED"] and ack["alarms"][0]["changed_by"] == "ana"
        assert ack["alarms"][0]["message"].startswith("acknowledged by ana: valve checked")
        assert ack["alarms"][0]["timestamps"]["device_time"] == datetime(2026, 3, 1, 8, 1, 30, tzinfo=UTC)
        with pytest.raises(ValueError, match="cannot acknowledge an alarm that is ACKNOWLEDGED"):
            await h.command("acknowledge", {**WHERE, "user": "ana", "event_id": latest(ack)})
        assert states(await h.process(series(5, start=3))) == ["CLEARED"]  # acknowledged, then back: over


async def test_timed_shelving_keeps_evaluating_and_ends_on_the_gateway_clock() -> None:
    clock = ManualClock(datetime(2026, 3, 1, 8, 0, tzinfo=UTC))
    async with NodeHarness(AlarmRule, {**RULE, "on_delay_s": 0, "max_shelve_s": 600}, clock=clock) as h:
        event = latest(await h.process(series(10)))
        with pytest.raises(ValueError, match="longer than rule overpressure's max_shelve_s \\(600 s\\)"):
            await h.command("shelve", {**WHERE, "user": "ana", "event_id": event, "duration_s": 3600})
        with pytest.raises(CommandInvalid, match="give `duration_s`"):
            await h.command("shelve", {**WHERE, "user": "ana", "event_id": event})
        shelved = await h.command("shelve", {**WHERE, "user": "ana", "event_id": event, "duration_s": 60})
        assert states(shelved) == ["SHELVED"]
        assert shelved["alarms"][0]["shelved_until"] == datetime(2026, 3, 1, 8, 1, tzinfo=UTC)
        back = await h.process(series(5, start=1))  # still evaluated: it cleared while shelved
        assert states(back) == ["SHELVED"] and not back["alarms"][0]["active"]
        again = await h.process(series(12, start=2))  # and went active again
        assert states(again) == ["SHELVED"] and again["alarms"][0]["active"]
        await clock.advance(59)
        assert states(await h.tick()) == []
        await h.restart()  # the shelf outlives a restart
        await clock.advance(1)
        expired = await h.tick()
        assert states(expired) == ["ACTIVE"]  # back unacknowledged: it went active while shelved
        assert expired["alarms"][0]["message"].startswith("shelving expired")


async def test_one_shot_shelving_ends_when_the_condition_clears() -> None:
    async with NodeHarness(AlarmRule, {**RULE, "on_delay_s": 0}) as h:
        event = latest(await h.process(series(10)))
        shelved = await h.command("shelve", {**WHERE, "user": "ana", "event_id": event, "one_shot": True})
        assert states(shelved) == ["SHELVED"] and shelved["alarms"][0]["shelved_until"] is None
        assert states(await h.process(series(5, start=1))) == ["CLEARED"]  # over while shelved: nothing to ack
        with pytest.raises(ValueError, match="one-shot shelving lasts until the condition clears"):
            await h.command("shelve", {**WHERE, "user": "ana", "event_id": latest(h.captured), "one_shot": True})


async def test_suppression_and_out_of_service_hide_but_still_evaluate() -> None:
    async with NodeHarness(AlarmRule, {**RULE, "on_delay_s": 0}) as h:
        event = latest(await h.process(series(10)))
        assert states(await h.command("suppress", {**WHERE, "user": "ben", "event_id": event})) == ["SUPPRESSED"]
        assert states(await h.process(series(5, 11, start=1))) == ["SUPPRESSED", "SUPPRESSED"]
        oos = await h.command("remove_from_service", {**WHERE, "user": "ben", "event_id": latest(h.captured)})
        assert states(oos) == ["OUT_OF_SERVICE"]
        with pytest.raises(ValueError, match="cannot unsuppress an alarm that is OUT_OF_SERVICE"):
            await h.command("unsuppress", {**WHERE, "user": "ben", "event_id": latest(h.captured)})
        back = await h.command("return_to_service", {**WHERE, "user": "ben", "event_id": latest(h.captured)})
        assert states(back) == ["SUPPRESSED"]
        active = await h.command("unsuppress", {**WHERE, "user": "ben", "event_id": latest(h.captured)})
        assert states(active) == ["ACTIVE"]  # active meanwhile


async def test_every_alarm_command_names_the_event_it_acts_on() -> None:
    """#41 W4: taking an alarm out of service (or any other action) without naming the event the operator saw is
    refused; the raw node-command route once took an alarm OUT_OF_SERVICE with no event id."""
    async with NodeHarness(AlarmRule, {**RULE, "on_delay_s": 0}) as h:
        event = latest(await h.process(series(10)))
        for command in ("remove_from_service", "suppress", "unshelve", "return_to_service", "unsuppress"):
            with pytest.raises(ValueError, match="event_id"):
                await h.command(command, {**WHERE, "user": "ben"})
        assert latest(h.captured) == event  # nothing changed


async def test_alarm_state_survives_a_restart() -> None:
    async with NodeHarness(AlarmRule, {**RULE, "on_delay_s": 0}) as h:
        await h.process(series(10))
        await h.restart()
        assert states(await h.process(series(10.5, start=1))) == []  # still ACTIVE: no second ACTIVE
        back = await h.process(series(7, start=2))
        assert states(back) == ["RTN_UNACK"] and back["alarms"][0]["event_id"].endswith(".2")  # the same incarnation


async def test_state_saved_before_events_had_ids_reads_back() -> None:
    async with NodeHarness(AlarmRule, {**RULE, "on_delay_s": 0}) as h:
        h.state['["alarm", "tank_1", "pressure"]'] = json.dumps({"state": "ACKNOWLEDGED", "pending_since_ms": None,
                                                                 "value": 10.0, "threshold": 9.0}).encode()  # fmt: skip
        await h.restart()
        assert states(await h.process(series(7))) == ["CLEARED"]


def test_a_rule_needs_a_limit() -> None:
    with pytest.raises(ValidationError, match="set `high`, `low` or both"):
        AlarmRule.Config.model_validate({"rule_id": "r"})
    with pytest.raises(ValidationError, match=r"low 5\.0 must be below high 1\.0"):
        AlarmRule.Config.model_validate({"rule_id": "r", "low": 5, "high": 1})
