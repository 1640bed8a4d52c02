"""`alert_router` against real local servers: an HTTP server standing in for Slack, PagerDuty's Events API and a
webhook (they are SaaS endpoints), and a real SMTP server with STARTTLS (aiosmtpd): routes by severity, PagerDuty
following the alarm, digests, nothing sent twice across a restart, refusals to the DLQ, failures retried."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streamforge.engine.clock import ManualClock
from streamforge.engine.sdk import PeerUnavailable
from streamforge.engine.testing import NodeHarness
from streamforge.nodes.alert_router import AlertRouter
from tests.destinations import Mailbox, Services

T0 = datetime(2026, 3, 1, 7, 0, tzinfo=UTC)


def alarm(alarm_id: str, state: str, severity: str, minute: int) -> dict[str, Any]:
    rule, asset, parameter = alarm_id.split("|")
    return {"alarm_id": alarm_id, "asset_id": asset, "parameter": parameter, "rule_id": rule, "severity": severity,
            "state": state, "value": 9.5, "threshold": 8.0, "message": f"{parameter} of {asset} is {state.lower()}",
            "changed_by": None, "quality": "GOOD", "classification": "ALARM",
            "timestamps": {"device_time": T0 + timedelta(minutes=minute), "gateway_time": T0},
            "clock_skew_ms": None, "metadata": {}}  # fmt: skip


def config(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "destinations": {
            "oncall": {"kind": "pagerduty", "routing_key": "R0UT1NGKEY", "url": f"{url}/pagerduty"},
            "chat": {"kind": "slack", "url": f"{url}/slack"},
        },
        "routes": [
            {"severities": ["CRITICAL", "HIGH"], "destinations": ["oncall", "chat"]},
            {"severities": ["MEDIUM", "LOW"], "destinations": ["chat"], "digest_interval_s": 60},
        ],
        **extra,
    }


async def test_routes_by_severity_pagerduty_follows_the_alarm_digests_and_no_repeat_after_a_restart(
    services: tuple[Services, str],
) -> None:
    state, url = services
    clock = ManualClock()
    transitions = [alarm("hi|tank_1|level", "ACTIVE", "HIGH", 0), alarm("hi|tank_1|level", "ACKNOWLEDGED", "HIGH", 1),
                   alarm("hi|tank_1|level", "CLEARED", "HIGH", 2), alarm("warm|pump_3|temp", "ACTIVE", "MEDIUM", 3),
                   alarm("drift|pump_4|flow", "ACTIVE", "LOW", 4)]  # fmt: skip
    async with NodeHarness(AlertRouter, config(url), "router", clock=clock) as router:
        messages = await router.messages(transitions, topic="alarms.clean")
        assert await router.write_messages(messages) == []
        events = state.received["pagerduty"]
        assert [(e["event_action"], e["dedup_key"]) for e in events] == [
            ("trigger", "hi|tank_1|level"),
            ("acknowledge", "hi|tank_1|level"),
            ("resolve", "hi|tank_1|level"),
        ]
        assert events[0]["routing_key"] == "R0UT1NGKEY" and events[0]["payload"]["severity"] == "error"
        assert len(state.received["slack"]) == 3  # HIGH at once; MEDIUM and LOW wait for their digest
        assert router.node.retained() == {("alarms.clean", 0): messages[3].offset}  # held until the digest is sent
        await clock.advance(61)
        await router.sink_tick()
        digest = state.received["slack"][-1]["text"]
        assert digest.startswith("2 alarm transitions:") and "pump_3" in digest and "pump_4" in digest
        assert router.node.retained() == {}
        await router.restart()  # a new instance, its memory of what it sent restored from the changelog
        assert await router.write_messages(messages) == []  # the whole replay
        await clock.advance(61)
        await router.sink_tick()
    assert len(events) == 3 and len(state.received["slack"]) == 4  # nobody was paged or messaged twice


async def test_a_digest_survives_a_restart_and_goes_out_on_its_schedule(services: tuple[Services, str]) -> None:
    state, url = services
    clock = ManualClock()
    async with NodeHarness(AlertRouter, config(url), "router", clock=clock) as router:
        messages = await router.messages([alarm("warm|pump_3|temp", "ACTIVE", "MEDIUM", 0)], topic="alarms.clean")
        await router.write_messages(messages)
        await clock.advance(40)
        await router.restart()  # a crash 40 s into the 60 s interval: the held transition is replayed
        await router.write_messages(messages)
        await clock.advance(21)
        await router.sink_tick()
        assert len(state.received["slack"]) == 1  # 61 s after the transition, not 60 s after the restart
        await clock.advance(120)
        await router.sink_tick()
    assert len(state.received["slack"]) == 1


async def test_a_failing_destination_is_retried_and_a_refusal_is_a_dead_letter(services: tuple[Services, str]) -> None:
    state, url = services
    settings = config(url)
    settings["destinations"]["tickets"] = {"kind": "webhook", "url": f"{url}/hook", "bearer_token": "t0k"}
    settings["routes"][0]["destinations"].append("tickets")
    async with NodeHarness(AlertRouter, settings, "router") as router:
        messages = await router.messages([alarm("hi|tank_2|level", "ACTIVE", "CRITICAL", 0)], topic="alarms.clean")
        state.fail["slack"] = [503]
        with pytest.raises(PeerUnavailable, match="503"):
            await router.write_messages(messages)  # PagerDuty had it already; Slack did not
        state.fail["hook"] = [422]
        (letter,) = await router.write_messages(messages)  # the retry: Slack now; the webhook refuses for good
    assert len(state.received["pagerduty"]) == 1 and len(state.received["slack"]) == 1
    assert letter["reasons"][0]["code"] == "http_422" and "hook says no" in letter["reasons"][0]["message"]


async def test_email_over_starttls(smtp: tuple[Mailbox, int, Path]) -> None:
    mailbox, port, ca = smtp
    email = {"kind": "email", "host": "127.0.0.1", "port": port, "ca_file": str(ca), "sender": "gateway@plant.example",
             "to": ["shift-lead@plant.example"]}  # fmt: skip
    settings = {"destinations": {"lead": email}, "routes": [{"severities": ["CRITICAL"], "destinations": ["lead"]}]}
    async with NodeHarness(AlertRouter, settings, "router") as router:
        await router.write([alarm("crit|boiler_1|pressure", "ACTIVE", "CRITICAL", 0)])  # refused without STARTTLS
    ((recipients, message),) = mailbox.messages
    assert recipients == ["shift-lead@plant.example"]
    assert message["Subject"] == "[CRITICAL] ACTIVE: crit|boiler_1|pressure"
    assert "pressure of boiler_1 is active" in message.get_payload()


def test_a_route_to_an_unknown_destination_is_refused() -> None:
    with pytest.raises(ValueError, match=r"routes\[0\] names \['pager'\]"):
        AlertRouter.Config.model_validate(
            {
                "destinations": {"chat": {"kind": "slack", "url": "https://x"}},
                "routes": [{"severities": ["HIGH"], "destinations": ["pager"]}],
            }
        )
