"""Operations tools: the status of sources and sinks, logs, metrics, dead letters and alarms of the gateway."""

# No `from __future__ import annotations`: the MCP SDK reads these signatures to build each tool's input schema.

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from pydantic import Field

from streamforge.engine.sdk import Kind
from streamforge.runtime.control_plane.auth import Role, User
from streamforge.runtime.control_plane.mcp_tools.toolkit import Toolkit, device_data


def register(kit: Toolkit) -> None:
    server, run, metric_samples, nodes_of_kind, operators = (
        kit.server,
        kit.run,
        kit.metric_samples,
        kit.nodes_of_kind,
        kit.operators,
    )

    @server.tool(description="Status of the source nodes (protocol adapters): status, restarts, last error.")
    async def get_adapter_status(ctx: Context, flow_id: str | None = None, gateway_id: str | None = None) -> str:
        return await run(ctx, "get_adapter_status", Role.VIEWER, {"flow_id": flow_id, "gateway_id": gateway_id},
                         flow_id, lambda who: device_data(nodes_of_kind(Kind.SOURCE, flow_id, gateway_id)))  # fmt: skip

    @server.tool(description="Status of the sink nodes: status, restarts, last error, and their metrics.")
    async def get_sink_status(ctx: Context, flow_id: str | None = None, gateway_id: str | None = None) -> str:
        async def act(who: User) -> Any:
            sinks = nodes_of_kind(Kind.SINK, flow_id, gateway_id)
            samples = await metric_samples("", gateway_id)
            return device_data(
                [{**sink, "metrics": [s for s in samples if s["labels"].get("node") == sink["node"]]} for sink in sinks]
            )

        return await run(ctx, "get_sink_status", Role.VIEWER, {"flow_id": flow_id, "gateway_id": gateway_id}, flow_id,
                         act)  # fmt: skip

    @server.tool(
        description="Log lines of the gateways and every worker (their on-disk ring), oldest first: filter by minimum "
        "level, flow, node, component (gateway, worker:<node>) and text."
    )
    async def get_logs(
        ctx: Context,
        level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO",
        contains: str = "",
        flow: str = "",
        node: str = "",
        component: str = "",
        limit: Annotated[int, Field(ge=1, le=500)] = 100,
    ) -> str:
        arguments = {"level": level, "q": contains, "flow": flow, "node": node, "component": component, "limit": limit}

        async def act(who: User) -> Any:
            return device_data(await operators.logs(dict(arguments)))

        return await run(ctx, "get_logs", Role.VIEWER, arguments, None, act)

    @server.tool(
        description="Prometheus metrics of a gateway and its workers (names carry their unit), as it last pushed them, "
        "optionally only those whose name starts with `prefix`, e.g. streamforge_node_records. `gateway_id`: which "
        "gateway (list_gateways); needed when there is more than one."
    )
    async def get_metrics(ctx: Context, prefix: str = "streamforge_", gateway_id: str | None = None) -> str:
        async def act(who: User) -> Any:
            return device_data(await metric_samples(prefix, gateway_id))  # labels and values the gateway pushed

        return await run(ctx, "get_metrics", Role.VIEWER, {"prefix": prefix, "gateway_id": gateway_id}, gateway_id, act)

    @server.tool(
        description="The newest records of a topic (telemetry.raw, telemetry.clean, telemetry.1s, dlq.telemetry, "
        "alarms.clean, ...) in a gateway's own Kafka, read there and sent over its link. `gateway_id`: which "
        "gateway; needed when there is more than one."
    )
    async def get_recent_records(ctx: Context, topic: str, limit: Annotated[int, Field(ge=1, le=500)] = 20,
                                 gateway_id: str | None = None) -> str:  # fmt: skip
        async def act(who: User) -> Any:
            return device_data(await kit.recent(topic, limit, gateway_id))

        return await run(ctx, "get_recent_records", Role.VIEWER, {"topic": topic, "limit": limit,
                                                                  "gateway_id": gateway_id}, topic, act)  # fmt: skip

    @server.tool(
        description="Dead letters (refused readings): newest first, each with its id (for approve_dlq_messages), "
        "reasons, source topic/partition/offset, node and decoded reading; counts by reason. Filter by reason, node, "
        "asset."
    )
    async def get_dlq_messages(ctx: Context, limit: Annotated[int, Field(ge=1, le=500)] = 50, reason: str = "",
                               node: str = "", asset: str = "", gateway: str = "") -> str:  # fmt: skip
        arguments = {"limit": limit, "reason": reason, "node": node, "asset": asset, "gateway": gateway}

        async def act(who: User) -> Any:
            return device_data(await operators.dead_letters(dict(arguments)))

        return await run(ctx, "get_dlq_messages", Role.VIEWER, arguments, "dlq", act)

    @server.tool(
        description="Alarms from the control plane's alarm store: each alarm's latest transition (state ACTIVE, "
        "ACKNOWLEDGED, RTN_UNACK, CLEARED, SHELVED, SUPPRESSED or OUT_OF_SERVICE) with the event_id to act on; "
        "filter by comma-separated states and severities, asset, flow."
    )
    async def get_alarms(ctx: Context, state: str = "", severity: str = "", asset: str = "", flow: str = "") -> str:
        arguments = {"state": state, "severity": severity, "asset": asset, "flow": flow}
        return await run(ctx, "get_alarms", Role.VIEWER, arguments, None,
                         lambda who: device_data(operators.list_alarms(arguments)))  # fmt: skip
