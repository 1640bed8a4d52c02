"""Operator action tools: acknowledge an alarm, reprocess dead letters, restart a node; each only with a human's
single-use approval token bound to exactly its arguments (spec: Action Tools, Require Confirmation)."""

# No `from __future__ import annotations`: the MCP SDK reads these signatures to build each tool's input schema.

import json
from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server.mcpserver import Context

from streamforge.runtime.control_plane.auth import Role, User
from streamforge.runtime.control_plane.mcp_tools.toolkit import Toolkit, device_data
from streamforge.runtime.errors import ApiError

HOW = ("ask a human (an Operator or above) to approve exactly these arguments with POST /api/v1/action-approvals "
       '{"action": "%s", "arguments": %s}; they give you a single-use approval_token')  # fmt: skip


def register(kit: Toolkit) -> None:
    server, run, operators = kit.server, kit.run, kit.operators

    async def gated(ctx: Context, tool: str, arguments: dict[str, Any], approval_token: str, target: str,
                    act: Callable[[User, str], Awaitable[Any]]) -> str:  # fmt: skip
        """Spend the approval on exactly `arguments`, then act as the caller; the audit names both people."""
        approver: list[str] = []

        async def checked(who: User) -> Any:
            if not approval_token:
                raise ApiError(403, "approval_required", HOW % (tool, json.dumps(arguments)))
            approver.append(operators.spend_approval(tool, arguments, approval_token, who.username))
            return await act(who, approver[0])

        return await run(ctx, tool, Role.OPERATOR, {**arguments, "approval_token": "<redacted>"}, target, checked,
                         lambda: approver[0] if approver else None)  # fmt: skip

    @server.tool(
        description="Acknowledge an alarm event (event_id from get_alarms). Needs an approval_token a human issued for "
        "exactly these arguments; without one it is refused with how to get one. A stale event is refused."
    )
    async def acknowledge_alarm(ctx: Context, event_id: str, gateway: str = "", comment: str = "",
                                approval_token: str = "") -> str:  # fmt: skip
        arguments = {"event_id": event_id, "gateway": gateway or None, "comment": comment or None}

        async def act(who: User, approved_by: str) -> Any:
            body = {k: v for k, v in arguments.items() if v is not None}
            done = await operators.alarm_action("acknowledge", body, who.username, approved_by)
            emitted = done.pop("emitted")  # the transition's message quotes the device's value
            return {**done, "approved_by": approved_by, **device_data(emitted)}

        return await gated(ctx, "acknowledge_alarm", arguments, approval_token, event_id, act)

    @server.tool(
        description="Reprocess dead letters (ids from get_dlq_messages) into their validator's clean topic, exactly "
        "once. Needs an approval_token a human issued for exactly these arguments."
    )
    async def approve_dlq_messages(ctx: Context, ids: list[str], gateway: str = "", approval_token: str = "") -> str:
        arguments = {"ids": ids, "gateway": gateway or None}

        async def act(who: User, approved_by: str) -> Any:
            return await operators.approve_dead_letters(gateway or None, ids, who.username, approved_by)

        return await gated(ctx, "approve_dlq_messages", arguments, approval_token, ",".join(ids)[:200], act)

    @server.tool(
        description="Restart one node of a running flow (it resumes from its committed offsets and state). Needs an "
        "approval_token a human issued for exactly these arguments."
    )
    async def restart_component(ctx: Context, flow_id: str, node_id: str, gateway: str = "",
                                approval_token: str = "") -> str:  # fmt: skip
        arguments = {"flow_id": flow_id, "node_id": node_id, "gateway": gateway or None}

        async def act(who: User, approved_by: str) -> Any:
            return await operators.restart(gateway or None, flow_id, node_id, who.username, approved_by)

        return await gated(ctx, "restart_component", arguments, approval_token, f"{flow_id}/{node_id}", act)
