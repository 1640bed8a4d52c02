"""Fleet tools: the gateways, what runs where, and assignments or rollbacks that need a human's approval."""

# No `from __future__ import annotations`: the MCP SDK reads these signatures to build each tool's input schema.

from typing import Any

from mcp.server.mcpserver import Context

from streamforge.runtime.control_plane.auth import Role, User
from streamforge.runtime.control_plane.mcp_tools.toolkit import Toolkit, device_data
from streamforge.runtime.control_plane.service import fleet_digest


def register(kit: Toolkit) -> None:
    server, run, store, flows = kit.server, kit.run, kit.store, kit.flows

    @server.tool(description="Every gateway of the fleet: approval, health, labels, what it runs and ran before, "
                 "its last apply result.")  # fmt: skip
    async def list_gateways(ctx: Context) -> str:
        return await run(ctx, "list_gateways", Role.VIEWER, {}, None, lambda who: device_data(flows.fleet.gateways()))

    @server.tool(
        description="One gateway (default: the only one there is): its health, Kafka, running flows, every "
        "node's status, restarts and last error, and its last apply result."
    )
    async def get_gateway_details(ctx: Context, gateway_id: str | None = None) -> str:
        def act(who: User) -> Any:
            chosen = flows.fleet.pick(gateway_id)
            return device_data({**flows.fleet.details(chosen), **flows.fleet.live_view(chosen)})  # status: health

        return await run(ctx, "get_gateway_details", Role.VIEWER, {"gateway_id": gateway_id}, gateway_id, act)

    @server.tool(
        description="Propose running a flow version on a gateway (gateway_id) or on every gateway with these "
        "labels: who it covers and what they run now, and the change_digest. Changes nothing."
    )
    async def suggest_assignment(ctx: Context, flow_id: str, version: int, gateway_id: str | None = None,
                                 labels: dict[str, str] | None = None) -> str:  # fmt: skip
        def act(who: User) -> Any:
            fleet = flows.fleet
            covered = fleet.covered(gateway_id, labels)
            store.get_flow(flow_id, version)  # 404 for a version that does not exist
            arguments = {"version": version, "gateway": gateway_id, "labels": labels}
            return {"flow": flow_id, "version": version, "change_digest": fleet_digest("assign", flow_id, arguments),
                    "covers": {g["id"]: g["running"].get(flow_id) for g in fleet.gateways() if g["id"] in covered},
                    "next": f"ask a human to approve it: POST /api/v1/flows/{flow_id}/approvals "
                    f'{{"action": "assign", "version": {version}, "gateway" or "labels": ...}}; they give you a '
                    "single-use approval_token for assign_flow"}  # fmt: skip

        arguments = {"flow_id": flow_id, "version": version, "gateway_id": gateway_id, "labels": labels}
        return await run(ctx, "suggest_assignment", Role.VIEWER, arguments, flow_id, act)

    @server.tool(
        description="Run a flow version on a gateway or on every gateway with these labels. Needs an "
        "approval_token a human issued for exactly these arguments (action assign)."
    )
    async def assign_flow(ctx: Context, flow_id: str, version: int, approval_token: str, gateway_id: str | None = None,
                          labels: dict[str, str] | None = None) -> str:  # fmt: skip
        approver: list[str] = []

        def act(who: User) -> Any:
            arguments = {"version": version, "gateway": gateway_id, "labels": labels}
            approver.append(flows.spend_fleet_approval(flow_id, "assign", arguments, approval_token, who.username))
            return flows.fleet.assign(flow_id, version, who.username, gateway_id, labels)

        arguments = {"flow_id": flow_id, "version": version, "gateway_id": gateway_id, "labels": labels,
                     "approval_token": approval_token}  # fmt: skip
        return await run(
            ctx, "assign_flow", Role.ENGINEER, arguments, flow_id, act, lambda: approver[0] if approver else None
        )

    @server.tool(
        description="Return a gateway to the version of a flow it ran before its last apply. Needs an "
        "approval_token a human issued for exactly this (action rollback, with the gateway)."
    )
    async def rollback_gateway(ctx: Context, gateway_id: str, flow_id: str, approval_token: str) -> str:
        approver: list[str] = []

        def act(who: User) -> Any:
            approver.append(flows.spend_fleet_approval(flow_id, "rollback", {"gateway": gateway_id}, approval_token,
                                                       who.username))  # fmt: skip
            return flows.fleet.rollback(gateway_id, who.username, flow_id)

        arguments = {"gateway_id": gateway_id, "flow_id": flow_id, "approval_token": approval_token}
        return await run(ctx, "rollback_gateway", Role.ENGINEER, arguments, gateway_id, act,
                         lambda: approver[0] if approver else None)  # fmt: skip
