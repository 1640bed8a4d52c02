"""Compiler: every problem at once with node, port and pointer; a plan with topics, groups and processes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streamforge.engine.compiler import compile_document, compile_flow
from streamforge.engine.flow import MAX_EDGES, MAX_NODES, validate_flow
from streamforge.engine.node_types import load_node_types
from streamforge.engine.plan import ExecutionPlan
from streamforge.engine.problems import MAX_PROBLEMS, FlowInvalid
from tests.engine.samples import fully_wired

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


@pytest.mark.parametrize("count", [4, 12])
def test_fully_wired_nodes_are_one_cycle_problem_not_every_cycle(count: int) -> None:
    """V3: every simple cycle was listed (exponential: 9 fully wired validators took 5.6 s and answered 23.6 MB);
    a strongly connected component is now one problem: a shortest cycle in it to break, and its nodes."""
    with pytest.raises(FlowInvalid) as caught:
        compile_document(fully_wired("f1", count), REGISTRY)
    (cycle,) = caught.value.problems
    assert (cycle.code, cycle.pointer, cycle.node_id) == ("cycle", "/edges/0", "v00")
    assert cycle.message.startswith(f"cycle v00 -> v00: records would loop forever; {count} nodes feed each other: ")
    named = "v00, v01, v02, v03" if count == 4 else "v00, v01, v02, v03, v04, v05, v06, v07, v08, v09 and 2 more"
    assert cycle.message.endswith(named)
    assert len(json.dumps([p.to_dict() for p in caught.value.problems])) < 1_000


def test_each_strongly_connected_component_is_one_cycle_problem_at_one_of_its_wires() -> None:
    """V3: two loops joined one way are two problems; a node wired to itself is one."""
    doc = flow(
        [{"id": name, "type": "validator"} for name in ("a", "b", "c", "d", "e", "f")],
        [("a:clean", "b:in"), ("b:clean", "c:in"), ("c:clean", "a:in"), ("c:events", "d:in"), ("d:clean", "e:in"),
         ("e:clean", "d:in"), ("f:clean", "f:in")],
    )  # fmt: skip
    with pytest.raises(FlowInvalid) as caught:
        compile_flow(doc, REGISTRY)
    cycles = [(p.pointer, p.node_id, p.message) for p in caught.value.problems if p.code == "cycle"]
    assert cycles == [
        ("/edges/0", "a", "cycle a -> b -> c -> a: records would loop forever"),
        ("/edges/4", "d", "cycle d -> e -> d: records would loop forever"),
        ("/edges/6", "f", "cycle f -> f: records would loop forever"),
    ]


def test_a_long_cycle_is_named_in_a_bounded_message() -> None:
    """V3: a message names at most 10 nodes of a cycle, then how many more."""
    names = [f"n{i:04d}" for i in range(MAX_NODES)]
    ring = flow([{"id": name, "type": "validator"} for name in names],
                [(f"{a}:clean", f"{b}:in") for a, b in zip(names, names[1:] + names[:1], strict=True)])  # fmt: skip
    with pytest.raises(FlowInvalid) as caught:
        compile_flow(ring, REGISTRY)
    (cycle,) = caught.value.problems
    assert cycle.message == (f"cycle {' -> '.join(names[:10])} -> (1,990 more) -> n0000: records would loop forever")


def test_a_flow_over_the_node_or_wire_cap_is_refused_before_any_other_check() -> None:
    """V3: 50,000 nodes held the control plane for minutes; now the count alone refuses them, located."""
    nodes = [{"id": f"n{i}", "type": "validator"} for i in range(50_000)]
    with pytest.raises(FlowInvalid) as caught:
        compile_document({"id": "f1", "nodes": nodes, "edges": []}, REGISTRY)
    assert [p.to_dict() for p in caught.value.problems] == [{
        "code": "too_many_nodes", "message": f"the flow has 50,000 nodes; a flow holds at most {MAX_NODES:,}",
        "pointer": "/nodes", "hint": "split it into several flows"}]  # fmt: skip
    edges = [{"from": "a:clean", "to": "b:in"}] * (MAX_EDGES + 1)
    with pytest.raises(FlowInvalid) as caught:
        compile_document({"id": "f1", "nodes": nodes[:2], "edges": edges}, REGISTRY)
    (problem,) = caught.value.problems
    assert (problem.code, problem.pointer) == ("too_many_edges", "/edges")
    assert problem.message == f"the flow has {MAX_EDGES + 1:,} edges; a flow holds at most {MAX_EDGES:,}"


def test_an_answer_lists_at_most_max_problems_then_how_many_more() -> None:
    """V3: a flow of many broken nodes answers a bounded list, the last entry counting what is not shown."""
    unwired = flow([{"id": f"v{i:03d}", "type": "validator"} for i in range(MAX_PROBLEMS + 100)], [])
    with pytest.raises(FlowInvalid) as caught:
        compile_flow(unwired, REGISTRY)
    problems = caught.value.problems
    assert caught.value.total == MAX_PROBLEMS + 100 and len(problems) == MAX_PROBLEMS + 1
    assert {p.code for p in problems[:-1]} == {"dangling_port"} and problems[-2].node_id == f"v{MAX_PROBLEMS - 1:03d}"
    assert (problems[-1].code, problems[-1].message) == ("more_problems", "100 more problems not shown (300 in all)")
