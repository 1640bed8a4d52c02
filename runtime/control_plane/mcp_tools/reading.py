"""Reading tools: node types, flows, versions, configs and the record schemas; they change nothing."""

# No `from __future__ import annotations`: the MCP SDK reads these signatures to build each tool's input schema.

from typing import Any, Literal

from mcp.server.mcpserver import Context

from streamforge.engine.flow import validate_flow
from streamforge.engine.schemas import AGGREGATE, ALARM, DEAD_LETTER, EVENT, TELEMETRY
from streamforge.runtime.control_plane.auth import Role, User
from streamforge.runtime.control_plane.mcp_tools.toolkit import Toolkit
from streamforge.runtime.errors import ApiError


def register(kit: Toolkit) -> None:
    server, run, store, flows, node_types = kit.server, kit.run, kit.store, kit.flows, kit.node_types

    @server.tool(
        description="Every node type: kind, category, typed input/output ports, and the JSON Schema of "
        "its config. Read this before add_node or update_node_config."
    )
    async def list_node_types(ctx: Context) -> str:
        return await run(ctx, "list_node_types", Role.VIEWER, {}, None, lambda who: [c.describe() for c in node_types])

    @server.tool(description="Every flow: id, label, latest saved version, deployed version.")
    async def list_flows(ctx: Context) -> str:
        return await run(ctx, "list_flows", Role.VIEWER, {}, None, lambda who: store.list_flows())

    @server.tool(
        description="A flow document (nodes with config, wires). source=saved: the latest saved "
        "version (or `version`); source=draft: your working copy with unapproved edits."
    )
    async def get_flow(
        ctx: Context, flow_id: str, source: Literal["saved", "draft"] = "saved", version: int | None = None
    ) -> str:
        def act(who: User) -> Any:
            if source == "draft":
                return flows.draft(flow_id)[0]
            return store.get_flow(flow_id, version).document

        return await run(
            ctx, "get_flow", Role.VIEWER, {"flow_id": flow_id, "source": source, "version": version}, flow_id, act
        )

    @server.tool(
        description="One node's config (secrets appear only as {\"$secret\": name}) and its type's config schema."
    )
    async def get_config(ctx: Context, flow_id: str, node_id: str) -> str:
        def act(who: User) -> Any:
            node = validate_flow(store.get_flow(flow_id).document).node(node_id)
            if node is None:
                raise ApiError(404, "not_found", f"flow {flow_id!r} has no node {node_id!r}")
            cls = node_types.get(node.type)
            return {
                "node": node_id,
                "type": node.type,
                "config": node.config,
                "schema": cls.describe()["config_schema"] if cls else None,
            }

        return await run(ctx, "get_config", Role.VIEWER, {"flow_id": flow_id, "node_id": node_id}, flow_id, act)

    @server.tool(description="The saved versions of a flow: number, time, author.")
    async def get_flow_versions(ctx: Context, flow_id: str) -> str:
        return await run(
            ctx, "get_flow_versions", Role.VIEWER, {"flow_id": flow_id}, flow_id, lambda who: store.versions(flow_id)
        )

    @server.tool(
        description="What changed between two saved versions: nodes added/removed/changed (with the "
        "config paths), wires added/removed. Moves on the canvas are not changes."
    )
    async def compare_configs(ctx: Context, flow_id: str, from_version: int, to_version: int) -> str:
        async def act(who: User) -> Any:
            return (await flows.diff(flow_id, from_version, to_version)).to_dict()

        arguments = {"flow_id": flow_id, "from_version": from_version, "to_version": to_version}
        return await run(ctx, "compare_configs", Role.VIEWER, arguments, flow_id, act)

    @server.tool(description="The Avro record schemas (telemetry, event, alarm, aggregate, dead letter).")
    async def get_schemas(ctx: Context) -> str:
        return await run(
            ctx, "get_schemas", Role.VIEWER, {}, None, lambda who: [TELEMETRY, EVENT, ALARM, AGGREGATE, DEAD_LETTER]
        )
