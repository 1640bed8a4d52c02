"""The flow service's checks: off the event loop, on its check threads, bounded in time (issue #41, V3)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import field_validator

from streamforge.engine.flow import parse_flow
from streamforge.engine.node_types import load_node_types
from streamforge.engine.sdk import Emitted, Message, NodeConfig, Port, PortType, ProcessorNode
from streamforge.runtime.control_plane import service
from streamforge.runtime.control_plane.app import ControlPlane
from streamforge.runtime.errors import ApiError
from tests.eventually import eventually

CHECKED_ON: list[str] = []  # the thread each probe config was validated on
GATES: dict[str, threading.Event] = {}  # a probe config whose `gate` is named here waits for that event


class ProbeConfig(NodeConfig):
    gate: str = ""

    @field_validator("gate")
    @classmethod
    def _record(cls, gate: str) -> str:
        CHECKED_ON.append(threading.current_thread().name)
        if gate:
            GATES[gate].wait(timeout=60)
        return gate


class Probe(ProcessorNode[ProbeConfig]):
    """A node type whose config validation says where the compiler ran, and can be held there."""

    type = "probe"
    inputs = (Port("in", PortType.ANY, required=False),)

    async def process(self, batch: Sequence[Message]) -> Emitted:
        return {}


@pytest.fixture
def flows(tmp_path: Path) -> Iterator[service.FlowService]:
    registry = load_node_types(include_plugins=False)
    registry.register(Probe, "test")
    CHECKED_ON.clear()
    yield ControlPlane.open(tmp_path, registry).flows
    for gate in GATES.values():
        gate.set()
    GATES.clear()


def probe_flow(gate: str = "") -> dict[str, Any]:
    return {"id": "probed", "nodes": [{"id": "p", "type": "probe", "config": {"gate": gate}}], "edges": []}


async def test_a_flow_is_compiled_on_a_check_thread_not_the_event_loop(flows: service.FlowService) -> None:
    """V3: /changes compiled on the event loop, so one big flow stalled every request; checks now run on the
    service's check threads."""
    assert await flows.problems(parse_flow(probe_flow())) == []
    answer = await flows.changes("probed", probe_flow())
    assert answer["problems"] == [] and answer["modified"] == ["p"]
    assert CHECKED_ON and all(name.startswith("flow-check") for name in CHECKED_ON), CHECKED_ON


async def test_a_check_past_its_time_bound_is_a_503_and_one_still_waiting_never_runs(
    flows: service.FlowService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """V3: an answer never waits longer than the bound, and work queued behind the slow checks is dropped."""
    monkeypatch.setattr(service, "CHECK_TIMEOUT_S", 0.5)
    GATES.update({name: threading.Event() for name in ("first", "second", "queued")})
    held = [asyncio.create_task(flows.problems(parse_flow(probe_flow(name)))) for name in ("first", "second")]
    await eventually(lambda: len(CHECKED_ON) == service.CHECK_THREADS, what="both check threads held")
    with pytest.raises(ApiError) as refused:
        await flows.problems(parse_flow(probe_flow("queued")))
    assert (refused.value.status, refused.value.code) == (503, "busy")
    assert refused.value.message.startswith("checking the flow took longer than 0.5 s")
    for task in held:
        with pytest.raises(ApiError):
            await task
    GATES["first"].set()
    GATES["second"].set()
    assert await flows.problems(parse_flow(probe_flow())) == []  # the threads are free again
    assert len(CHECKED_ON) == service.CHECK_THREADS + 1  # the queued check was never started
