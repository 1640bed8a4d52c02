"""Compiler: every problem at once with node, port and pointer; a plan with topics, groups and processes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streamforge.engine.compiler import compile_flow
from streamforge.engine.flow import validate_flow
from streamforge.engine.node_types import load_node_types
from streamforge.engine.plan import ExecutionPlan
from streamforge.engine.problems import FlowInvalid

REGISTRY = load_node_types(include_plugins=False)
SIM = {"signals": [{"asset_id": "a", "parameter": "p"}]}


def flow(nodes: list[dict[str, Any]], edges: list[tuple[str, str]]) -> Any:
    return validate_flow({"id": "f1", "nodes": nodes, "edges": [{"from": a, "to": b} for a, b in edges]})


def test_plan_places_nodes_and_names_topics_and_groups() -> None:
    doc = flow(
        [{"id": "sim", "type": "simulator", "config": SIM}, {"id": "val", "type": "validator"},
         {"id": "agg", "type": "aggregator", "config": {"resolutions": ["1s"]}}],
        [("sim:out", "val:in"), ("val:clean", "agg:in")],
    )  # fmt: skip
    plan = compile_flow(doc, REGISTRY)
    assert [n.node_id for n in plan.nodes] == ["sim", "val", "agg"]
    assert plan.processes == {"worker:sim": ["sim"], "gateway": ["val", "agg"]}
    val = plan.node("val")
    assert val.consumer_group == "sf.f1.val"
    assert [(i.topic, i.upstream) for i in val.inputs] == [("telemetry.raw", ("sim",))]
    assert [(o.port, o.topic) for o in val.outputs] == [
        ("clean", "telemetry.clean"), ("dlq", "dlq.telemetry"), ("events", "events.clean")]  # fmt: skip
    assert plan.node("sim").consumer_group is None
    assert plan.node("agg").config["resolutions"] == ["1s"]
    assert "telemetry.1s" in plan.topics
    changed = flow(
        [{"id": "sim", "type": "simulator", "config": SIM}, {"id": "val", "type": "validator"},
         {"id": "agg", "type": "aggregator", "config": {"resolutions": ["1min"]}}],
        [("sim:out", "val:in"), ("val:clean", "agg:in")],
    )  # fmt: skip
    again = compile_flow(changed, REGISTRY)
    assert again.node("val").fingerprint == val.fingerprint
    assert again.node("agg").fingerprint != plan.node("agg").fingerprint


def test_a_plan_holds_configs_packed_and_travels_as_text() -> None:
    """A plan lives as long as its flow runs: a 10,000-signal simulator's config is 1 MB as JSON text, held packed."""
    signals = [{"asset_id": f"line_{i // 100:03d}_sensor_{i % 100:02d}", "parameter": "temperature"}
               for i in range(10_000)]  # fmt: skip
    plan = compile_flow(flow([{"id": "sim", "type": "simulator", "config": {"signals": signals}}], []), REGISTRY)
    sim = plan.node("sim")
    assert len(sim.config_packed) * 10 < len(sim.config_json.encode())
    wire = json.loads(json.dumps(plan.to_wire()))  # as it goes to a worker or comes from the compiling child
    assert "config_packed" not in wire["nodes"][0] and json.loads(wire["nodes"][0]["config_json"]) == sim.config
    assert ExecutionPlan.from_wire(wire) == plan
    assert [s["asset_id"] for s in plan.to_dict()["nodes"][0]["config"]["signals"]] == [s["asset_id"] for s in signals]


def test_every_problem_at_once() -> None:
    doc = flow(
        [
            {"id": "sim", "type": "simulator", "config": {"signals": [], "rate_hz": -1}},
            {"id": "what", "type": "teleporter"},
            {"id": "val", "type": "validator"},
            {"id": "agg", "type": "aggregator"},
            {"id": "val2", "type": "validator"},
        ],
        [("sim:out", "val:nope"), ("val:dlq", "agg:in"), ("val:clean", "agg:in"), ("agg:agg_1s", "val2:in"),
         ("val2:clean", "val:in")],
    )  # fmt: skip
    with pytest.raises(FlowInvalid) as caught:
        compile_flow(doc, REGISTRY)
    found = {(p.code, p.pointer, p.node_id, p.port) for p in caught.value.problems}
    assert ("invalid_config", "/nodes/0/config/signals", "sim", None) in found
    assert ("invalid_config", "/nodes/0/config/rate_hz", "sim", None) in found
    assert ("unknown_type", "/nodes/1/type", "what", None) in found
    assert ("unknown_port", "/edges/0/to", "val", "nope") in found
    assert ("type_mismatch", "/edges/1", "agg", "in") in found
    assert ("type_mismatch", "/edges/3", "val2", "in") in found
    cycles = [p for p in caught.value.problems if p.code == "cycle"]
    assert len(cycles) == 1
    assert set(cycles[0].message.split(":")[0].removeprefix("cycle ").split(" -> ")) == {"val", "agg", "val2"}
    mismatch = next(p for p in caught.value.problems if p.code == "type_mismatch")
    assert mismatch.message == "val:dlq carries dlq but agg:in accepts telemetry"
    unknown = next(p for p in caught.value.problems if p.code == "unknown_type")
    assert "simulator" in (unknown.hint or "")


def test_dangling_required_input() -> None:
    doc = flow([{"id": "val", "type": "validator"}], [])
    with pytest.raises(FlowInvalid) as caught:
        compile_flow(doc, REGISTRY)
    (problem,) = caught.value.problems
    assert (problem.code, problem.pointer, problem.node_id, problem.port) == ("dangling_port", "/nodes/0", "val", "in")
