"""REST API under /api/v1: node types, flows with versions, import/export, deploy, users and tokens."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from streamforge.engine.compiler import compile_flow
from streamforge.engine.flow import FlowDocument, diff_flows, dump_flow, load_flow, validate_flow
from streamforge.engine.problems import FlowInvalid, Problem
from streamforge.engine.registry import NodeRegistry
from streamforge.engine.secrets import externalize, placeholders, resolve
from streamforge.runtime.control_plane.auth import Role, User, check_password, hash_password, role_guard
from streamforge.runtime.control_plane.live import live_endpoint
from streamforge.runtime.control_plane.store import Store
from streamforge.runtime.errors import EXCEPTION_HANDLERS, ApiError, json_body
from streamforge.runtime.gateway.gateway import DeployFailed, Gateway


def _compile_problems(document: FlowDocument, registry: NodeRegistry) -> list[Problem]:
    """What a deploy would refuse, checked with stand-ins for secrets (no secret is read to validate)."""
    try:
        compile_flow(validate_flow(placeholders(document.model_dump(by_alias=True))), registry)
    except FlowInvalid as invalid:
        return invalid.problems
    return []


def _text(body: Any, field: str, example: str) -> str:
    """A required, non-empty string field of a JSON object body, or 422 saying what to send."""
    value = body.get(field) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        raise ApiError(422, "invalid", f"`{field}` is required: {example}")
    return value


RESPONSE_ONLY = ("saved_at", "saved_by", "problems", "restored_from")  # what GET adds; a PUT may send it back


def _flow_body(version: Any) -> dict[str, Any]:
    return {**version.document, "saved_at": version.saved_at, "saved_by": version.saved_by}


def control_plane_api(
    store: Store, node_types: NodeRegistry, gateway: Gateway | None = None, extra_routes: Iterable[BaseRoute] = ()
) -> Starlette:
    """The control plane's REST API under /api/v1, then `extra_routes` (the editor's static files)."""
    requires = role_guard(store)

    def storable(document: FlowDocument, user: User) -> dict[str, Any]:
        """The document as stored: plaintext in secret fields moved into the secret store first."""
        return externalize(document.model_dump(by_alias=True), node_types,
                           lambda name, value: store.put_secret(name, value, user.username))  # fmt: skip

    @requires(Role.VIEWER)
    async def node_types_list(request: Request, user: User) -> Response:
        return JSONResponse([cls.describe() for cls in node_types])

    @requires(Role.VIEWER)
    async def flows_list(request: Request, user: User) -> Response:
        return JSONResponse(store.list_flows())

    @requires(Role.ENGINEER)
    async def flows_create(request: Request, user: User) -> Response:
        document = validate_flow(await json_body(request))
        saved = store.save_flow(storable(document, user), None, user.username)
        return JSONResponse({**_flow_body(saved), "problems": [p.to_dict() for p in
                             _compile_problems(document, node_types)]}, status_code=201)  # fmt: skip

    @requires(Role.VIEWER)
    async def flow_get(request: Request, user: User) -> Response:
        version = request.query_params.get("version")
        return JSONResponse(_flow_body(store.get_flow(request.path_params["flow"], int(version) if version else None)))

    @requires(Role.ENGINEER)
    async def flow_update(request: Request, user: User) -> Response:
        raw = await json_body(request)
        flow_id = request.path_params["flow"]
        if not isinstance(raw, dict) or raw.get("id") != flow_id:
            raise ApiError(422, "invalid", f"the document's id must be {flow_id!r}")
        document = validate_flow({key: value for key, value in raw.items() if key not in RESPONSE_ONLY})
        saved = store.save_flow(storable(document, user), document.version, user.username)
        return JSONResponse({**_flow_body(saved), "problems": [p.to_dict() for p in
                             _compile_problems(document, node_types)]})  # fmt: skip

    @requires(Role.ENGINEER)
    async def flow_delete(request: Request, user: User) -> Response:
        store.delete_flow(request.path_params["flow"])
        return Response(status_code=204)

    @requires(Role.VIEWER)
    async def flow_versions(request: Request, user: User) -> Response:
        return JSONResponse(store.versions(request.path_params["flow"]))

    @requires(Role.VIEWER)
    async def flow_diff(request: Request, user: User) -> Response:
        flow_id = request.path_params["flow"]
        try:
            old, new = int(request.query_params["from"]), int(request.query_params["to"])
        except (KeyError, ValueError):
            raise ApiError(400, "bad_request", "give two versions: ?from=N&to=M") from None
        before = validate_flow(store.get_flow(flow_id, old).document)
        after = validate_flow(store.get_flow(flow_id, new).document)
        return JSONResponse({"from": old, "to": new, **diff_flows(before, after).to_dict()})

    @requires(Role.ENGINEER)
    async def flow_restore(request: Request, user: User) -> Response:
        flow_id, version = request.path_params["flow"], int(request.path_params["version"])
        old = store.get_flow(flow_id, version)
        current = store.get_flow(flow_id)
        saved = store.save_flow({**old.document, "version": current.version}, current.version, user.username)
        return JSONResponse({**_flow_body(saved), "restored_from": version})

    @requires(Role.ENGINEER)
    async def flows_import(request: Request, user: User) -> Response:
        """All or nothing: the document is checked whole, compile included; a bad import stores nothing."""
        document = load_flow(await request.body())
        problems = _compile_problems(document, node_types)
        if problems:
            raise FlowInvalid(problems)
        existing = next((f for f in store.list_flows() if f["id"] == document.id), None)
        saved = store.save_flow(storable(document, user), existing["version"] if existing else None,
                                user.username)  # fmt: skip
        return JSONResponse(_flow_body(saved), status_code=201)

    @requires(Role.VIEWER)
    async def flow_export(request: Request, user: User) -> Response:
        version = store.get_flow(request.path_params["flow"])
        text = dump_flow(validate_flow(version.document))
        return Response(text, media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{version.flow_id}.json"'})  # fmt: skip

    @requires(Role.ENGINEER)
    async def flow_deploy(request: Request, user: User) -> Response:
        if gateway is None:
            raise ApiError(503, "no_gateway", "no gateway is attached to this control plane")
        flow_id = request.path_params["flow"]
        body = await request.body()
        mode = (await json_body(request)).get("mode", "modified") if body else "modified"
        if mode not in ("modified", "full"):
            raise ApiError(422, "invalid", "mode must be `modified` or `full`")
        version = store.get_flow(flow_id)
        document = validate_flow(resolve(version.document, store.secret))
        plan = compile_flow(document, node_types)  # FlowInvalid: nothing running is touched
        try:
            report = await gateway.deploy(plan, modified_only=mode == "modified")
        except DeployFailed as failed:
            raise ApiError(409, "deploy_rolled_back", str(failed)) from None
        store.mark_deployed(flow_id, version.version)
        return JSONResponse({"flow": flow_id, "version": version.version, "started": report.started,
                             "stopped": report.stopped, "unchanged": report.unchanged})  # fmt: skip

    @requires(Role.OPERATOR)
    async def node_command(request: Request, user: User) -> Response:
        """Operator actions on a running node, e.g. acknowledge an alarm; the acting user is recorded."""
        if gateway is None:
            raise ApiError(503, "no_gateway", "no gateway is attached to this control plane")
        body = await json_body(request)
        args = {**body, "user": user.username} if isinstance(body, dict) else body
        flow, node, name = (request.path_params[k] for k in ("flow", "node", "command"))
        return JSONResponse(await gateway.command(flow, node, name, args))

    @requires(Role.VIEWER)
    async def flow_status(request: Request, user: User) -> Response:
        flow_id = request.path_params["flow"]
        nodes = [n for n in gateway.node_health() if n["flow"] == flow_id] if gateway else []
        deployed = gateway.plans.get(flow_id) if gateway else None
        return JSONResponse({"flow": flow_id, "deployed_version": deployed.version if deployed else None,
                             "nodes": nodes})  # fmt: skip

    async def login(request: Request) -> Response:
        body = await json_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "bad_request", 'send {"username": ..., "password": ...}')
        user = check_password(store, str(body.get("username", "")), str(body.get("password", "")))
        token = store.issue_token(user.username, "editor session", kind="session")
        return JSONResponse({"token": token, "username": user.username, "role": user.role.name.lower()})

    @requires(Role.VIEWER)
    async def tokens_create(request: Request, user: User) -> Response:
        name = _text(await json_body(request), "name", 'name the token, e.g. {"name": "ci-script"}')
        return JSONResponse({"token": store.issue_token(user.username, name), "name": name,
                             "note": "shown once; store it now"}, status_code=201)  # fmt: skip

    @requires(Role.ADMIN)
    async def users_create(request: Request, user: User) -> Response:
        body = await json_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "bad_request", 'send {"username", "password", "role"}')
        role = Role.parse(str(body.get("role", "")))
        store.create_user(str(body.get("username", "")), hash_password(str(body.get("password", ""))),
                          role.name.lower())  # fmt: skip
        return JSONResponse({"username": body["username"], "role": role.name.lower()}, status_code=201)

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

    routes: list[BaseRoute] = [
        WebSocketRoute("/live", live_endpoint(store, gateway)),
        Route("/secrets", secrets_list),
        Route("/secrets/{name}", secret_put, methods=["PUT"]),
        Route("/secrets/{name}", secret_delete, methods=["DELETE"]),
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
        Route("/flows/{flow}/status", flow_status),
        Route("/flows/{flow}/nodes/{node}/commands/{command}", node_command, methods=["POST"]),
    ]
    return Starlette(routes=[Mount("/api/v1", routes=routes), *extra_routes], exception_handlers=EXCEPTION_HANDLERS)
