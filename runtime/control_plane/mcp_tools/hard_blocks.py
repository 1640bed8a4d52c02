"""Hard blocks: tools present so an agent learns the boundary, refused and audited every time."""

# No `from __future__ import annotations`: the MCP SDK reads these signatures to build each tool's input schema.

import json
from collections.abc import Callable

from mcp.server.mcpserver import Context

from streamforge.runtime.control_plane.mcp_tools.toolkit import Toolkit
from streamforge.runtime.control_plane.operations import audit_digest as digest

HARD_BLOCKS = {
    "delete_gateway": "Deleting a gateway is never done by an agent: a person decommissions gateways.",
    "delete_sink_data": "Deleting data in a sink (tables, buckets, topics) is never done by an agent.",
    "read_secret": "Secret values never leave the secret store except into a deploy; configs show them "
    'only as {"$secret": name} references.',
    "execute_code": "Running arbitrary code or shell commands is not a capability of StreamForge's tools.",
    "disable_authentication": "Authentication cannot be turned off, by anyone, through any tool.",
    "approve_change": "Approvals come from a human (another Engineer or Admin) through the REST API or the "
    "editor; an agent cannot approve a change, least of all its own.",
}


def register(kit: Toolkit) -> None:
    server, store, identity = kit.server, kit.store, kit.identity

    def hard_block(tool: str, why: str) -> Callable[[Context, str], str]:
        def refuse(ctx: Context, target: str = "") -> str:
            who = identity(ctx)
            store.audit(who.username, tool, digest({"target": target}), target or None, "blocked", why)
            return json.dumps({"refused": "hard_block", "tool": tool, "message": why})

        return refuse

    for blocked, reason in HARD_BLOCKS.items():
        server.add_tool(hard_block(blocked, reason), name=blocked, description=f"Always refused (hard block): {reason}")
