"""REST and websocket routes of the fleet: what gateways call (register, sync, renew, events) and what people
call (list, approve, reject, replace, delete, label, assign, unassign, roll back)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from streamforge.engine.json_input import JsonRefused
from streamforge.runtime.control_plane.auth import Role, User, role_guard
from streamforge.runtime.control_plane.fleet import Approval, FleetService, parse_labels
from streamforge.runtime.control_plane.live import UNAUTHORIZED, receive_message
from streamforge.runtime.control_plane.operations import audit_digest
from streamforge.runtime.control_plane.store import Store
from streamforge.runtime.errors import ApiError, json_object, typed_body, whole_number
from streamforge.runtime.protocol import LINK_SILENCE_S, Heartbeat, Registration, ToGateway

log = logging.getLogger("streamforge.fleet")


def _target(body: dict[str, Any]) -> tuple[str | None, dict[str, str] | None]:
    gateway = body.get("gateway")
    if gateway is not None and not isinstance(gateway, str):
        raise ApiError(422, "invalid", "`gateway` is a gateway id such as gw_1a2b3c4d5e6f")
    labels = parse_labels(body["labels"], "labels") if body.get("labels") else None
    return gateway, labels


def fleet_routes(store: Store, fleet: FleetService) -> list[BaseRoute]:
    requires = role_guard(store)

    # -- called by gateways -------------------------------------------------------------------------

    async def register(request: Request) -> Response:
        """Unauthenticated: rate limited by the client's own address (no forwarded header is trusted), JSON only
        (a browser's cross-origin "simple" POST is text/plain: refused before it is read)."""
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            raise ApiError(415, "unsupported_media_type", f"a registration is sent as Content-Type: application/json, "
                           f"not {media_type or 'no content type'}")  # fmt: skip
        address = request.client.host if request.client else "unknown"
        fleet.admit_registration(address)
        registration = await typed_body(request, Registration, "the registration")
        registered = fleet.register(registration, address)
        if registered.created:  # what it asked, credentials left out
            arguments = registration.model_dump(exclude={"secret", "enrolment_key"})
            store.audit(f"unauthenticated ({address})", "gateway.register", audit_digest(arguments),
                        registered.body["gateway_id"], registered.body["status"], None if registered.claims is None
                        else f"claims the instance id of gateway {registered.claims}")  # fmt: skip
        return JSONResponse(registered.body, status_code=registered.status)

    async def sync(request: Request) -> Response:
        row = fleet.authenticate(request.headers.get("authorization", ""), request.path_params["gateway"])
        heartbeat = await typed_body(request, Heartbeat, "the heartbeat")
        state = fleet.sync(row, heartbeat, request.headers.get("if-none-match"))
        if state is None:
            return Response(status_code=304, headers={"ETag": fleet.etag(row)})
        return JSONResponse(state, headers={"ETag": state["etag"]})

    async def renew(request: Request) -> Response:
        row = fleet.authenticate(request.headers.get("authorization", ""), request.path_params["gateway"])
        return JSONResponse(fleet.renew(row["id"]))

    async def events(socket: WebSocket) -> None:
        """The gateway's own link, which everything the control plane asks of it travels over: poll notices,
        commands and taps one way; command results, tap records, metrics and logs the other (runtime/protocol)."""
        gateway_id, authorization = socket.path_params["gateway"], socket.headers.get("authorization", "")
        try:
            fleet.authenticate(authorization, gateway_id)
        except ApiError as refused:
            await socket.close(code=UNAUTHORIZED, reason=refused.message[:120])
            return
        await socket.accept()
        queue = fleet.listen(gateway_id)

        heard = [time.monotonic(), 0.0]  # when the gateway last sent anything; when it last pushed metrics

        async def receive() -> None:
            while True:
                try:
                    message = await receive_message(socket)
                except JsonRefused as refused:  # not the protocol: said once in the log, the link stays
                    log.warning(
                        "gateway sent a message that is not JSON",
                        extra={"gateway": gateway_id, "error": str(refused)[:200]},
                    )
                    continue
                heard[0] = time.monotonic()
                if isinstance(message, dict) and message.get("type") == "metrics":
                    heard[1] = heard[0]
                fleet.received(gateway_id, message)

        receiver = asyncio.create_task(receive())
        event: asyncio.Task[ToGateway] | None = None
        try:
            while True:
                event = event or asyncio.create_task(queue.get())
                # Woken only when the silence would be over, not every second: 10,000 idle links cost wakeups too.
                silence_left = heard[0] + LINK_SILENCE_S - time.monotonic() if heard[1] else None
                done, _ = await asyncio.wait(
                    {event, receiver},
                    return_when=asyncio.FIRST_COMPLETED,
                    timeout=None if silence_left is None else max(0.5, silence_left + 0.1),
                )
                if receiver in done:  # the gateway went away
                    return
                if event in done:
                    try:  # rejecting, replacing or deleting a gateway notifies it: its link ends here
                        fleet.authenticate(authorization, gateway_id)
                    except ApiError as refused:
                        await socket.close(code=UNAUTHORIZED, reason=refused.message[:120])
                        return
                    await socket.send_text(event.result().model_dump_json(exclude_none=True))
                    event = None
                elif heard[1] and time.monotonic() - heard[0] > LINK_SILENCE_S:
                    # A gateway that pushes its metrics went quiet: its link is dead, whatever TCP still thinks.
                    log.warning(
                        "gateway link silent; closed",
                        extra={"gateway": gateway_id, "silent_s": round(time.monotonic() - heard[0])},
                    )
                    return
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            fleet.unlisten(gateway_id, queue)
            if event is not None:
                event.cancel()
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError, ValueError):
                await receiver

    # -- called by people ---------------------------------------------------------------------------

    @requires(Role.VIEWER)
    async def gateways_list(request: Request, user: User) -> Response:
        return JSONResponse(fleet.gateways())

    @requires(Role.VIEWER)
    async def gateway_get(request: Request, user: User) -> Response:
        return JSONResponse(fleet.details(request.path_params["gateway"]))

    @requires(Role.VIEWER)
    async def metrics_history(request: Request, user: User) -> Response:
        """A gateway's node counters as it pushed them (a point per 30 s, 30 days): ?since=&until= (Unix seconds)."""
        gateway_id = request.path_params["gateway"]
        fleet.details(gateway_id)  # 404 when unknown
        bounds = {}
        for name, default in (("since", 0.0), ("until", float("inf"))):
            raw = request.query_params.get(name)
            try:
                bounds[name] = float(raw) if raw is not None else default
            except ValueError:
                raise ApiError(400, "bad_request", f"{name} is Unix seconds, e.g. ?since=1765100000") from None
        limit = whole_number(request.query_params.get("limit"), "limit", "?limit=1000") or 1000
        points = fleet.metrics.history(gateway_id, bounds["since"], bounds["until"], min(max(limit, 1), 10_000))
        return JSONResponse({"gateway": gateway_id, "points": points, "rates": fleet.metrics.rates(gateway_id)})

    @requires(Role.ADMIN)
    async def approve(request: Request, user: User) -> Response:
        return JSONResponse(fleet.decide(request.path_params["gateway"], Approval.APPROVED, user.username))

    @requires(Role.ADMIN)
    async def reject(request: Request, user: User) -> Response:
        return JSONResponse(fleet.decide(request.path_params["gateway"], Approval.REJECTED, user.username))

    @requires(Role.ADMIN)
    async def reject_many(request: Request, user: User) -> Response:
        """Bulk reject: `{"gateways": ["gw_..."]}` or `{"all_pending": true}`."""
        example = '{"gateways": ["gw_1a2b3c4d5e6f"]} or {"all_pending": true}'
        body = await json_object(request, example)
        chosen, everything = body.get("gateways"), body.get("all_pending") is True
        valid_list = isinstance(chosen, list) and 0 < len(chosen) <= 10_000 and all(isinstance(g, str) for g in chosen)
        if everything == valid_list:
            raise ApiError(422, "invalid", f"name the pending gateways to reject, or all of them: {example}")
        rejected = fleet.reject_pending(None if everything else chosen, user.username)
        for gateway_id in rejected:
            store.audit(user.username, "gateway.reject", audit_digest(body), gateway_id, "ok", "bulk")
        return JSONResponse({"rejected": rejected})

    @requires(Role.ADMIN)
    async def replace(request: Request, user: User) -> Response:
        """The gateway in the path (a new identity) takes the place of `{"replaces": "gw_old"}`."""
        body = await json_object(request, '{"replaces": "gw_1a2b3c4d5e6f"}')
        old = body.get("replaces")
        if not isinstance(old, str) or not old:
            raise ApiError(422, "invalid", '`replaces` is the id of the gateway to replace: {"replaces": "gw_..."}')
        new = request.path_params["gateway"]
        arguments = {"gateway": new, "replaces": old}
        try:
            replaced = fleet.replace(new, old, user.username)
        except ApiError as refused:
            store.audit(user.username, "gateway.replace", audit_digest(arguments), new, "refused", refused.message)
            raise
        store.audit(user.username, "gateway.replace", audit_digest(arguments), new, "ok", f"replaces {old}")
        return JSONResponse(replaced)

    @requires(Role.ADMIN)
    async def delete(request: Request, user: User) -> Response:
        """Forget a gateway; an approved one with flows to run only with ?force=true."""
        gateway_id, force = request.path_params["gateway"], request.query_params.get("force", "false")
        if force not in ("true", "false"):
            raise ApiError(400, "bad_request", f"force is true or false, not {force[:20]!r}")
        arguments = {"gateway": gateway_id, "force": force == "true"}
        try:
            fleet.delete(gateway_id, user.username, force == "true")
        except ApiError as refused:
            store.audit(user.username, "gateway.delete", audit_digest(arguments), gateway_id, "refused",
                        refused.message)  # fmt: skip
            raise
        store.audit(user.username, "gateway.delete", audit_digest(arguments), gateway_id, "ok")
        return Response(status_code=204)

    @requires(Role.ADMIN)
    async def labels(request: Request, user: User) -> Response:
        body = await json_object(request, '{"labels": {"site": "north"}}')
        return JSONResponse(
            fleet.set_labels(request.path_params["gateway"], parse_labels(body.get("labels"), "labels"))
        )

    @requires(Role.VIEWER)
    async def assignments_list(request: Request, user: User) -> Response:
        return JSONResponse(fleet.assignments(request.query_params.get("flow")))

    @requires(Role.ENGINEER)
    async def assign(request: Request, user: User) -> Response:
        body = await json_object(request, '{"flow": "line_1", "version": 3, "labels": {"site": "north"}}')
        flow, version = body.get("flow"), body.get("version")
        if not isinstance(flow, str) or not isinstance(version, int) or isinstance(version, bool):
            raise ApiError(422, "invalid", "`flow` (an id) and `version` (a whole number) are required")
        gateway, selector = _target(body)
        return JSONResponse(fleet.assign(flow, version, user.username, gateway, selector), status_code=201)

    @requires(Role.ENGINEER)
    async def unassign(request: Request, user: User) -> Response:
        body = await json_object(request, '{"flow": "line_1", "labels": {"site": "north"}}')
        if not isinstance(body.get("flow"), str):
            raise ApiError(422, "invalid", "`flow` (an id) is required")
        gateway, selector = _target(body)
        fleet.unassign(body["flow"], gateway, selector)
        return Response(status_code=204)

    @requires(Role.ENGINEER)
    async def rollback(request: Request, user: User) -> Response:
        raw = await request.body()
        body = await json_object(request, '{"flow": "line_1"}') if raw else {}
        flow = body.get("flow")
        return JSONResponse(fleet.rollback(request.path_params["gateway"], user.username,
                                           flow if isinstance(flow, str) else None))  # fmt: skip

    @requires(Role.ADMIN)
    async def enrolment_key(request: Request, user: User) -> Response:
        body = await json_object(request, '{"labels": {"site": "north"}, "ttl_s": 3600, "uses": 1}')
        ttl, uses = body.get("ttl_s", 3600), body.get("uses", 1)
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 0 < ttl <= 30 * 86400:
            raise ApiError(422, "invalid", "`ttl_s` is seconds, at most 30 days")
        if not isinstance(uses, int) or isinstance(uses, bool) or not 1 <= uses <= 100_000:
            raise ApiError(422, "invalid", "`uses` is how many gateways the key approves: 1 to 100,000")
        key = fleet.create_enrolment_key(parse_labels(body.get("labels"), "labels"), user.username, float(ttl), uses)
        return JSONResponse({"enrolment_key": key, "uses": uses, "note": "shown once; a gateway started with it is "
                             "pre-approved, for as many gateways as its uses"}, status_code=201)  # fmt: skip

    return [
        Route("/gateways/register", register, methods=["POST"]),
        Route("/gateways/{gateway}/sync", sync, methods=["POST"]),
        Route("/gateways/{gateway}/token", renew, methods=["POST"]),
        WebSocketRoute("/gateways/{gateway}/events", events),
        Route("/gateways", gateways_list),
        Route("/gateways/{gateway}", gateway_get),
        Route("/gateways/{gateway}/metrics", metrics_history),
        Route("/gateways/{gateway}/approve", approve, methods=["POST"]),
        Route("/gateways/{gateway}/reject", reject, methods=["POST"]),
        Route("/gateways/reject", reject_many, methods=["POST"]),
        Route("/gateways/{gateway}/replace", replace, methods=["POST"]),
        Route("/gateways/{gateway}", delete, methods=["DELETE"]),
        Route("/gateways/{gateway}/labels", labels, methods=["PUT"]),
        Route("/gateways/{gateway}/rollback", rollback, methods=["POST"]),
        Route("/assignments", assignments_list),
        Route("/assignments", assign, methods=["POST"]),
        Route("/assignments", unassign, methods=["DELETE"]),
        Route("/enrolment-keys", enrolment_key, methods=["POST"]),
    ]
