"""Change control tools: the draft's diff and digest, and saving or deploying it only with a human's approval token."""

# No `from __future__ import annotations`: the MCP SDK reads these signatures to build each tool's input schema.

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from mcp.server.mcpserver import Context

from streamforge.runtime.control_plane.auth import Role, User
from streamforge.runtime.control_plane.mcp_tools.toolkit import Toolkit, device_data
from streamforge.runtime.errors import ApiError


def register(kit: Toolkit) -> None:
    server, run, store, flows = kit.server, kit.run, kit.store, kit.flows

    @server.tool(
        description="The draft's diff against what runs (or the last save), its problems, and the "
        "change_digest a human approves. Changes nothing."
    )
    async def suggest_config_change(ctx: Context, flow_id: str) -> str:
        async def act(who: User) -> Any:
            return {
                **(await flows.suggestion(flow_id)),
                "next": "ask a human (another Engineer or Admin) to approve this change_digest with POST "
                f'/api/v1/flows/{flow_id}/approvals {{"action": "deploy" or "apply", "change_digest"}}; '
                "they give you a single-use approval_token",
            }

        return await run(ctx, "suggest_config_change", Role.VIEWER, {"flow_id": flow_id}, flow_id, act)

    def gated(tool: str, action: Literal["apply", "deploy"]) -> Callable[..., Awaitable[str]]:
        async def call(ctx: Context, flow_id: str, approval_token: str, gateway_id: str | None = None,
                       labels: dict[str, str] | None = None) -> str:  # fmt: skip
            approver: list[str] = []
            target = {"gateway": gateway_id} if gateway_id else {"labels": labels} if labels else None

            async def act(who: User) -> Any:
                if action == "deploy" and target is None and not flows.fleet.assignments(flow_id):
                    raise ApiError(409, "no_target", f"flow {flow_id} is assigned to no gateway yet: ask the human "
                                   "to approve the deploy with its target (gateway or labels) and pass the same "
                                   "gateway_id or labels here")  # fmt: skip
                document, approved_by = flows.spend_approval(flow_id, action, approval_token, who.username, target)
                approver.append(approved_by)
                has_draft = store.draft(flow_id) is not None
                saved = await flows.apply_draft(flow_id, document, who.username) if has_draft else None
                result: dict[str, Any] = {
                    "flow": flow_id,
                    "approved_by": approved_by,
                    "saved_version": saved.version if saved else None,
                }
                if action == "deploy":
                    deployed = await flows.deploy(flow_id, user=who.username, gateway_id=gateway_id, labels=labels)
                    result["deployed"] = {**deployed, "gateways": device_data(deployed["gateways"])}  # their causes
                return result

            return await run(
                ctx,
                tool,
                Role.ENGINEER,
                {"flow_id": flow_id, "approval_token": "<redacted>", "gateway_id": gateway_id, "labels": labels},
                flow_id,
                act,
                lambda: approver[0] if approver else None,
            )

        return call

    apply_config_change = gated("apply_config_change", "apply")
    deploy_flow = gated("deploy_flow", "deploy")
    server.add_tool(
        apply_config_change,
        name="apply_config_change",
        description="Save the draft as the flow's next version. Needs an approval_token a human issued "
        "for exactly this change (action `apply`); single-use, expires.",
    )
    server.add_tool(
        deploy_flow,
        name="deploy_flow",
        description="Save the draft (if any) and deploy the flow wherever it is assigned. Needs an "
        "approval_token a human issued for exactly this change (action `deploy`); single-use, expires. The first "
        "deploy of a flow names where it goes (gateway_id or labels), exactly as the human's approval did.",
    )
