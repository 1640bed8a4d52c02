"""The alarm uplink on a real broker: every transition reaches the control plane's store exactly as the alarm stream
has it, through a control plane that refuses for a while and an uplink killed mid-stream."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

import pytest

from streamforge.engine.compiler import compile_flow
from streamforge.engine.flow import validate_flow
from streamforge.engine.node_types import load_node_types
from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.runtime.control_plane.alarms import AlarmFilter, AlarmStore
from streamforge.runtime.control_plane.store import Store
from streamforge.runtime.gateway.gateway import Gateway
from streamforge.runtime.gateway.operations import alarm_uplink
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from tests.eventually import eventually
from tests.kafka_reading import read_from

T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
STEPS = 40  # periods of a step signal, alternately over and under the limit


@pytest.mark.timeout(300)
async def test_every_transition_reaches_the_store_once_through_refusals_and_a_killed_uplink(
    gateway: Gateway, kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str
) -> None:
    flow = unique.replace("-", "_")[:60]
    signals = [{"asset_id": f"tank_{i}", "parameter": "level", "shape": "step", "offset": 1, "amplitude": 4,
                "period_s": 1} for i in range(3)]  # fmt: skip
    doc = {"id": flow, "nodes": [
        {"id": "sim", "type": "simulator", "config": {"signals": signals, "rate_hz": 4, "realtime": False,
                                                      "limit": STEPS * 4, "start_time": T0.isoformat()}},
        {"id": "high", "type": "alarm_rule", "config": {"rule_id": "level_high", "parameter": "level", "high": 3}},
    ], "edges": [{"from": "sim:out", "to": "high:in"}]}  # fmt: skip
    await gateway.deploy(compile_flow(validate_flow(doc), load_node_types(include_plugins=False)))
    expected = 3 * (STEPS - 1)  # per tank: ACTIVE at each step up, RTN_UNACK at each step down after it
    streamed = await read_from(kafka, registry, "alarms.clean", flow, "high", expected)
    assert len(streamed) == expected

    alarms = AlarmStore(Store())
    calls = {"n": 0, "posted": 0}

    async def post(events: list[dict[str, Any]]) -> None:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise ConnectionError("control plane unreachable")  # away for a while: nothing may be skipped
        await asyncio.sleep(0.05)
        alarms.record("gw_test", events)
        calls["posted"] += len(events)

    def stored() -> int:
        return sum(len(alarms.history("gw_test", flow, "high", a["alarm_id"], 10_000))
                   for a in alarms.alarms(AlarmFilter(flow=flow)))  # fmt: skip

    gateway_id = f"test-{flow}"
    first = asyncio.create_task(alarm_uplink(gateway, gateway_id, post))
    await eventually(lambda: calls["posted"] > 0, 60, 0.05, what="a first stored batch")
    first.cancel()  # killed between a store and its commit, perhaps: the next one replays
    with contextlib.suppress(asyncio.CancelledError):
        await first
    second = asyncio.create_task(alarm_uplink(gateway, gateway_id, post))
    try:
        await eventually(lambda: stored() >= expected, 90, 0.2, what="every transition in the store")
        await asyncio.sleep(1)
    finally:
        second.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await second
    assert stored() == expected  # once each, however often the uplink sent them
    by_event = {r["event_id"]: r["state"] for r in streamed}
    for latest in alarms.alarms(AlarmFilter(flow=flow)):
        history = alarms.history("gw_test", flow, "high", latest["alarm_id"], 10_000)
        assert {h["event_id"]: h["state"] for h in history}.items() <= by_event.items()
        assert latest["event_id"] == max((e for e in by_event if e.startswith(latest["alarm_id"] + "#")),
                                         key=lambda e: int(e.rpartition(".")[2]))  # fmt: skip


@pytest.mark.timeout(300)
async def test_an_alarm_raised_while_its_flow_is_still_deploying_reaches_the_store(
    gateway: Gateway, kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str
) -> None:
    """The first source starts while the second's worker process is still starting: an alarm its readings raise
    then is its gateway's, though the deploy has not finished (it was dropped and its offset committed)."""
    flow = unique.replace("-", "_")[:60]
    signals = [{"asset_id": f"tank_{i}", "parameter": "level", "shape": "step", "offset": 5, "amplitude": 0,
                "period_s": 1} for i in range(5)]  # fmt: skip
    sim = {"signals": signals, "rate_hz": 100, "realtime": False, "limit": 1, "start_time": T0.isoformat()}
    doc = {"id": flow, "nodes": [
        {"id": "sim", "type": "simulator", "config": sim},
        {"id": "high", "type": "alarm_rule", "config": {"rule_id": "level_high", "parameter": "level", "high": 3}},
        *({"id": f"other_{i}", "type": "simulator", "config": {**sim, "signals": signals[:1]}} for i in range(3)),
    ], "edges": [{"from": "sim:out", "to": "high:in"}]}  # fmt: skip
    alarms = AlarmStore(Store())

    async def post(events: list[dict[str, Any]]) -> None:
        alarms.record("gw_test", events)

    uplink = asyncio.create_task(alarm_uplink(gateway, f"test-{flow}", post))
    try:
        await asyncio.sleep(2)  # the uplink is up and reading before the deploy starts
        await gateway.deploy(compile_flow(validate_flow(doc), load_node_types(include_plugins=False)))
        streamed = await read_from(kafka, registry, "alarms.clean", flow, "high", len(signals))
        assert {r["state"] for r in streamed} == {"ACTIVE"}
        await eventually(lambda: len(alarms.alarms(AlarmFilter(flow=flow))) == len(signals), 30, 0.2,
                         what="every alarm raised during the deploy in the store")  # fmt: skip
    finally:
        uplink.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await uplink
