"""Analysis tools: a gateway's health with causes and fixes, refused readings by reason, one alarm explained."""

# No `from __future__ import annotations`: the MCP SDK reads these signatures to build each tool's input schema.

from typing import Annotated, Any

from mcp.server.mcpserver import Context
from pydantic import Field

from streamforge.runtime.control_plane.auth import Role, User
from streamforge.runtime.control_plane.diagnostics import dlq_groups, findings
from streamforge.runtime.control_plane.mcp_tools.toolkit import Toolkit, device_data
from streamforge.runtime.errors import ApiError


def register(kit: Toolkit) -> None:
    server, run, store, flows, recent = kit.server, kit.run, kit.store, kit.flows, kit.recent

    @server.tool(
        description="Health check of the gateway with causes and suggested fixes: failing or restarting "
        "nodes, Kafka, and what their last errors usually mean."
    )
    async def diagnose_gateway(ctx: Context, gateway_id: str | None = None) -> str:
        def act(who: User) -> Any:
            health = flows.fleet.live_view(flows.fleet.pick(gateway_id))
            return {"gateway": health["gateway"], "status": health["status"],  # their last errors are the gateway's
                    **device_data(findings(health) or "all nodes RUNNING, no restarts")}  # fmt: skip

        return await run(ctx, "diagnose_gateway", Role.VIEWER, {"gateway_id": gateway_id}, gateway_id, act)

    @server.tool(
        description="Why readings were refused: the newest dead letters grouped by reason code and "
        "series, with the likely rule fix for each group."
    )
    async def analyze_dlq(ctx: Context, limit: Annotated[int, Field(ge=1, le=5000)] = 1000,
                          gateway_id: str | None = None) -> str:  # fmt: skip
        async def act(who: User) -> Any:
            groups = dlq_groups(await recent("dlq.telemetry", limit, gateway_id))
            shown = ("reason", "node", "count", "fix")
            return {"groups": [{**{k: g[k] for k in shown},
                                **device_data({"asset_id": g["asset_id"], "example": g["example"]})}
                               for g in groups]}  # fmt: skip

        return await run(ctx, "analyze_dlq", Role.VIEWER, {"limit": limit, "gateway_id": gateway_id}, "dlq.telemetry",
                         act)  # fmt: skip

    @server.tool(
        description="One alarm explained: its transitions, the rule that raised it (limits, deadband, "
        "on-delay) and what an operator can do."
    )
    async def explain_alarm(ctx: Context, alarm_id: str, limit: Annotated[int, Field(ge=1, le=5000)] = 2000,
                            gateway_id: str | None = None) -> str:  # fmt: skip
        async def act(who: User) -> Any:
            history = [r for r in await recent("alarms.clean", limit, gateway_id) if r["alarm_id"] == alarm_id]
            if not history:
                raise ApiError(404, "not_found", f"no transition of alarm {alarm_id!r} among the newest {limit}")
            rule_id = history[-1]["rule_id"]
            rules = [
                {"flow": f["id"], "node": n["id"], "config": n["config"]}
                for f in store.list_flows()
                for n in store.get_flow(f["id"]).document["nodes"]
                if n["type"] == "alarm_rule" and n["config"].get("rule_id") == rule_id
            ]
            return {
                "alarm_id": alarm_id,
                "state": history[-1]["state"],
                "rule": rules,
                "actions": "an Operator acknowledges, shelves or suppresses it (Alarms page, POST /api/v1/alarms/"
                '{action} with {"event_id": ...}); an agent uses acknowledge_alarm with a human\'s approval_token',
                **device_data({"transitions": history}),
            }

        arguments = {"alarm_id": alarm_id, "limit": limit, "gateway_id": gateway_id}
        return await run(ctx, "explain_alarm", Role.VIEWER, arguments, alarm_id, act)
