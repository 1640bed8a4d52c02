"""What a compiled flow is: which node runs in which process, reading what, writing where (no networkx: workers
load a plan without the compiler)."""

from __future__ import annotations

import json
import zlib
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

GATEWAY_PROCESS = "gateway"


@dataclass(frozen=True)
class InputPlan:
    """One subscription of a node: a topic, and the upstream nodes whose records it keeps."""

    port: str
    topic: str
    upstream: tuple[str, ...]


@dataclass(frozen=True)
class OutputPlan:
    port: str
    type: str
    topic: str


@dataclass(frozen=True)
class NodePlan:
    """How one node runs: in which process, reading what, writing where."""

    node_id: str
    type: str
    kind: str
    process: str  # "gateway" (asyncio task) or "worker:<node id>" (own process, the bulkhead)
    task: str
    consumer_group: str | None
    inputs: tuple[InputPlan, ...]
    outputs: tuple[OutputPlan, ...]
    # JSON text, secrets revealed, compressed (packed_config): a plan is held as long as its flow runs (restarts,
    # rollback), and a 10,000-signal simulator's config is 1 MB as text (5 MB as dicts and strings), 40 KB packed.
    config_packed: bytes
    fingerprint: str  # changes when type, config or wiring change; drives modified-nodes deploy

    @property
    def config_json(self) -> str:
        return zlib.decompress(self.config_packed).decode()

    @property
    def config(self) -> dict[str, Any]:
        """The node's config, parsed (a copy of its own on each call)."""
        config: dict[str, Any] = json.loads(self.config_json)
        return config

    def to_wire(self) -> dict[str, Any]:
        """The node's plan as JSON for another process, its config as text; node_plan_from_dict reads it back."""
        wire = asdict(self)
        del wire["config_packed"]
        return {**wire, "config_json": self.config_json}


def packed_config(config_json: str) -> bytes:
    """A config's JSON text as a NodePlan holds it."""
    return zlib.compress(config_json.encode())


NO_CONFIG = packed_config("{}")  # what a plan holds once its node validated the config and keeps that


def node_plan_from_dict(data: dict[str, Any]) -> NodePlan:
    """The inverse of NodePlan.to_wire (plans travel to worker processes, and from the compiler's, as JSON)."""
    wire = {key: value for key, value in data.items() if key != "config_json"}
    return NodePlan(**{
        **wire,
        "config_packed": packed_config(data["config_json"]),
        "inputs": tuple(InputPlan(i["port"], i["topic"], tuple(i["upstream"])) for i in data["inputs"]),
        "outputs": tuple(OutputPlan(**o) for o in data["outputs"]),
    })  # fmt: skip


@dataclass
class ExecutionPlan:
    flow_id: str
    version: int
    nodes: list[NodePlan] = field(default_factory=list)  # in topological order

    @property
    def topics(self) -> list[str]:
        return sorted({out.topic for node in self.nodes for out in node.outputs}
                      | {inp.topic for node in self.nodes for inp in node.inputs})  # fmt: skip

    @property
    def processes(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = defaultdict(list)
        for node in self.nodes:
            grouped[node.process].append(node.node_id)
        return dict(grouped)

    def node(self, node_id: str) -> NodePlan:
        return next(node for node in self.nodes if node.node_id == node_id)

    def unchanged_since(self, before: ExecutionPlan | None) -> set[str]:
        """Nodes a modified-nodes deploy of this plan over `before` keeps running: same id, same fingerprint (type,
        version, config, wiring; a rename or a move is no change). The one definition the gateway deploys by and
        the editor marks modified nodes by."""
        old = {node.node_id: node.fingerprint for node in before.nodes} if before else {}
        return {node.node_id for node in self.nodes if old.get(node.node_id) == node.fingerprint}

    def to_wire(self) -> dict[str, Any]:
        """The plan as JSON to hand to another process (configs stay text); from_wire reads it back."""
        return {"flow": self.flow_id, "version": self.version, "nodes": [node.to_wire() for node in self.nodes]}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ExecutionPlan:
        return cls(data["flow"], data["version"], [node_plan_from_dict(node) for node in data["nodes"]])

    def to_dict(self) -> dict[str, Any]:
        """The plan as a person reads it (`streamforge flow plan`): configs parsed, topics and processes listed."""
        return {
            "flow": self.flow_id,
            "version": self.version,
            "topics": self.topics,
            "processes": self.processes,
            "nodes": [
                {**{k: v for k, v in asdict(node).items() if k != "config_packed"}, "config": node.config}
                for node in self.nodes
            ],
        }
