"""Operations tools: the status of sources and sinks, logs, metrics, dead letters and alarms of the gateway."""

# No `from __future__ import annotations`: the MCP SDK reads these signatures to build each tool's input schema.

import logging
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from pydantic import Field

from streamforge.engine.sdk import Kind
from streamforge.runtime.control_plane.auth import Role, User
from streamforge.runtime.control_plane.mcp_tools.toolkit import Toolkit, device_data


def register(kit: Toolkit) -> None:
    server, run, recent, metric_samples, nodes_of_kind, alarm_states, logs = (
        kit.server,
        kit.run,
        kit.recent,
        kit.metric_samples,
        kit.nodes_of_kind,
        kit.alarm_states,
        kit.logs,
    )

    @server.tool(description="Status of the source nodes (protocol adapters): status, restarts, last error.")
    async def get_adapter_status(ctx: Context, flow_id: str | None = None) -> str:
        return await run(
            ctx,
            "get_adapter_status",
            Role.VIEWER,
            {"flow_id": flow_id},
            flow_id,
            lambda who: nodes_of_kind(Kind.SOURCE, flow_id),
        )

    @server.tool(description="Status of the sink nodes: status, restarts, last error, and their metrics.")
    async def get_sink_status(ctx: Context, flow_id: str | None = None) -> str:
        async def act(who: User) -> Any:
            sinks = nodes_of_kind(Kind.SINK, flow_id)
            samples = await metric_samples("")
            return [
                {**sink, "metrics": [s for s in samples if s["labels"].get("node") == sink["node"]]} for sink in sinks
            ]

        return await run(ctx, "get_sink_status", Role.VIEWER, {"flow_id": flow_id}, flow_id, act)

    @server.tool(
        description="Recent control-plane and gateway log lines, newest last; filter by minimum level and by text."
    )
    async def get_logs(
        ctx: Context,
        level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO",
        contains: str = "",
        limit: Annotated[int, Field(ge=1, le=500)] = 100,
    ) -> str:
        def act(who: User) -> Any:
            floor = logging.getLevelName(level)
            lines = [
                line
                for line in (logs.lines if logs else ())
                if logging.getLevelName(line["level"]) >= floor and contains in line["message"]
            ]
            return device_data(lines[-limit:])

        return await run(
            ctx, "get_logs", Role.VIEWER, {"level": level, "contains": contains, "limit": limit}, None, act
        )

    @server.tool(
        description="Prometheus metrics of the gateway and its workers (names carry their unit), "
        "optionally only those whose name starts with `prefix`, e.g. streamforge_node_records."
    )
    async def get_metrics(ctx: Context, prefix: str = "streamforge_") -> str:
        return await run(ctx, "get_metrics", Role.VIEWER, {"prefix": prefix}, None, lambda who: metric_samples(prefix))

    @server.tool(description="The newest dead-letter records (refused readings with machine-readable reasons).")
    async def get_dlq_messages(
        ctx: Context, limit: Annotated[int, Field(ge=1, le=500)] = 50, topic: str = "dlq.telemetry"
    ) -> str:
        async def act(who: User) -> Any:
            return device_data(await recent(topic, limit))

        return await run(ctx, "get_dlq_messages", Role.VIEWER, {"limit": limit, "topic": topic}, topic, act)

    @server.tool(
        description="Alarms: the latest state (ACTIVE, ACKNOWLEDGED, CLEARED, SUPPRESSED) of each alarm "
        "seen among the newest `limit` transitions."
    )
    async def get_alarms(ctx: Context, limit: Annotated[int, Field(ge=1, le=2000)] = 500) -> str:
        async def act(who: User) -> Any:
            return device_data(list((await alarm_states(limit)).values()))

        return await run(ctx, "get_alarms", Role.VIEWER, {"limit": limit}, "alarms.clean", act)
