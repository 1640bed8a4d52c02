"""Flow documents: validation with located problems, canonical dump, diff that ignores moves."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streamforge.engine.flow import (
    MAX_DOCUMENT_BYTES,
    MAX_EDGES,
    MAX_NODES,
    diff_flows,
    dump_flow,
    flow_json_schema,
    load_flow,
    validate_flow,
)
from streamforge.engine.problems import FlowInvalid


def doc(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "format": "streamforge.flow/v1",
        "id": "line_1",
        "label": "Line 1",
        "version": 3,
        "nodes": [
            {"id": "sim", "type": "simulator", "name": "Sim", "x": 120, "y": 80,
             "config": {"signals": [{"asset_id": "a", "parameter": "p"}]}},
            {"id": "val", "type": "validator", "x": 300, "y": 80, "config": {}},
        ],
        "edges": [{"from": "sim:out", "to": "val:in"}],
    }  # fmt: skip
    return {**base, **changes}


def problems_of(raw: Any) -> list[tuple[str, str]]:
    with pytest.raises(FlowInvalid) as caught:
        if isinstance(raw, str | bytes):
            load_flow(raw)  # the schema only: compile_flow reports the rest, all at once
        else:
            validate_flow(raw)
    return [(p.code, p.pointer) for p in caught.value.problems]


def test_canonical_dump_is_stable_and_round_trips() -> None:
    shuffled = doc(nodes=list(reversed(doc()["nodes"])))
    text = dump_flow(load_flow(json.dumps(shuffled)))
    assert text == dump_flow(load_flow(json.dumps(doc())))
    assert dump_flow(load_flow(text)) == text
    assert text.index('"id": "sim"') < text.index('"id": "val"')
    assert '    {"from": "sim:out", "to": "val:in"}' in text
    assert '"x": 120,' in text  # integers stay integers


def test_every_problem_is_reported_with_its_pointer() -> None:
    raw = doc(
        nodes=[{"id": "sim", "type": "simulator"}, {"id": "sim", "type": "validator"}, {"id": "9bad", "type": ""}],
        edges=[{"from": "sim:out", "to": "ghost:in"}, {"from": "sim", "to": "val:in"}],
        extra=1,
    )
    found = problems_of(raw)
    assert ("invalid_document", "/nodes/2/id") in found
    assert ("invalid_document", "/nodes/2/type") in found
    assert ("invalid_document", "/edges/1/from") in found
    assert ("invalid_document", "/extra") in found


def test_structural_problems_are_all_reported() -> None:
    raw = doc(
        nodes=[{"id": "sim", "type": "simulator"}, {"id": "sim", "type": "validator"}],
        edges=[{"from": "sim:out", "to": "ghost:in"}, {"from": "sim:out", "to": "ghost:in"}],
    )
    assert problems_of(raw) == [
        ("duplicate_node_id", "/nodes/1/id"),
        ("unknown_node", "/edges/0/to"),
        ("duplicate_edge", "/edges/1"),
        ("unknown_node", "/edges/1/to"),
    ]


def test_malformed_json_and_oversized_documents() -> None:
    with pytest.raises(FlowInvalid) as malformed:
        load_flow('{"id": "x",}')
    (problem,) = malformed.value.problems
    assert problem.code == "malformed_json" and "line 1, column 12" in problem.message
    with pytest.raises(FlowInvalid) as oversized:
        load_flow(json.dumps(doc(label="x" * (10 * 1024 * 1024))))
    (problem,) = oversized.value.problems
    assert problem.code == "too_large" and f"{MAX_DOCUMENT_BYTES:,}" in problem.message


def test_a_document_over_the_caps_is_refused_by_its_counts_alone() -> None:
    """V3: every way a document comes in (stored, saved, imported) counts its nodes and wires first: one problem
    each, located, saying the limit; the nodes' own errors are not even looked at."""
    nodes = [{"id": f"n{i}", "type": "validator", "x": "not a number"} for i in range(MAX_NODES + 1)]
    edges = [{"from": "a:out", "to": "b:in"}] * (MAX_EDGES + 1)
    with pytest.raises(FlowInvalid) as caught:
        load_flow(json.dumps(doc(nodes=nodes, edges=edges)))
    assert [(p.code, p.pointer, p.message, p.hint) for p in caught.value.problems] == [
        ("too_many_nodes", "/nodes", f"the flow has {MAX_NODES + 1:,} nodes; a flow holds at most {MAX_NODES:,}",
         "split it into several flows"),
        ("too_many_edges", "/edges", f"the flow has {MAX_EDGES + 1:,} edges; a flow holds at most {MAX_EDGES:,}",
         "split it into several flows"),
    ]  # fmt: skip
    at_the_caps = doc(
        nodes=[{"id": f"n{i}", "type": "validator"} for i in range(MAX_NODES)],
        edges=[{"from": f"n{i % MAX_NODES}:clean", "to": f"n{i // MAX_NODES}:in"} for i in range(MAX_EDGES)],
    )
    assert len(validate_flow(at_the_caps).edges) == MAX_EDGES  # fmt: skip


def test_diff_ignores_moves_and_reports_the_rest() -> None:
    old = validate_flow(doc())
    new_raw = doc()
    new_raw["nodes"][0]["x"] = 999  # moved: not a change
    new_raw["nodes"][1]["config"] = {"gap_factor": 3}
    new_raw["nodes"].append({"id": "agg", "type": "aggregator"})
    new_raw["edges"] = [{"from": "sim:out", "to": "agg:in"}]
    new_raw["label"] = "relabelled"
    diff = diff_flows(old, validate_flow(new_raw))
    assert diff.to_dict() == {
        "label": {"old": old.label, "new": "relabelled"},
        "nodes": {"added": ["agg"], "removed": [],
                  "changed": {"val": [{"field": "config/gap_factor", "old": None, "new": 3}]}},
        "edges": {"added": ["sim:out -> agg:in"], "removed": ["sim:out -> val:in"]},
    }  # fmt: skip
    moved = doc()
    moved["nodes"][0]["y"] = -5
    assert diff_flows(old, validate_flow(moved)).empty


def test_json_schema_describes_the_document() -> None:
    schema = flow_json_schema()
    assert schema["title"] == "StreamForge flow document"
    assert set(schema["required"]) >= {"id"}
    assert "from" in json.dumps(schema["$defs"]["EdgeSpec"])
