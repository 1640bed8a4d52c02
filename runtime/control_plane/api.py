"""REST API under /api/v1: node types, flows with versions, import/export, deploy, users and tokens."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from streamforge.engine.flow import check_bytes, dump_flow, validate_flow
from streamforge.runtime.control_plane.auth import Role, User, check_password, hash_password, role_guard
from streamforge.runtime.control_plane.fleet import parse_labels
from streamforge.runtime.control_plane.live import live_endpoint
from streamforge.runtime.control_plane.service import FlowService, off_loop
from streamforge.runtime.errors import EXCEPTION_HANDLERS, ApiError, json_body, json_object, whole_number
from streamforge.runtime.limits import LoginThrottle


def _text(body: Any, field: str, example: str) -> str:
    """A required, non-empty string field of a JSON object body, or 422 saying what to send."""
    value = body.get(field) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        raise ApiError(422, "invalid", f"`{field}` is required: {example}")
    return value


RESPONSE_ONLY = ("saved_at", "saved_by", "problems", "restored_from")  # what GET adds; a PUT may send it back


async def flow_body(request: Request) -> Any:
    """A flow document sent as the body, decoded: over MAX_DOCUMENT_BYTES (as an import) refused by its length
    first, since decoding holds the event loop (~30 ms of CPU for 2 MiB; ~150 ms for the 8 MiB other bodies may
    be)."""
    check_bytes(await request.body())
    return await json_body(request)


def _flow_body(version: Any) -> dict[str, Any]:
    return {**version.document, "saved_at": version.saved_at, "saved_by": version.saved_by}


def control_plane_api(
    flows: FlowService,
    extra_routes: Iterable[BaseRoute] = (),
    api_routes: Iterable[BaseRoute] = (),
) -> Starlette:
    """The control plane's REST API under /api/v1 (plus `api_routes`: the fleet's), then `extra_routes` (the
    editor's static files and /mcp)."""
    store, node_types = flows.store, flows.node_types
    requires = role_guard(store)
    throttle = LoginThrottle()

    @requires(Role.VIEWER)
    async def node_types_list(request: Request, user: User) -> Response:
        return JSONResponse([cls.describe() for cls in node_types])

    @requires(Role.VIEWER)
    async def flows_list(request: Request, user: User) -> Response:
        return JSONResponse(store.list_flows())

    @requires(Role.ENGINEER)
    async def flows_create(request: Request, user: User) -> Response:
        raw = await flow_body(request)
        document = await off_loop(lambda: validate_flow(raw))
        saved = flows.save(document, None, user.username)
        problems = [p.to_dict() for p in await flows.problems(document)]
        return JSONResponse({**_flow_body(saved), "problems": problems}, status_code=201)

    @requires(Role.VIEWER)
    async def flow_get(request: Request, user: User) -> Response:
        version = whole_number(request.query_params.get("version"), "version", "?version=3")
        return JSONResponse(_flow_body(store.get_flow(request.path_params["flow"], version)))

    @requires(Role.ENGINEER)
    async def flow_update(request: Request, user: User) -> Response:
        raw = await flow_body(request)
        flow_id = request.path_params["flow"]
        if not isinstance(raw, dict) or raw.get("id") != flow_id:
            raise ApiError(422, "invalid", f"the document's id must be {flow_id!r}")
        sent = {key: value for key, value in raw.items() if key not in RESPONSE_ONLY}
        document = await off_loop(lambda: validate_flow(sent))
        saved = flows.save(document, document.version, user.username)
        return JSONResponse({**_flow_body(saved), "problems": [p.to_dict() for p in await flows.problems(document)]})

    @requires(Role.ENGINEER)
    async def flow_delete(request: Request, user: User) -> Response:
        """Unassigned everywhere first: no gateway keeps running a flow the editor no longer lists."""
        flows.delete(request.path_params["flow"])
        return Response(status_code=204)

    @requires(Role.ENGINEER)
    async def flow_undeploy(request: Request, user: User) -> Response:
        return JSONResponse(flows.undeploy(request.path_params["flow"]))

    @requires(Role.VIEWER)
    async def flow_versions(request: Request, user: User) -> Response:
        return JSONResponse(store.versions(request.path_params["flow"]))

    @requires(Role.VIEWER)
    async def flow_diff(request: Request, user: User) -> Response:
        flow_id = request.path_params["flow"]
        old = whole_number(request.query_params.get("from"), "from", "?from=1&to=2")
        new = whole_number(request.query_params.get("to"), "to", "?from=1&to=2")
        if old is None or new is None:
            raise ApiError(400, "bad_request", "give two versions: ?from=N&to=M")
        return JSONResponse({"from": old, "to": new, **(await flows.diff(flow_id, old, new)).to_dict()})

    @requires(Role.ENGINEER)
    async def flow_restore(request: Request, user: User) -> Response:
        flow_id, version = request.path_params["flow"], request.path_params["version"]  # {version:int}
        saved = flows.restore(flow_id, version, user.username)
        return JSONResponse({**_flow_body(saved), "restored_from": version})

    @requires(Role.ENGINEER)
    async def flows_import(request: Request, user: User) -> Response:
        saved = await flows.import_flow(await request.body(), user.username)
        return JSONResponse(_flow_body(saved), status_code=201)

    @requires(Role.VIEWER)
    async def flow_export(request: Request, user: User) -> Response:
        version = store.get_flow(request.path_params["flow"])
        text = await off_loop(lambda: dump_flow(validate_flow(version.document)))
        return Response(text, media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{version.flow_id}.json"'})  # fmt: skip

    @requires(Role.ENGINEER)
    async def flow_deploy(request: Request, user: User) -> Response:
        example = '{"mode": "modified"}, with a target the first time: {"gateway": "gw_..."} or {"labels": {...}}'
        body = await json_object(request, example) if await request.body() else {}
        gateway = body.get("gateway")
        if gateway is not None and not isinstance(gateway, str):
            raise ApiError(422, "invalid", "`gateway` is a gateway id such as gw_1a2b3c4d5e6f")
        labels = parse_labels(body["labels"], "labels") if body.get("labels") else None
        return JSONResponse(await flows.deploy(request.path_params["flow"], str(body.get("mode", "modified")),
                                               user.username, gateway, labels))  # fmt: skip

    @requires(Role.OPERATOR)
    async def node_command(request: Request, user: User) -> Response:
        """Operator actions on a running node, e.g. acknowledge an alarm; the acting user is recorded."""
        body = await json_body(request)
        args = {**body, "user": user.username} if isinstance(body, dict) else body
        flow, node, name = (request.path_params[k] for k in ("flow", "node", "command"))
        gateway = flows.fleet.pick(request.query_params.get("gateway"), flow)
        request_ = {"flow": flow, "node": node, "name": name, "args": args}
        return JSONResponse(await flows.fleet.command(gateway, request_))

    @requires(Role.VIEWER)
    async def flow_changes(request: Request, user: User) -> Response:
        """What deploying the document in the body would restart (the editor's modified marks and count)."""
        check_bytes(await request.body())  # as flow_body
        raw = await json_object(request, "the flow document being edited")
        document = {key: value for key, value in raw.items() if key not in RESPONSE_ONLY}  # as a GET sent it
        flow_id, gateway = request.path_params["flow"], request.query_params.get("gateway")
        return JSONResponse(await flows.changes(flow_id, document, gateway))

    @requires(Role.VIEWER)
    async def flow_status(request: Request, user: User) -> Response:
        return JSONResponse(flows.status(request.path_params["flow"], request.query_params.get("gateway")))

    async def login(request: Request) -> Response:
        body = await json_object(request, '{"username": ..., "password": ...}')
        username, address = str(body.get("username", "")), request.client.host if request.client else "?"
        throttle.check(username, address)
        try:
            user = check_password(store, username, str(body.get("password", "")))
        except ApiError:
            throttle.failed(username, address)
            raise
        throttle.succeeded(username)
        token = store.issue_token(user.username, "editor session", kind="session")
        return JSONResponse({"token": token, "username": user.username, "role": user.role.name.lower()})

    @requires(Role.VIEWER)
    async def tokens_create(request: Request, user: User) -> Response:
        name = _text(await json_body(request), "name", 'name the token, e.g. {"name": "ci-script"}')
        return JSONResponse({"token": store.issue_token(user.username, name), "name": name,
                             "note": "shown once; store it now"}, status_code=201)  # fmt: skip

    @requires(Role.ADMIN)
    async def users_create(request: Request, user: User) -> Response:
        body = await json_object(request, '{"username": ..., "password": ..., "role": "operator"}')
        role = Role.parse(str(body.get("role", "")))
        store.create_user(str(body.get("username", "")), hash_password(str(body.get("password", ""))),
                          role.name.lower())  # fmt: skip
        return JSONResponse({"username": str(body.get("username", "")), "role": role.name.lower()}, status_code=201)

    @requires(Role.VIEWER)
    async def flow_draft(request: Request, user: User) -> Response:
        """An agent's draft: its diff against what runs and the change_digest a human approves."""
        return JSONResponse(await flows.suggestion(request.path_params["flow"]))

    @requires(Role.ENGINEER)
    async def flow_approve(request: Request, user: User) -> Response:
        body = await json_body(request)
        action = _text(body, "action", '"deploy", "apply", "assign" or "rollback"')
        flow_id = request.path_params["flow"]
        if action in flows.FLEET_ACTIONS:  # approved by the exact arguments the human sends
            arguments = {key: body.get(key) for key in ("version", "gateway", "labels")}
            digest = body.get("change_digest") if isinstance(body.get("change_digest"), str) else None
            return JSONResponse(flows.approve_fleet_action(flow_id, action, arguments, user.username, digest),
                                status_code=201)  # fmt: skip
        digest = _text(body, "change_digest", "the change_digest from GET /flows/{flow}/draft")
        target = None
        if action == "deploy" and (body.get("gateway") or body.get("labels")):
            gateway = body.get("gateway")
            if gateway is not None and not isinstance(gateway, str):
                raise ApiError(422, "invalid", "`gateway` is a gateway id such as gw_1a2b3c4d5e6f")
            target = {"gateway": gateway} if gateway else {"labels": parse_labels(body["labels"], "labels")}
        return JSONResponse(await flows.approve(flow_id, action, digest, user.username, target), status_code=201)

    @requires(Role.ENGINEER)
    async def audit_trail(request: Request, user: User) -> Response:
        """Newest first; `?tool=` (an MCP tool or a REST route such as `POST /api/v1/flows/{flow}/deploy`),
        `?identity=`, `?channel=rest|mcp`, `?before=<id>` to page back."""
        query = request.query_params
        limit = whole_number(query.get("limit"), "limit", "?limit=200") or 200
        before = whole_number(query.get("before"), "before", "?before=1234 (an id from the previous page)")
        return JSONResponse(store.audit_trail(min(max(limit, 1), 5000), query.get("tool"), query.get("identity"),
                                              query.get("channel"), before))  # fmt: skip

    @requires(Role.VIEWER)
    async def secrets_list(request: Request, user: User) -> Response:
        return JSONResponse(store.secret_names())  # names only: no endpoint ever returns a value

    @requires(Role.ENGINEER)
    async def secret_put(request: Request, user: User) -> Response:
        value = _text(await json_body(request), "value", 'send {"value": "..."}')
        store.put_secret(request.path_params["name"], value, user.username)
        return Response(status_code=204)

    @requires(Role.ENGINEER)
    async def secret_delete(request: Request, user: User) -> Response:
        store.delete_secret(request.path_params["name"])
        return Response(status_code=204)

    @requires(Role.ADMIN)
    async def secret_grant(request: Request, user: User) -> Response:
        """A shared credential (one historian for many flows): only an Admin lets another flow read it."""
        store.grant_secret(request.path_params["name"], request.path_params["flow"], user.username)
        return Response(status_code=204)

    @requires(Role.ADMIN)
    async def secret_grant_revoke(request: Request, user: User) -> Response:
        store.revoke_secret_grant(request.path_params["name"], request.path_params["flow"])
        return Response(status_code=204)

    routes: list[BaseRoute] = [
        WebSocketRoute("/live", live_endpoint(flows)),
        Route("/secrets", secrets_list),
        Route("/secrets/{name}", secret_put, methods=["PUT"]),
        Route("/secrets/{name}", secret_delete, methods=["DELETE"]),
        Route("/secrets/{name}/grants/{flow}", secret_grant, methods=["PUT"]),
        Route("/secrets/{name}/grants/{flow}", secret_grant_revoke, methods=["DELETE"]),
        Route("/auth/login", login, methods=["POST"]),
        Route("/tokens", tokens_create, methods=["POST"]),
        Route("/users", users_create, methods=["POST"]),
        Route("/node-types", node_types_list),
        Route("/flows", flows_list),
        Route("/flows", flows_create, methods=["POST"]),
        Route("/flows/import", flows_import, methods=["POST"]),
        Route("/flows/{flow}", flow_get),
        Route("/flows/{flow}", flow_update, methods=["PUT"]),
        Route("/flows/{flow}", flow_delete, methods=["DELETE"]),
        Route("/flows/{flow}/versions", flow_versions),
        Route("/flows/{flow}/diff", flow_diff),
        Route("/flows/{flow}/versions/{version:int}/restore", flow_restore, methods=["POST"]),
        Route("/flows/{flow}/export", flow_export),
        Route("/flows/{flow}/deploy", flow_deploy, methods=["POST"]),
        Route("/flows/{flow}/undeploy", flow_undeploy, methods=["POST"]),
        Route("/flows/{flow}/status", flow_status),
        Route("/flows/{flow}/changes", flow_changes, methods=["POST"]),
        Route("/flows/{flow}/draft", flow_draft),
        Route("/flows/{flow}/approvals", flow_approve, methods=["POST"]),
        Route("/audit", audit_trail),
        Route("/flows/{flow}/nodes/{node}/commands/{command}", node_command, methods=["POST"]),
        *api_routes,
    ]
    return Starlette(routes=[Mount("/api/v1", routes=routes), *extra_routes], exception_handlers=EXCEPTION_HANDLERS)
