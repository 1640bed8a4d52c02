"""The flow document `streamforge.flow/v1`: model, JSON Schema, loading, canonical dump and diff."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamforge.engine.json_input import JsonRefused, parse_json
from streamforge.engine.problems import FlowInvalid, Problem, pointer_of

FORMAT: Final = "streamforge.flow/v1"
MAX_DOCUMENT_BYTES = 2 * 1024 * 1024  # a flow of thousands of nodes fits; anything larger is a mistake
# How many nodes and wires a flow holds, counted before anything else looks at a document (issue #41, V3: 50,000
# nodes held the control plane for minutes). A flow is one line or cell: the shipped ones have 3 and 7 nodes, and a
# plant's thousands of signals live in a source's config (a 10,000-signal simulator is one node), not in nodes. At
# 2,000 nodes a canvas is far past what anyone edits by hand, and a valid flow at both caps compiles in under a second
# of CPU (0.6-0.8 s here; bench/bench_changes.py). Five wires a node on average is generous: every source fanned out
# to a few processors.
MAX_NODES: Final = 2_000
MAX_EDGES: Final = 10_000
MAX_VERSION = 2**53 - 1  # what SQLite and every JSON reader hold exactly
ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$"
ENDPOINT_PATTERN = r"^[A-Za-z][A-Za-z0-9_\-]{0,63}:[a-z][a-z0-9_]{0,31}$"


class NodeSpec(BaseModel):
    """One node as stored: identity, type, canvas position and its type's config."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN, description="Unique within the flow; used in topics and consumer groups")
    type: str = Field(min_length=1, description="A registered node type, e.g. modbus_tcp")
    name: str = Field(default="", description="Label on the canvas")
    x: float = Field(default=0, description="Canvas position; not a change when moved")
    y: float = Field(default=0, description="Canvas position; not a change when moved")
    config: dict[str, Any] = Field(default_factory=dict, description="Validated by the type's config model")


class EdgeSpec(BaseModel):
    """A wire from an output port to an input port, written `node:port`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str = Field(alias="from", pattern=ENDPOINT_PATTERN)
    target: str = Field(alias="to", pattern=ENDPOINT_PATTERN)

    @property
    def source_node(self) -> str:
        return self.source.partition(":")[0]

    @property
    def source_port(self) -> str:
        return self.source.partition(":")[2]

    @property
    def target_node(self) -> str:
        return self.target.partition(":")[0]

    @property
    def target_port(self) -> str:
        return self.target.partition(":")[2]

    def key(self) -> tuple[str, str]:
        return (self.source, self.target)


class FlowDocument(BaseModel):
    """A versioned flow: nodes and edges kept apart, so a rewire is not a node change."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["streamforge.flow/v1"] = FORMAT
    id: str = Field(pattern=ID_PATTERN)
    label: str = ""
    version: int = Field(default=0, ge=0, le=MAX_VERSION, description="Assigned by the store on every save")
    nodes: list[NodeSpec] = Field(default_factory=list)
    edges: list[EdgeSpec] = Field(default_factory=list)

    def node(self, node_id: str) -> NodeSpec | None:
        return next((node for node in self.nodes if node.id == node_id), None)


def flow_json_schema() -> dict[str, Any]:
    """JSON Schema of the document (the type-specific `config` objects are described per node type)."""
    schema = FlowDocument.model_json_schema(by_alias=True)
    schema["$id"] = "https://streamforge.dev/schemas/streamforge.flow/v1.json"
    schema["title"] = "StreamForge flow document"
    return schema


def structural_problems(doc: FlowDocument) -> list[Problem]:
    """Checks the schema cannot express: unique node ids, unique edges, edges to known nodes."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, node in enumerate(doc.nodes):
        if node.id in seen:
            problems.append(
                Problem("duplicate_node_id", f"node id {node.id!r} is also used by /nodes/{seen[node.id]}",
                        pointer_of("nodes", index, "id"), node.id, hint="give every node its own id")
            )  # fmt: skip
        seen.setdefault(node.id, index)
    edges_seen: set[tuple[str, str]] = set()
    for index, edge in enumerate(doc.edges):
        if edge.key() in edges_seen:
            problems.append(Problem("duplicate_edge", f"edge {edge.source} -> {edge.target} appears twice",
                                    pointer_of("edges", index)))  # fmt: skip
        edges_seen.add(edge.key())
        for end, node_id, label in (("from", edge.source_node, "source"), ("to", edge.target_node, "target")):
            if node_id not in seen:
                problems.append(
                    Problem("unknown_node", f"edge {label} node {node_id!r} does not exist",
                            pointer_of("edges", index, end), node_id, hint="wire only nodes of this flow")
                )  # fmt: skip
    return problems


def check_size(raw: Any) -> None:
    """FlowInvalid if the decoded document has more nodes or wires than a flow holds: found by counting alone,
    before any other work."""
    problems = []
    for key, limit in (("nodes", MAX_NODES), ("edges", MAX_EDGES)):
        items = raw.get(key) if isinstance(raw, dict) else None
        if isinstance(items, list) and len(items) > limit:
            problems.append(Problem(f"too_many_{key}", f"the flow has {len(items):,} {key}; a flow holds at most "
                                    f"{limit:,}", pointer_of(key), hint="split it into several flows"))  # fmt: skip
    if problems:
        raise FlowInvalid(problems)


def check_bytes(source: str | bytes) -> None:
    """FlowInvalid if a document's text is over MAX_DOCUMENT_BYTES: refused by its length, before it is parsed."""
    size = len(source.encode() if isinstance(source, str) else source)
    if size > MAX_DOCUMENT_BYTES:
        raise FlowInvalid([
            Problem("too_large", f"document is {size:,} bytes; the limit is {MAX_DOCUMENT_BYTES:,}",
                    hint="split the flow, or check that no data was pasted into a config field")
        ])  # fmt: skip


def load_flow(source: str | bytes) -> FlowDocument:
    """Parse a document against the flow schema (see parse_flow); FlowInvalid lists every problem with its JSON
    pointer."""
    check_bytes(source)
    try:
        raw = parse_json(source)
    except JsonRefused as exc:
        raise FlowInvalid([
            Problem("malformed_json", str(exc), hint="fix the JSON (a trailing comma or a missing quote, often)")
        ]) from None  # fmt: skip
    return parse_flow(raw)


def parse_flow(raw: Any) -> FlowDocument:
    """An already-decoded document checked against the flow schema only: what compile_flow needs to report every
    other problem (unknown nodes in edges, unknown types, ports, cycles, configs) in one answer. A document over
    the node or wire cap is refused first, with nothing else checked."""
    check_size(raw)
    try:
        doc = FlowDocument.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            location = [part for part in error["loc"]]
            node_id = None
            if len(location) >= 2 and location[0] == "nodes" and isinstance(location[1], int):
                nodes = raw.get("nodes") if isinstance(raw, dict) else None
                if isinstance(nodes, list) and location[1] < len(nodes) and isinstance(nodes[location[1]], dict):
                    node_id = nodes[location[1]].get("id")
            location = ["from" if part == "source" else "to" if part == "target" else part for part in location]
            problems.append(
                Problem("invalid_document", error["msg"], pointer_of(*location),
                        node_id if isinstance(node_id, str) else None)
            )  # fmt: skip
        raise FlowInvalid(problems) from None
    return doc


def validate_flow(raw: Any) -> FlowDocument:
    """A document that is well-formed and wired between its own nodes (for what is stored without compiling)."""
    doc = parse_flow(raw)
    problems = structural_problems(doc)
    if problems:
        raise FlowInvalid(problems)
    return doc


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def dump_flow(doc: FlowDocument) -> str:
    """Canonical JSON: fixed key order, nodes and edges sorted, one node per block; diffs cleanly in Git."""
    nodes = [
        {
            "id": node.id,
            "type": node.type,
            "name": node.name,
            "x": _number(node.x),
            "y": _number(node.y),
            "config": json.loads(json.dumps(node.config, sort_keys=True)),
        }
        for node in sorted(doc.nodes, key=lambda node: node.id)
    ]
    node_blocks = [
        "\n".join("    " + line for line in json.dumps(node, indent=2, ensure_ascii=False).splitlines())
        for node in nodes
    ]
    edge_lines = [
        f'    {{"from": {json.dumps(edge.source)}, "to": {json.dumps(edge.target)}}}'
        for edge in sorted(doc.edges, key=lambda edge: edge.key())
    ]
    head = {"format": doc.format, "id": doc.id, "label": doc.label, "version": doc.version}
    lines = ["{", *(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items())]
    lines.append('  "nodes": [\n' + ",\n".join(node_blocks) + "\n  ]," if nodes else '  "nodes": [],')
    lines.append('  "edges": [\n' + ",\n".join(edge_lines) + "\n  ]" if edge_lines else '  "edges": []')
    lines.append("}")
    return "\n".join(lines) + "\n"


@dataclass
class FlowDiff:
    """What changed between two versions. Moving a node on the canvas is not a change."""

    nodes_added: list[str] = field(default_factory=list)
    nodes_removed: list[str] = field(default_factory=list)
    nodes_changed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # node -> [{field, old, new}]
    edges_added: list[str] = field(default_factory=list)
    edges_removed: list[str] = field(default_factory=list)
    label: tuple[str, str] | None = None  # (old, new)

    @property
    def empty(self) -> bool:
        return not (self.nodes_added or self.nodes_removed or self.nodes_changed
                    or self.edges_added or self.edges_removed or self.label)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": {"old": self.label[0], "new": self.label[1]} if self.label else None,
            "nodes": {"added": self.nodes_added, "removed": self.nodes_removed, "changed": self.nodes_changed},
            "edges": {"added": self.edges_added, "removed": self.edges_removed},
        }


def _changed_values(old: Any, new: Any, prefix: str) -> list[dict[str, Any]]:
    """Each leaf that differs, as {field (a JSON pointer under the node), old, new}; None: absent on that side."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[dict[str, Any]] = []
        for key in sorted(set(old) | set(new)):
            found += _changed_values(old.get(key), new.get(key), f"{prefix}/{key}")
        return found
    return [] if old == new else [{"field": prefix, "old": old, "new": new}]


def diff_flows(old: FlowDocument, new: FlowDocument) -> FlowDiff:
    before = {node.id: node for node in old.nodes}
    after = {node.id: node for node in new.nodes}
    diff = FlowDiff(
        nodes_added=sorted(set(after) - set(before)),
        nodes_removed=sorted(set(before) - set(after)),
    )
    for node_id in sorted(set(before) & set(after)):
        a, b = before[node_id], after[node_id]
        changed = [{"field": name, "old": getattr(a, name), "new": getattr(b, name)}
                   for name in ("type", "name") if getattr(a, name) != getattr(b, name)]  # fmt: skip
        changed += _changed_values(a.config, b.config, "config")
        if changed:
            diff.nodes_changed[node_id] = changed
    old_edges = {f"{e.source} -> {e.target}" for e in old.edges}
    new_edges = {f"{e.source} -> {e.target}" for e in new.edges}
    diff.edges_added = sorted(new_edges - old_edges)
    diff.edges_removed = sorted(old_edges - new_edges)
    if old.label != new.label:
        diff.label = (old.label, new.label)
    return diff
