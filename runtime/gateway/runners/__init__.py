"""Node runners: the one coroutine each node runs, one runner per kind, with Kafka on both sides.

- source: connect -> poll -> produce (acks=all) -> state to changelog -> acknowledge the device.
- processor: consume -> process -> produce outputs and wait for acks -> state to changelog -> commit, never past
  offsets the node still retains; one batch is delivered so while the next is processed.
- sink: consume -> write (reconnected and retried with backoff while the destination is away) -> commit.
Offsets are never auto-committed, so a crash anywhere replays from the last safe point (at-least-once);
idempotent keys downstream make replays invisible.
"""

from __future__ import annotations

from streamforge.engine.plan import NodePlan
from streamforge.engine.sdk import Kind
from streamforge.runtime.gateway.runners.base import NodeRunner, node_class
from streamforge.runtime.gateway.runners.changelog import changelog_spec, changelog_topic
from streamforge.runtime.gateway.runners.environment import RuntimeEnv
from streamforge.runtime.gateway.runners.processor import CommandNotDelivered, ProcessorRunner
from streamforge.runtime.gateway.runners.sink import SinkRunner
from streamforge.runtime.gateway.runners.source import SourceRunner
from streamforge.runtime.gateway.runners.status import NodeStatus

RUNNERS: dict[Kind, type[NodeRunner]] = {Kind.SOURCE: SourceRunner, Kind.PROCESSOR: ProcessorRunner,
                                         Kind.SINK: SinkRunner}  # fmt: skip


def runner_for(plan: NodePlan, flow_id: str, env: RuntimeEnv) -> NodeRunner:
    """The runner of the plan's node type's kind."""
    return RUNNERS[node_class(plan, env).kind](plan, flow_id, env)


__all__ = [
    "CommandNotDelivered",
    "NodeRunner",
    "NodeStatus",
    "RuntimeEnv",
    "changelog_spec",
    "changelog_topic",
    "runner_for",
]
