"""Draft editing tools: create a flow, add, configure, wire and remove nodes, validate; never the running flow."""

# No `from __future__ import annotations`: the MCP SDK reads these signatures to build each tool's input schema.

from collections.abc import Callable
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from pydantic import Field

from streamforge.engine.flow import FlowDocument, parse_flow
from streamforge.engine.problems import Problem
from streamforge.runtime.control_plane.auth import Role, User
from streamforge.runtime.control_plane.mcp_tools.toolkit import Toolkit
from streamforge.runtime.control_plane.service import placement
from streamforge.runtime.errors import ApiError


def register(kit: Toolkit) -> None:
    server, run, store, flows, node_types = kit.server, kit.run, kit.store, kit.flows, kit.node_types

    async def edit_tool(ctx: Context, tool: str, arguments: dict[str, Any], flow_id: str,
                        change: Callable[[dict[str, Any]], None]) -> str:  # fmt: skip
        async def act(who: User) -> Any:
            return await flows.edit_draft(flow_id, who.username, change)

        return await run(ctx, tool, Role.ENGINEER, arguments, flow_id, act)

    @server.tool(description="Start a new, empty flow as a draft (nothing is saved or run until approved).")
    async def create_flow(
        ctx: Context, flow_id: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")], label: str = ""
    ) -> str:
        def act(who: User) -> Any:
            if any(f["id"] == flow_id for f in store.list_flows()) or store.draft(flow_id):
                raise ApiError(409, "conflict", f"flow {flow_id!r} exists; edit it instead")
            flows.put_draft(FlowDocument(id=flow_id, label=label).model_dump(by_alias=True), who.username)
            return {"flow": flow_id, "draft": "created"}

        return await run(ctx, "create_flow", Role.ENGINEER, {"flow_id": flow_id, "label": label}, flow_id, act)

    @server.tool(
        description="Add a node of `node_type` to the flow's draft. `config` must satisfy the type's "
        "config schema (see list_node_types); `after` places it right of that node. Returns the node id "
        "and what the draft still needs (e.g. unwired inputs)."
    )
    async def add_node(
        ctx: Context,
        flow_id: str,
        node_type: str,
        node_id: Annotated[str | None, Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")] = None,
        name: str = "",
        config: dict[str, Any] | None = None,
        after: str | None = None,
    ) -> str:
        async def act(who: User) -> Any:
            cls = node_types.get(node_type)
            if cls is None:
                raise ApiError(
                    404,
                    "unknown_node_type",
                    f"no node type {node_type!r}; known: {sorted(c.type for c in node_types)} (list_node_types)",
                )
            document = parse_flow(flows.draft(flow_id)[0])
            taken = {n.id for n in document.nodes}
            new_id = node_id or next(f"{node_type}_{i}" for i in range(1, 10_000) if f"{node_type}_{i}" not in taken)
            if new_id in taken:
                raise ApiError(409, "conflict", f"node id {new_id!r} is taken in {flow_id!r}")
            x, y = placement(document, cls.kind, after)
            spec = {"id": new_id, "type": node_type, "name": name, "x": x, "y": y, "config": config or {}}
            edited = await flows.edit_draft(flow_id, who.username, lambda d: d["nodes"].append(spec))
            return {"node_id": new_id, **edited}

        arguments = {"flow_id": flow_id, "node_type": node_type, "node_id": node_id, "name": name, "config": config,
                     "after": after}  # fmt: skip
        return await run(ctx, "add_node", Role.ENGINEER, arguments, flow_id, act)

    @server.tool(
        description="Change a node's config in the draft: the given keys are merged into it (replace=true "
        "replaces the whole config). Secret fields take a value (stored encrypted on apply) or "
        '{"$secret": name}.'
    )
    async def update_node_config(
        ctx: Context, flow_id: str, node_id: str, config: dict[str, Any], replace: bool = False
    ) -> str:
        def change(document: dict[str, Any]) -> None:
            node = next((n for n in document["nodes"] if n["id"] == node_id), None)
            if node is None:
                raise ApiError(404, "not_found", f"the draft of {flow_id!r} has no node {node_id!r}")
            node["config"] = dict(config) if replace else {**node["config"], **config}

        return await edit_tool(
            ctx,
            "update_node_config",
            {"flow_id": flow_id, "node_id": node_id, "config": config, "replace": replace},
            flow_id,
            change,
        )

    endpoint = Annotated[
        str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]{0,63}:[a-z][a-z0-9_]{0,31}$", description="node_id:port")
    ]

    @server.tool(
        description="Wire an output port to an input port in the draft: `source` is node:output_port, "
        "`target` node:input_port; the record types must match (or one is `any`)."
    )
    async def connect(ctx: Context, flow_id: str, source: endpoint, target: endpoint) -> str:
        def change(document: dict[str, Any]) -> None:
            document["edges"].append({"from": source, "to": target})

        return await edit_tool(
            ctx, "connect", {"flow_id": flow_id, "source": source, "target": target}, flow_id, change
        )

    @server.tool(description="Remove a wire from the draft.")
    async def disconnect(ctx: Context, flow_id: str, source: endpoint, target: endpoint) -> str:
        def change(document: dict[str, Any]) -> None:
            kept = [e for e in document["edges"] if (e["from"], e["to"]) != (source, target)]
            if len(kept) == len(document["edges"]):
                raise ApiError(404, "not_found", f"no wire {source} -> {target} in the draft of {flow_id!r}")
            document["edges"] = kept

        return await edit_tool(
            ctx, "disconnect", {"flow_id": flow_id, "source": source, "target": target}, flow_id, change
        )

    @server.tool(description="Remove a node and its wires from the draft (data already written by it stays).")
    async def remove_node(ctx: Context, flow_id: str, node_id: str) -> str:
        def change(document: dict[str, Any]) -> None:
            if not any(n["id"] == node_id for n in document["nodes"]):
                raise ApiError(404, "not_found", f"the draft of {flow_id!r} has no node {node_id!r}")
            document["nodes"] = [n for n in document["nodes"] if n["id"] != node_id]
            document["edges"] = [
                e for e in document["edges"] if node_id not in (e["from"].split(":")[0], e["to"].split(":")[0])
            ]

        return await edit_tool(ctx, "remove_node", {"flow_id": flow_id, "node_id": node_id}, flow_id, change)

    @server.tool(
        name="validate_flow",
        description="Compile the draft as a deploy would: every problem with its JSON pointer, node, "
        "port and a hint. An empty list means it can be deployed.",
    )
    async def validate_flow_draft(ctx: Context, flow_id: str) -> str:
        async def act(who: User) -> Any:
            problems: list[Problem] = await flows.problems(parse_flow(flows.draft(flow_id)[0]))
            return {"flow": flow_id, "valid": not problems, "problems": [p.to_dict() for p in problems]}

        return await run(ctx, "validate_flow", Role.VIEWER, {"flow_id": flow_id}, flow_id, act)
