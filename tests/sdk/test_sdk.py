"""The node SDK's one import, and the points where the harness and a gateway must agree (tick, ports, commands)."""

from __future__ import annotations

import ast
import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

import streamforge.sdk as sdk
from streamforge.engine.scaffold import render_node_package
from streamforge.sdk import (
    Message,
    NodeConfig,
    NodeHarness,
    Port,
    PortType,
    ProcessorNode,
    Record,
    SinkConfig,
    SinkNode,
    SourceNode,
    telemetry,
)

READING = telemetry("pump_1", "pressure", 5.0, device_time=datetime(2026, 5, 1, 8, 0).astimezone())


def test_the_sdk_exports_what_it_names_and_the_scaffold_imports_nothing_else() -> None:
    assert sorted(sdk.__all__) == sorted(
        name for name in vars(sdk) if not name.startswith("_") and name != "annotations"
    )
    for kind in ("processor", "source", "sink"):
        for path, text in render_node_package("probe", kind).items():
            if not path.endswith(".py"):
                continue
            imported = {node.module for node in ast.walk(ast.parse(text)) if isinstance(node, ast.ImportFrom)}
            ours = {module for module in imported if module and module.startswith("streamforge.")}
            assert ours <= {"streamforge.sdk"}, (kind, path, ours)


def test_the_scaffolded_sink_has_connection_and_circuit_settings() -> None:
    text = render_node_package("probe", "sink")["streamforge_node_probe/node.py"]
    assert "class ProbeConfig(SinkConfig)" in text
    assert {"connection", "circuit"} <= set(SinkConfig.model_fields)


def test_an_output_typed_any_is_refused_where_the_class_is_written() -> None:
    """A gateway has no topic for an `any` output; the harness used to accept one."""
    with pytest.raises(TypeError, match="output port\\(s\\) out must have a record type"):

        class Passthrough(ProcessorNode[NodeConfig]):
            type = "test_passthrough"
            inputs = (Port("in", PortType.ANY),)  # inputs may take any type
            outputs = (Port("out", PortType.ANY, "telemetry.raw"),)


class Args(BaseModel):
    user: str


@pytest.mark.parametrize("base", [SinkNode, SourceNode])
def test_commands_on_a_source_or_sink_are_refused_where_the_class_is_written(base: type[Any]) -> None:
    """A gateway runs commands between a processor's batches only; the harness used to run them on any kind."""
    with pytest.raises(TypeError, match="only processors take operator commands"):

        class Commanded(base[NodeConfig]):  # type: ignore[misc]
            type = "test_commanded"
            commands: ClassVar[dict[str, builtins.type[BaseModel]]] = {"reset": Args}


class Buffering(SinkNode[SinkConfig]):
    """Holds what it is given until a tick flushes it; a KeyError on a record without `value`."""

    type = "test_buffering"
    inputs = (Port("in", PortType.TELEMETRY),)

    async def start(self) -> None:
        self.held: list[Message] = []
        self.ticks = 0
        self.flushed: list[Record] = []

    async def write(self, batch: Sequence[Message]) -> Sequence[Record] | None:
        for message in batch:
            if message.record["quality"] == "BAD":
                return [self.dead_letter(message, "bad_quality", "a BAD reading is not stored", "/quality")]
            message.record["no such field"]  # a bug when a record arrives: KeyError
        return None

    async def tick(self, now: datetime) -> Sequence[Record] | None:
        self.ticks += 1
        self.flushed += [message.record for message in self.held]
        self.held.clear()
        return None

    def retained(self) -> dict[tuple[str, int], int]:
        return {(m.topic, m.partition): m.offset for m in self.held[:1]}


async def test_a_sink_ticks_only_while_it_holds_unwritten_records_as_in_a_gateway() -> None:
    async with NodeHarness(Buffering, {}) as h:
        assert await h.sink_tick() == [] and h.node.ticks == 0  # holds nothing: a gateway would not tick it
        h.node.held += await h.messages([READING])
        await h.sink_tick()
        assert h.node.ticks == 1 and len(h.node.flushed) == 1


async def test_a_sinks_programming_error_fails_it_instead_of_looking_like_an_outage() -> None:
    """In a gateway a KeyError fails the node with its traceback (test_sink_bugs); here it is raised as is, and the
    connection is not dropped and retried as for an outage."""
    async with NodeHarness(Buffering, {}) as h:
        with pytest.raises(KeyError, match="no such field"):
            await h.write([READING])
        assert h.link.connected


async def test_a_dead_letter_in_one_call() -> None:
    async with NodeHarness(Buffering, {}, node_id="store") as h:
        (letter,) = await h.write([{**READING, "quality": "BAD"}])
        assert letter["node_id"] == "store" and letter["reasons"] == [
            {"code": "bad_quality", "field": "/quality", "message": "a BAD reading is not stored"}]  # fmt: skip
        assert letter["payload"] and h.captured["dlq"] == [letter]
