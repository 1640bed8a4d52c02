"""REST API under /api/v1: node types, flows with versions, import/export, deploy, sessions, users and tokens."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from streamforge.engine.flow import check_bytes, dump_flow, validate_flow
from streamforge.runtime.control_plane.auth import (
    NAMED_TOKENS_PER_USER,
    SCOPES,
    SESSION_LIFETIME_S,
    SESSIONS_PER_USER,
    TOKEN_DAYS_DEFAULT,
    TOKEN_DAYS_MAX,
    USERNAME,
    Role,
    User,
    check_password,
    hash_password,
    role_guard,
)
from streamforge.runtime.control_plane.fleet import parse_labels
from streamforge.runtime.control_plane.live import live_endpoint
from streamforge.runtime.control_plane.operations import audit_digest
from streamforge.runtime.control_plane.service import FlowService, off_loop
from streamforge.runtime.errors import EXCEPTION_HANDLERS, ApiError, json_body, json_object, whole_number
from streamforge.runtime.limits import LoginThrottle


def client_address(request: Request) -> str:
    """The peer's address; behind a proxy given with --trusted-proxy, the X-Forwarded-For client it names."""
    return request.client.host if request.client else "?"


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
    throttle: LoginThrottle | None = None,
) -> Starlette:
    """The control plane's REST API under /api/v1 (plus `api_routes`: the fleet's), then `extra_routes` (the
    editor's static files and /mcp)."""
    store, node_types = flows.store, flows.node_types
    requires = role_guard(store)
    throttle = throttle or LoginThrottle()

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

    def session_answer(user: User, token: str) -> Response:
        return JSONResponse({"token": token, "username": user.username, "role": user.role.name.lower(),
                             "expires_in": int(SESSION_LIFETIME_S)})  # fmt: skip

    def audited(user: User, action: str, target: str | None, arguments: dict[str, Any]) -> None:
        store.audit(user.username, action, audit_digest(arguments), target, "ok")

    async def login(request: Request) -> Response:
        body = await json_object(request, '{"username": ..., "password": ...}')
        username, address = str(body.get("username", "")), client_address(request)
        throttle.check(username, address)
        try:
            user = check_password(store, username, str(body.get("password", "")))
        except ApiError:
            throttle.failed(username, address)
            raise
        throttle.succeeded(username, address)
        token = store.issue_token(user.username, "editor session", "session", SESSION_LIFETIME_S, SESSIONS_PER_USER)
        audited(user, "session.login", user.username, {"address": address})
        return session_answer(user, token)

    @requires(Role.VIEWER)
    async def refresh(request: Request, user: User) -> Response:
        """A fresh session in place of the caller's (which stops working): the editor calls it before expiry."""
        if user.scope != "session" or user.token_id is None:
            raise ApiError(400, "bad_request", f"only a session (from POST /auth/login) is refreshed; this is an "
                           f"`{user.scope}` token: create a new one with POST /tokens instead")  # fmt: skip
        token = store.rotate_session(user.token_id, user.username, SESSION_LIFETIME_S)
        audited(user, "session.refresh", user.username, {"token_id": user.token_id})
        return session_answer(user, token)

    @requires(Role.VIEWER)
    async def logout(request: Request, user: User) -> Response:
        """Revokes the token this request came with (a session, or a named token)."""
        if user.token_id is not None:
            store.revoke_token(user.token_id)
        audited(user, "session.logout", user.username, {"token_id": user.token_id})
        return Response(status_code=204)

    @requires(Role.VIEWER)
    async def tokens_create(request: Request, user: User) -> Response:
        example = '{"name": "ci-script", "scope": "api" or "mcp", "days": 90}'
        body = await json_object(request, example)
        name = _text(body, "name", f"name the token, e.g. {example}")
        if len(name) > 100:
            raise ApiError(422, "invalid", f"`name` is at most 100 characters, not {len(name)}")
        scope = body.get("scope", "api")
        if scope not in SCOPES:
            raise ApiError(422, "invalid", f"`scope` must be one of {', '.join(SCOPES)} (mcp: for an agent, works "
                           f"only on /mcp), not {scope!r}")  # fmt: skip
        days = body.get("days", TOKEN_DAYS_DEFAULT)
        if isinstance(days, bool) or not isinstance(days, int | float) or not 0 < days <= TOKEN_DAYS_MAX:
            raise ApiError(422, "invalid", f"`days` is the token's lifetime: a number above 0 and at most "
                           f"{TOKEN_DAYS_MAX} (default {TOKEN_DAYS_DEFAULT}), not {days!r}")  # fmt: skip
        token = store.issue_token(user.username, name, scope, days * 86400.0, NAMED_TOKENS_PER_USER)
        record = store.token_record(token)
        created = next(t for t in store.tokens(user.username) if record is not None and t["id"] == record["id"])
        audited(user, "token.create", created["id"], {"name": name, "scope": scope, "days": days})
        return JSONResponse({**created, "token": token, "note": "shown once; store it now"}, status_code=201)

    @requires(Role.VIEWER)
    async def tokens_list(request: Request, user: User) -> Response:
        """The caller's live tokens; an Admin sees everyone's. Never the token itself."""
        return JSONResponse(store.tokens(None if user.role is Role.ADMIN else user.username))

    @requires(Role.VIEWER)
    async def token_revoke(request: Request, user: User) -> Response:
        token_id = request.path_params["token_id"]
        owner = store.token_owner(token_id)
        if owner is None or (owner != user.username and user.role is not Role.ADMIN):
            raise ApiError(404, "not_found", f"you have no token {token_id!r} (GET /api/v1/tokens lists yours)")
        store.revoke_token(token_id)
        audited(user, "token.revoke", token_id, {"owner": owner})
        return Response(status_code=204)

    @requires(Role.VIEWER)
    async def password_change(request: Request, user: User) -> Response:
        """Needs the current password; every other session and token of the user is revoked."""
        body = await json_object(request, '{"current_password": ..., "new_password": ...}')
        current = _text(body, "current_password", '{"current_password": ..., "new_password": ...}')
        address = client_address(request)
        throttle.check(user.username, address)  # a stolen session must not become a password oracle
        try:
            check_password(store, user.username, current)
        except ApiError:
            throttle.failed(user.username, address)
            raise ApiError(403, "wrong_password", "`current_password` is wrong; nothing changed") from None
        password_hash = hash_password(_text(body, "new_password", "at least 12 characters"))
        revoked = store.set_password(user.username, password_hash, user.token_id)
        audited(user, "user.password", user.username, {"revoked": revoked})
        return JSONResponse({"username": user.username, "revoked_tokens": revoked})

    @requires(Role.ADMIN)
    async def users_list(request: Request, user: User) -> Response:
        return JSONResponse(store.users())

    @requires(Role.ADMIN)
    async def users_create(request: Request, user: User) -> Response:
        body = await json_object(request, '{"username": ..., "password": ..., "role": "operator"}')
        username = _text(body, "username", 'e.g. {"username": "maria", "password": ..., "role": "operator"}')
        if not USERNAME.fullmatch(username):
            raise ApiError(422, "invalid", f"username {username!r}: 1-64 letters, digits, . _ @ -")
        role = Role.parse(str(body.get("role", "")))
        store.create_user(username, hash_password(str(body.get("password", ""))), role.name.lower())
        audited(user, "user.create", username, {"role": role.name.lower()})
        return JSONResponse({"username": username, "role": role.name.lower()}, status_code=201)

    @requires(Role.ADMIN)
    async def user_update(request: Request, user: User) -> Response:
        """`{"role": ...}` and/or `{"disabled": true|false}`; disabling revokes the user's tokens at once."""
        body = await json_object(request, '{"role": "engineer"} or {"disabled": true}')
        role = Role.parse(str(body["role"])).name.lower() if "role" in body else None
        disabled = body.get("disabled")
        if disabled is not None and not isinstance(disabled, bool):
            raise ApiError(422, "invalid", f"`disabled` is true or false, not {disabled!r}")
        if role is None and disabled is None:
            raise ApiError(422, "invalid", 'send {"role": "engineer"} and/or {"disabled": true}')
        username = request.path_params["username"]
        changed = store.update_user(username, role, disabled)
        audited(user, "user.update", username, {"role": role, "disabled": disabled})
        return JSONResponse(changed)

    @requires(Role.ADMIN)
    async def user_delete(request: Request, user: User) -> Response:
        username = request.path_params["username"]
        store.delete_user(username)
        audited(user, "user.delete", username, {})
        return Response(status_code=204)

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
        Route("/auth/refresh", refresh, methods=["POST"]),
        Route("/auth/logout", logout, methods=["POST"]),
        Route("/tokens", tokens_list),
        Route("/tokens", tokens_create, methods=["POST"]),
        Route("/tokens/{token_id}", token_revoke, methods=["DELETE"]),
        Route("/users", users_list),
        Route("/users", users_create, methods=["POST"]),
        Route("/users/me/password", password_change, methods=["POST"]),
        Route("/users/{username}", user_update, methods=["PATCH"]),
        Route("/users/{username}", user_delete, methods=["DELETE"]),
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
