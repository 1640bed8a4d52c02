"""REST routes of the operator's day under /api/v1: alarms, the DLQ workflow, logs, health, node restarts, approvals
of an agent's actions; and the route gateways' alarm uplinks post to."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from streamforge.runtime.control_plane.auth import Role, User, role_guard
from streamforge.runtime.control_plane.fleet import FleetService
from streamforge.runtime.control_plane.operations import OperatorService
from streamforge.runtime.control_plane.store import Store
from streamforge.runtime.errors import ApiError, json_object


def _gateway(body: dict[str, Any]) -> str | None:
    gateway = body.get("gateway")
    if gateway is not None and not isinstance(gateway, str):
        raise ApiError(422, "invalid", "`gateway` is a gateway id such as gw_1a2b3c4d5e6f")
    return gateway or None


def operator_routes(store: Store, fleet: FleetService, operators: OperatorService) -> list[BaseRoute]:
    requires = role_guard(store)

    async def alarms_uplink(request: Request) -> Response:
        """A gateway's alarm transitions (its uplink commits its offsets only after this answers 200)."""
        row = fleet.authenticate(request.headers.get("authorization", ""), request.path_params["gateway"])
        body = await json_object(request, '{"events": [{"flow", "node", "record"}]}')
        return JSONResponse({"stored": operators.alarms.record(row["id"], body.get("events"))})

    @requires(Role.VIEWER)
    async def alarms_list(request: Request, user: User) -> Response:
        return JSONResponse(operators.list_alarms(dict(request.query_params)))

    @requires(Role.VIEWER)
    async def alarm_history(request: Request, user: User) -> Response:
        event = operators.alarms.event(request.path_params["event"], request.query_params.get("gateway"))
        history = operators.alarms.history(event["gateway"], event["flow"], event["node"], event["alarm_id"])
        return JSONResponse({"event": event, "history": history})

    @requires(Role.OPERATOR)
    async def alarm_action(request: Request, user: User) -> Response:
        body = await json_object(request, '{"event_id": "rule|asset|parameter#3"}')
        return JSONResponse(await operators.alarm_action(request.path_params["action"], body, user.username))

    @requires(Role.VIEWER)
    async def dlq_list(request: Request, user: User) -> Response:
        return JSONResponse(await operators.dead_letters(dict(request.query_params)))

    @requires(Role.OPERATOR)
    async def dlq_approve(request: Request, user: User) -> Response:
        body = await json_object(request, '{"gateway": "gw_...", "ids": ["dlq.telemetry/3/120"]}')
        job = await operators.approve_dead_letters(_gateway(body), body.get("ids"), user.username)
        return JSONResponse(job, status_code=202)

    @requires(Role.OPERATOR)
    async def dlq_revalidate(request: Request, user: User) -> Response:
        body = await json_object(request, '{"flow": "demo", "node": "quality"}')
        job = await operators.revalidate(_gateway(body), body.get("flow"), body.get("node"), user.username)
        return JSONResponse(job, status_code=202)

    @requires(Role.VIEWER)
    async def dlq_job(request: Request, user: User) -> Response:
        return JSONResponse(await operators.job(request.query_params.get("gateway"), request.path_params["job"]))

    @requires(Role.VIEWER)
    async def logs(request: Request, user: User) -> Response:
        return JSONResponse(await operators.logs(dict(request.query_params)))

    @requires(Role.VIEWER)
    async def health(request: Request, user: User) -> Response:
        return JSONResponse(await operators.health())

    @requires(Role.OPERATOR)
    async def node_restart(request: Request, user: User) -> Response:
        body = await json_object(request, '{"gateway": "gw_..."} or {}') if await request.body() else {}
        flow, node = request.path_params["flow"], request.path_params["node"]
        return JSONResponse(await operators.restart(_gateway(body), flow, node, user.username))

    @requires(Role.OPERATOR)
    async def approve_action(request: Request, user: User) -> Response:
        """A human approves one operator action an agent proposed (MCP acknowledge_alarm, approve_dlq_messages,
        restart_component): a single-use token bound to exactly those arguments."""
        body = await json_object(request, '{"action": "acknowledge_alarm", "arguments": {"event_id": "..."}}')
        action = body.get("action")
        if action not in ("acknowledge_alarm", "approve_dlq_messages", "restart_component"):
            raise ApiError(422, "invalid", "`action` is acknowledge_alarm, approve_dlq_messages or restart_component")
        return JSONResponse(operators.approve_action(action, body.get("arguments"), user.username), status_code=201)

    return [
        Route("/gateways/{gateway}/alarms", alarms_uplink, methods=["POST"]),
        Route("/alarms", alarms_list),
        Route("/alarms/events/{event:path}", alarm_history),
        Route("/alarms/{action}", alarm_action, methods=["POST"]),
        Route("/dlq", dlq_list),
        Route("/dlq/approve", dlq_approve, methods=["POST"]),
        Route("/dlq/revalidate", dlq_revalidate, methods=["POST"]),
        Route("/dlq/jobs/{job}", dlq_job),
        Route("/logs", logs),
        Route("/health", health),
        Route("/flows/{flow}/nodes/{node}/restart", node_restart, methods=["POST"]),
        Route("/action-approvals", approve_action, methods=["POST"]),
    ]
