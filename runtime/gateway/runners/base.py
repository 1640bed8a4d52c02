"""What every runner shares: building the node, loading its state, starting it and stopping it around its loop."""

from __future__ import annotations

import asyncio
import gc
import os
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Any

from streamforge.engine.plan import NO_CONFIG, NodePlan
from streamforge.engine.sdk import Emitted, Node, NodeContext
from streamforge.runtime.gateway.runners.changelog import Changelog, changelog_topic
from streamforge.runtime.gateway.runners.environment import RuntimeEnv
from streamforge.runtime.gateway.runners.outputs import OutputPorts
from streamforge.runtime.gateway.runners.status import NodeStatus, StatusCell
from streamforge.runtime.kafka.clients import BatchProducer


def node_class(plan: NodePlan, env: RuntimeEnv) -> type[Node[Any]]:
    cls = env.node_types.get(plan.type)
    if cls is None:
        raise RuntimeError(f"node type {plan.type!r} of node {plan.node_id} is not installed")
    return cls


class NodeRunner(ABC):
    """Runs one node per its plan: builds it, loads its state, starts it, runs its kind's loop, stops it.

    `ready` is set once the node started (a source or sink whose peer is away has started too: DEGRADED)."""

    def __init__(self, plan: NodePlan, flow_id: str, env: RuntimeEnv) -> None:
        cls = node_class(plan, env)
        config = cls.Config.model_validate(plan.config)
        # The validated config is the copy kept, not the packed text beside it.
        self.plan, self.flow_id, self.env, self.cls = replace(plan, config_packed=NO_CONFIG), flow_id, env, cls
        self.labels = {"flow": flow_id, "node": plan.node_id}
        self.cell = StatusCell(env.metrics, self.labels)
        self.context = NodeContext(flow_id, plan.node_id, os.environ.get("STREAMFORGE_GATEWAY_ID") or "local",
                                   on_health=self._device_health)  # fmt: skip
        self.node: Node[Any] = cls(config, self.context)
        self.ready = asyncio.Event()
        self.outputs = OutputPorts(self.plan, flow_id, env, cls, self.cell)
        self.changelog = Changelog(env.kafka, changelog_topic(flow_id, plan.node_id), self.context.state)

    @property
    def status(self) -> NodeStatus:
        return self.cell.status

    @property
    def last_error(self) -> str | None:
        return self.cell.last_error

    def detail(self) -> dict[str, Any]:
        """What the node's status line shows beside its state (a consumer's lag, a sink's circuit)."""
        return {}

    def _device_health(self, problem: str | None) -> None:
        self.cell.report("device", problem)

    def _connection_health(self, problem: str | None) -> None:
        self.cell.report("connection", problem)

    async def submit(self, name: str, args: dict[str, Any]) -> Emitted:
        """Run an operator command inside the node's loop (processors only)."""
        raise ValueError(f"node {self.plan.node_id} ({self.plan.type}) takes no commands")

    async def run(self) -> None:
        """The node's whole life; returns on cancel, raises on failure (the supervisor restarts it)."""
        producer = BatchProducer(self.env.kafka)
        await producer.start()
        try:
            await self.outputs.prepare()
            await self.changelog.load()
            await self.node.start()
            try:
                await self._loop(producer)
            finally:
                await self.node.stop()
        finally:
            await producer.stop()

    def _started(self) -> None:
        # What is on the heap by now (imports, clients, restored state) lives as long as the process: frozen out
        # of the collector's full scans, which otherwise stall every node's loop 100-250 ms now and then (the p99).
        gc.freeze()
        self.cell.running()
        self.ready.set()

    @abstractmethod
    async def _loop(self, producer: BatchProducer) -> None:
        """The kind's loop; runs until cancelled."""
